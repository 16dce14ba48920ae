"""The gated segmentation head: per-class masks at 1/``mask_stride`` plus a per-class presence score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from steel_edge.heads.base import Head, Outputs, Raw
from steel_edge.metrics import SegmentationScores
from steel_edge.postprocess import NUM_CLASSES, PostprocessParams, TileResult, masks_only, postprocess

if TYPE_CHECKING:
    from steel_edge.contract import ModelContract

# A cascade seg model's second graph input: per-class presence values under which a tile's mask decoder is
# skipped (PostprocessParams.skip_below, fed by the edge; zeros run the decoder on every tile).
SKIP_INPUT = "skip_below"


class SegHead(Head):
    kind: ClassVar[str] = "seg"
    outputs: ClassVar[tuple[str, ...]] = ("masks", "presence")
    metric: ClassVar[str] = "kaggle_dice"

    def check_contract(self, contract: ModelContract) -> None:
        self.check_outputs([o.name for o in contract.outputs])
        if len(contract.class_ids) != NUM_CLASSES:
            raise ValueError(f"a seg model has {NUM_CLASSES} classes, got {len(contract.class_ids)}")
        if contract.mask_stride is None or contract.postprocess is None:
            raise ValueError("a seg model needs mask_stride and postprocess")
        if contract.form == "cascade" and (contract.postprocess.skip_below is None
                                           or contract.postprocess.gate != "hard"):
            raise ValueError("a cascade seg model needs a hard gate and postprocess.skip_below")
        if contract.input.height % contract.mask_stride or contract.input.width % contract.mask_stride:
            raise ValueError(f"mask_stride {contract.mask_stride} does not divide the input "
                             f"{contract.input.height}x{contract.input.width}")

    def extra_inputs(self, contract: ModelContract) -> dict[str, list[int]]:
        """A cascade takes the skip rule's values (docs/design.md, "Cascade")."""
        return {SKIP_INPUT: [NUM_CLASSES]} if contract.form == "cascade" else {}

    def feeds(self, contract: ModelContract, params: PostprocessParams | None,
              decode_all: bool) -> dict[str, np.ndarray]:
        """A cascade's skip values: those of ``params`` (a config override) or the contract's; zeros (the decoder
        on every tile) with ``decode_all`` or a rule without them. Masks of skipped tiles come back as zeros,
        which the skip rule never reads."""
        if contract.form != "cascade":
            return {}
        skip = None if decode_all else (params or contract.postprocess or PostprocessParams()).skip_below
        return {SKIP_INPUT: np.zeros(NUM_CLASSES, np.float32) if skip is None else graph_skip_values(skip)}

    def output_shapes(self, contract: ModelContract) -> list[tuple[int, ...]]:
        assert contract.mask_size is not None
        n = len(contract.class_ids)
        return [(n, *contract.mask_size), (n,)]

    def result(self, raw: Raw, contract: ModelContract, params: PostprocessParams | None,
               frame_shape: tuple[int, ...], *, with_rle: bool = False, with_masks: bool = False) -> TileResult:
        probs, presence = raw
        params = params or contract.postprocess
        assert params is not None  # a seg contract always has it (validated)
        return postprocess(probs, presence, params, (contract.input.height, contract.input.width),
                           with_rle=with_rle, with_masks=with_masks)

    def final_masks(self, out: Outputs, contract: ModelContract) -> list[np.ndarray]:
        """(4, H, W) masks after the contract's post-processing, one per image."""
        assert contract.postprocess is not None
        size = (contract.input.height, contract.input.width)
        return [masks_only(out["masks"][n], out["presence"][n], contract.postprocess, size)
                for n in range(len(out["masks"]))]

    def agreement(self, a: Outputs, b: Outputs, contract: ModelContract) -> float:
        return mask_dice(self.final_masks(a, contract), self.final_masks(b, contract))

    def truth_score(self, out: Outputs, truth: Sequence[np.ndarray | int], contract: ModelContract) -> float:
        return mask_dice(self.final_masks(out, contract), [np.asarray(t) for t in truth])


def mask_dice(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Kaggle Dice of masks ``a`` against masks ``b`` (1.0 where both are empty)."""
    scores = SegmentationScores()
    for pred, true in zip(a, b, strict=True):
        scores.update(pred, true)
    return float(scores.per_image().mean()) if scores.images else float("nan")


def graph_skip_values(skip_below: Sequence[float]) -> np.ndarray:
    """``skip_below`` as the float32 a cascade graph compares presence with, each value rounded down where
    float32 would round it up: a tile the graph skips is then always one the post-processing's skip rule (which
    compares Python floats) skips too."""
    values = np.asarray(skip_below, np.float32)
    over = values.astype(np.float64) > np.asarray(skip_below, np.float64)
    return np.where(over, np.nextafter(values, np.float32(0)), values).astype(np.float32)
