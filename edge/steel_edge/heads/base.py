"""What every head offers (``steel_edge.heads``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from steel_edge.contract import ModelContract
    from steel_edge.postprocess import PostprocessParams, TileResult

Raw = tuple[np.ndarray, ...]  # one frame's outputs, in contract order, without the batch axis
Outputs = dict[str, np.ndarray]  # a batch's outputs by contract output name


class Head(ABC):
    kind: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]  # output names, in order
    metric: ClassVar[str]  # the quality figure export and evaluation report for this kind

    @abstractmethod
    def check_contract(self, contract: ModelContract) -> None:
        """Raise ``ValueError`` saying what is wrong when the contract's fields do not fit this kind."""

    @abstractmethod
    def output_shapes(self, contract: ModelContract) -> list[tuple[int, ...]]:
        """Per-frame output shapes, in contract order."""

    def extra_inputs(self, contract: ModelContract) -> dict[str, list[int]]:
        """Graph inputs besides the image that a model of this kind and form needs, with their shapes."""
        return {}

    def feeds(self, contract: ModelContract, params: PostprocessParams | None,
              decode_all: bool) -> dict[str, np.ndarray]:
        """Values for ``extra_inputs`` on one run, from the post-processing the caller runs (``params``, default
        the contract's); ``decode_all``: no stage is skipped."""
        return {}

    def split(self, outputs: Sequence[np.ndarray]) -> list[Raw]:
        """A batch's outputs -> one ``Raw`` per frame."""
        return [tuple(o[i] for o in outputs) for i in range(len(outputs[0]))]

    def named(self, outputs: Sequence[np.ndarray]) -> Outputs:
        return dict(zip(self.outputs, outputs, strict=True))

    @abstractmethod
    def result(self, raw: Raw, contract: ModelContract, params: PostprocessParams | None,
               frame_shape: tuple[int, ...], *, with_rle: bool = False, with_masks: bool = False) -> TileResult:
        """One frame's raw outputs -> what the daemon publishes for it."""

    @abstractmethod
    def agreement(self, a: Outputs, b: Outputs, contract: ModelContract) -> float:
        """How far two runs of the same images agree after post-processing (1.0: the same answers)."""

    @abstractmethod
    def truth_score(self, out: Outputs, truth: Sequence[np.ndarray | int], contract: ModelContract) -> float:
        """``metric`` of the outputs against the truth (masks for seg, label indices for cls), same order."""

    def check_outputs(self, names: Sequence[str]) -> None:
        if tuple(names) != self.outputs:
            raise ValueError(f"a {self.kind} model has outputs {list(self.outputs)}, got {list(names)}")
