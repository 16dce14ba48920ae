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
