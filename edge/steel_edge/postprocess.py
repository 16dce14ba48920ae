"""Raw segmentation outputs -> final per-class masks and a list of defects, for one tile.

The one code path shared by training-time tuning and evaluation and by the edge daemon, so a Dice
figure measured in training is the Dice the line gets. Rules, per class, in this order:

1. gate: ``hard`` drops the class when its presence score is under ``presence_threshold`` (the cheap
   classifier removes most false positives on clean tiles); ``soft`` multiplies the probabilities by
   the presence score instead; ``none`` ignores the presence head;
2. pixel threshold on the (gated) probabilities;
3. components smaller than ``min_component`` frame pixels are removed (speckle);
4. the class is dropped when what remains covers less than ``min_area`` frame pixels: one stray pixel
   on a clean (image, class) pair scores Dice 0, so small total areas are not worth the risk.

A model may segment at reduced resolution (masks at 1/s of the frame). The binary mask is then
upsampled by nearest neighbour, so every low-resolution pixel becomes an s x s block: areas and boxes
are exact multiples, and the tuner can reason at low resolution (``steel_train.tune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from steel_edge.data.rle import encode

NUM_CLASSES = 4
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Area = Annotated[int, Field(ge=0)]


class PostprocessParams(BaseModel):
    """Per-class post-processing parameters (class 1..4 in that order); defaults from DESIGN.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: Literal["hard", "soft", "none"] = Field("hard", description="how the presence head gates the masks")
    presence_threshold: tuple[Prob, Prob, Prob, Prob] = Field(
        (0.5, 0.5, 0.5, 0.5), description="hard gate: class kept only if its presence score reaches this"
    )
    pixel_threshold: tuple[Prob, Prob, Prob, Prob] = Field(
        (0.5, 0.5, 0.5, 0.5), description="pixel is defect if its (gated) probability exceeds this"
    )
    min_area: tuple[Area, Area, Area, Area] = Field(
        (600, 600, 900, 2000), description="class dropped if its remaining mask covers fewer frame pixels"
    )
    min_component: tuple[Area, Area, Area, Area] = Field(
        (150, 150, 150, 150), description="connected components smaller than this (frame pixels) are removed"
    )


@dataclass(frozen=True)
class Defect:
    """One connected defect region in frame pixels. ``score`` is the mean probability over the region."""

    class_id: int
    score: float
    bbox: tuple[int, int, int, int]  # x, y, w, h
    area_px: int
    rle: str | None = None  # Kaggle RLE of this region in the frame, when asked for


@dataclass(frozen=True)
class TileResult:
    masks: np.ndarray  # (4, H, W) uint8, final masks in frame pixels
    defects: tuple[Defect, ...]
    presence: tuple[float, ...] | None

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({d.class_id for d in self.defects}))


def _scale(probs_shape: tuple[int, ...], frame_size: tuple[int, int]) -> int:
    h, w = probs_shape[-2:]
    fh, fw = frame_size
    if fh % h or fw % w or fh // h != fw // w:
        raise ValueError(f"probabilities of {h}x{w} do not tile a {fh}x{fw} frame by one integer factor")
    return fh // h


def postprocess(
    probs: np.ndarray,
    presence: np.ndarray | None,
    params: PostprocessParams,
    frame_size: tuple[int, int] = (256, 1600),
    with_rle: bool = False,
) -> TileResult:
    """Apply the rules to one tile: ``probs`` (4, h, w) sigmoid outputs, ``presence`` (4,) or None."""
    if probs.ndim != 3 or probs.shape[0] != NUM_CLASSES:
        raise ValueError(f"expected probabilities of shape (4, h, w), got {probs.shape}")
    s = _scale(probs.shape, frame_size)
    s2 = s * s
    fh, fw = frame_size
    masks = np.zeros((NUM_CLASSES, fh, fw), np.uint8)
    defects: list[Defect] = []
    for c in range(NUM_CLASSES):
        p = probs[c]
        if presence is not None and params.gate != "none":
            if params.gate == "hard" and presence[c] < params.presence_threshold[c]:
                continue
            if params.gate == "soft":
                p = p * presence[c]
        binary = (p > params.pixel_threshold[c]).astype(np.uint8)
        if not binary.any():
            continue
        k, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64) * s2
        keep = np.flatnonzero(areas >= params.min_component[c]) + 1
        if keep.size == 0 or int(areas[keep - 1].sum()) < params.min_area[c]:
            continue
        # Mean probability per component in one pass, instead of one masked mean per component.
        sums = np.bincount(labels.ravel(), weights=p.ravel(), minlength=k)
        kept_lut = np.zeros(k, np.uint8)
        kept_lut[keep] = 1
        low = kept_lut[labels]
        full = low if s == 1 else cv2.resize(low, (fw, fh), interpolation=cv2.INTER_NEAREST)
        masks[c] = full
        for j in keep:
            x, y, w, h, a = (int(v) for v in stats[j])
            rle = None
            if with_rle:
                region_low = (labels == j).astype(np.uint8)
                region = region_low if s == 1 else cv2.resize(region_low, (fw, fh), interpolation=cv2.INTER_NEAREST)
                rle = encode(region)
            defects.append(Defect(c + 1, float(sums[j] / a), (x * s, y * s, w * s, h * s), a * s2, rle))
    pres = None if presence is None else tuple(float(v) for v in presence)
    return TileResult(masks, tuple(defects), pres)


def postprocess_batch(
    probs: np.ndarray,
    presence: np.ndarray | None,
    params: PostprocessParams,
    frame_size: tuple[int, int] = (256, 1600),
    with_rle: bool = False,
) -> list[TileResult]:
    """``postprocess`` over a batch: probs (N, 4, h, w), presence (N, 4) or None."""
    return [postprocess(probs[n], None if presence is None else presence[n], params, frame_size, with_rle)
            for n in range(probs.shape[0])]
