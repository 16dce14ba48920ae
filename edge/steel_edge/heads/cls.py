"""The image classifier head (e.g. NEU's six classes): one probability per class for the whole image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from steel_edge.heads.base import Head, Outputs, Raw
from steel_edge.postprocess import Defect, PostprocessParams, TileResult

if TYPE_CHECKING:
    from steel_edge.contract import ModelContract


class ClsHead(Head):
    kind: ClassVar[str] = "cls"
    outputs: ClassVar[tuple[str, ...]] = ("probs",)
    metric: ClassVar[str] = "accuracy"

    def check_contract(self, contract: ModelContract) -> None:
        self.check_outputs([o.name for o in contract.outputs])
        if contract.mask_stride is not None or contract.postprocess is not None:
            raise ValueError("mask_stride and postprocess belong to seg models only")
        if contract.form != "single":
            raise ValueError("a cls model has the single form only")

    def output_shapes(self, contract: ModelContract) -> list[tuple[int, ...]]:
        return [(len(contract.class_ids),)]

    def result(self, raw: Raw, contract: ModelContract, params: PostprocessParams | None,
               frame_shape: tuple[int, ...], *, with_rle: bool = False, with_masks: bool = False) -> TileResult:
        """The top class as one defect covering the frame, every class probability as ``presence``
        (NEU-style models have no defect-free class)."""
        (probs,) = raw
        h, w = int(frame_shape[0]), int(frame_shape[1])
        top = int(np.argmax(probs))
        defect = Defect(class_id=contract.class_ids[top], score=float(probs[top]), bbox=(0, 0, w, h), area_px=w * h)
        return TileResult(masks=np.zeros((0, h, w), np.uint8), defects=(defect,),
                          presence=tuple(float(p) for p in probs))

    def agreement(self, a: Outputs, b: Outputs, contract: ModelContract) -> float:
        return float(np.mean(np.argmax(a["probs"], axis=1) == np.argmax(b["probs"], axis=1)))

    def truth_score(self, out: Outputs, truth: Sequence[np.ndarray | int], contract: ModelContract) -> float:
        labels = np.asarray([int(t) for t in truth])
        return float(np.mean(np.argmax(out["probs"], axis=1) == labels))
