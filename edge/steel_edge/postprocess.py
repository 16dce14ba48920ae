"""Raw segmentation outputs -> final per-class masks and a list of defects, for one tile.

The one code path shared by training-time tuning and evaluation and by the edge daemon, so a Dice
figure measured in training is the Dice the line gets. First, for the whole tile:

0. skip (``skip_below``, hard gate only): when every class's presence score is under its ``skip_below``
   value the tile is defect-free and no mask is looked at. This is the rule a cascade model (contract
   ``form: cascade``, docs/design.md "Cascade") applies inside its graph to skip the mask decoder, so both
   forms of a model give the same answers. Where ``skip_below`` equals the hard gate's presence threshold
   it changes nothing (rule 1 would drop every class anyway); it differs only for a class whose gate lets
   everything through (threshold 0).

Then, per class, in this order:

1. gate: ``hard`` drops the class when its presence score is under ``presence_threshold``; ``soft``
   multiplies the probabilities by the presence score; ``none`` (or a model without a presence head)
   ignores it. First because it is the cheapest test: on a clean tile, most tiles, it skips all pixel
   work; and the soft gate changes the very probabilities the pixel threshold compares.
2. pixel threshold: a pixel is set when its (gated) probability is strictly above the threshold.
3. components smaller than ``min_component`` frame pixels are removed (speckle).
4. the class is dropped when what remains covers fewer than ``min_area`` frame pixels: one stray pixel
   on a clean (image, class) pair scores Dice 0. After 3 so that speckle never helps a class over its
   minimum area only to be removed from what is reported.

``steel_train.tune`` reproduces exactly these rules at low resolution; change them together.

Resolution: a model may segment at 1/s of the frame, e.g. (4, 128, 800) for a 256x1600 frame. With
integer factors (any s, also different along y and x) components are found at the model's resolution
and scaled: nearest-neighbour upsampling turns each pixel into an s x s block, so 8-connected
components map one to one, areas are exactly s^2 times larger and boxes s times. Measured on 2 cores
(benchmarks/postprocess_speed.py, a tile with two defect classes at 128x800), labelling at the model's
resolution takes 1.0 ms a tile against 2.4 ms for upsampling the binary masks first and labelling at
256x1600, with identical masks. Areas and minimum sizes are always in frame pixels, so one parameter
file fits models of any stride. Non-integer factors fall back to resizing the probabilities to the frame.

Numbers: probabilities are compared in float32 (as ``p > t`` in numpy does for a float32 map), presence
scores as Python floats (float64); the tuner does the same, so boundary cases agree.

Tuning (many threshold combinations over the same predictions): ``find_components`` labels a class's
binary mask once; ``keep_components`` then evaluates rules 3-4 for a whole grid of (min_component,
min_area) values in one broadcast, and ``Components.sums`` sums any per-pixel quantity (true-pixel
counts, probabilities) per component, so the Dice of every grid point is a few vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from steel_edge.data.rle import HEIGHT, WIDTH, encode

NUM_CLASSES = 4
FRAME_SIZE = (HEIGHT, WIDTH)
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Area = Annotated[int, Field(ge=0)]
PerClassProb = tuple[Prob, Prob, Prob, Prob]
PerClassArea = tuple[Area, Area, Area, Area]
# uint16 labels are valid while no label can exceed 65535 (a component holds at least one pixel), and
# labelling with statistics is about 3x faster with them than with int32 (OpenCV 5.0, measured).
_U16_MAX_PIXELS = 65535
# Up to this many kept components, masks are drawn box by box instead of by a whole-tile gather.
_FEW_COMPONENTS = 64


class PostprocessParams(BaseModel):
    """Per-class post-processing parameters, classes 1..4 in order; defaults from docs/design.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: Literal["hard", "soft", "none"] = Field(
        "hard", description="hard: drop a class whose presence is under presence_threshold; soft: multiply "
                            "probabilities by presence; none: ignore the presence head")
    presence_threshold: PerClassProb = Field(
        (0.5, 0.5, 0.5, 0.5), description="hard gate: class kept only if its presence score reaches this")
    pixel_threshold: PerClassProb = Field(
        (0.5, 0.5, 0.5, 0.5), description="a pixel is defect if its (gated) probability is above this")
    min_area: PerClassArea = Field(
        (600, 600, 900, 2000), description="class dropped if its remaining mask covers fewer frame pixels")
    min_component: PerClassArea = Field(
        (150, 150, 150, 150), description="connected components under this many frame pixels are removed")
    skip_below: PerClassProb | None = Field(
        None, description="hard gate: a tile where every class's presence is under this is defect-free, its masks "
                          "unread (a cascade model does not compute them); null: every tile's masks are read")

    def skips(self, presence: npt.ArrayLike | None) -> bool:
        """Rule 0: is a tile with these (4,) presence scores defect-free without reading its masks?"""
        if presence is None or self.skip_below is None or self.gate != "hard":
            return False
        return bool((np.asarray(presence, np.float64).reshape(-1) < np.asarray(self.skip_below)).all())


@dataclass(frozen=True)
class Defect:
    """One connected defect region, in frame pixels.

    ``score`` is the mean (gated) probability over the region: with the soft gate that is probability
    times presence. The mean, not the max, so one hot pixel does not make a faint region confident.
    """

    class_id: int  # 1..4
    score: float
    bbox: tuple[int, int, int, int]  # x, y, w, h
    area_px: int
    rle: str | None = None  # Kaggle RLE of this region in the frame, when asked for


@dataclass(frozen=True)
class TileResult:
    masks: np.ndarray  # (4, frame_h, frame_w) uint8 0/1, final masks after every rule
    defects: tuple[Defect, ...]  # by class, then in raster order of each region's first pixel
    presence: tuple[float, ...] | None  # seg: the 4 presence scores; cls results: every class probability

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({d.class_id for d in self.defects}))


@dataclass(frozen=True)
class Components:
    """8-connected components of one class's binary mask; labels at the model's resolution.

    ``areas`` and ``boxes`` are in frame pixels; entry ``j - 1`` belongs to label ``j``.
    """

    labels: np.ndarray  # (h, w) uint16 or int32: 0 background, 1..count the components
    areas: np.ndarray  # (count,) int64
    boxes: np.ndarray  # (count, 4) int64 x, y, w, h
    scale: tuple[int, int]  # (sy, sx) frame pixels per model pixel

    @property
    def count(self) -> int:
        return int(self.areas.shape[0])

    def window(self, i: int) -> tuple[slice, slice]:
        """Rows and columns, at model resolution, of the box of component ``i`` (label ``i + 1``)."""
        sy, sx = self.scale
        x, y, w, h = (int(v) for v in self.boxes[i])
        return slice(y // sy, (y + h) // sy), slice(x // sx, (x + w) // sx)

    def sums(self, values: npt.ArrayLike) -> np.ndarray:
        """(count,) float64 sums of a (h, w) array over each component, e.g. true-pixel block counts."""
        weights = np.asarray(values, dtype=np.float64).ravel()
        return np.bincount(self.labels.ravel(), weights=weights, minlength=self.count + 1)[1:]

    def mask(self, keep: np.ndarray) -> np.ndarray:
        """(h, w) uint8 0/1 mask of the components where the (count,) bool ``keep`` is set."""
        if keep.all():
            return (self.labels != 0).view(np.uint8)
        kept = np.flatnonzero(keep)
        box_px = int((self.boxes[kept, 2] * self.boxes[kept, 3]).sum()) // (self.scale[0] * self.scale[1])
        if kept.size <= _FEW_COMPONENTS and 4 * box_px < self.labels.size:
            # A gather over the whole tile costs ~0.3 ms at 256x1600; comparing inside the kept boxes
            # costs their area, typically ~0.02 ms. Both are exact.
            out = np.zeros(self.labels.shape, np.uint8)
            for i in kept:
                rows, cols = self.window(int(i))
                out[rows, cols] |= (self.labels[rows, cols] == i + 1).view(np.uint8)
            return out
        lut = np.zeros(self.count + 1, np.uint8)
        lut[1:] = keep
        return np.take(lut, self.labels)


def binarize(probs: np.ndarray, threshold: float) -> np.ndarray:
    """The pixel rule: (h, w) uint8 0/1, set where ``probs`` > ``threshold`` (compared in probs' dtype)."""
    return np.greater(probs, threshold).view(np.uint8)


def find_components(binary: np.ndarray, scale: tuple[int, int] = (1, 1)) -> Components:
    """Label a (h, w) uint8 mask (non-zero = set) whose pixels stand for ``scale`` = (sy, sx) frame pixels."""
    sy, sx = scale
    ltype = cv2.CV_16U if cv2.countNonZero(binary) <= _U16_MAX_PIXELS else cv2.CV_32S
    # OpenCV's statistics pass costs more than the labelling, but areas by bincount over the labels cost
    # as much again, and the defects need the boxes anyway.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=ltype)
    st = stats[1:].astype(np.int64)
    boxes = st[:, :4] * np.array([sx, sy, sx, sy], np.int64)
    return Components(labels, st[:, cv2.CC_STAT_AREA] * (sy * sx), boxes, (sy, sx))


def keep_components(areas: np.ndarray, min_component: npt.ArrayLike, min_area: npt.ArrayLike) -> np.ndarray:
    """Rules 3-4 on (k,) frame-pixel areas: which components survive; bool of shape broadcast(mc, ma) + (k,).

    Scalars give (k,). A tuning grid, for one class and pixel threshold, labels once::

        comps = find_components(binarize(p, t), (s, s))
        overlap = comps.sums(true_block_counts)                     # true frame pixels per component
        survive = keep_components(comps.areas, mcs[:, None], mas[None, :])   # (M, A, k)
        area, inter = survive @ comps.areas, survive @ overlap      # (M, A): Dice at every grid point
    """
    a = np.asarray(areas, dtype=np.int64)
    big = a >= np.asarray(min_component, dtype=np.int64)[..., None]
    total = np.where(big, a, 0).sum(axis=-1, keepdims=True)
    return big & (total >= np.asarray(min_area, dtype=np.int64)[..., None])


def upscale(mask: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) mask to the frame: integer factors replicate pixels into blocks."""
    fh, fw = frame_size
    if mask.shape == (fh, fw):
        return mask
    return cv2.resize(mask, (fw, fh), interpolation=cv2.INTER_NEAREST)


def class_probs(probs_c: np.ndarray, presence_c: float | None, params: PostprocessParams, c: int) -> np.ndarray | None:
    """Rule 1 for class index ``c`` (0-based): the gated (h, w) probabilities, or None when gated off."""
    if presence_c is None or params.gate == "none":
        return probs_c
    if params.gate == "hard":
        return probs_c if presence_c >= params.presence_threshold[c] else None
    return probs_c * np.float32(presence_c)


def scale_factors(shape: tuple[int, ...], frame_size: tuple[int, int]) -> tuple[int, int] | None:
    """(sy, sx) when the model's (h, w) divides the frame by integers, else None (resize needed)."""
    h, w = shape[-2:]
    fh, fw = frame_size
    if fh % h or fw % w:
        return None
    return fh // h, fw // w


def _check(probs: np.ndarray, presence: np.ndarray | None, frame_size: tuple[int, int]) -> None:
    if probs.ndim != 3 or probs.shape[0] != NUM_CLASSES or 0 in probs.shape:
        raise ValueError(f"expected probabilities of shape (4, h, w), got {probs.shape}")
    if presence is not None and presence.shape != (NUM_CLASSES,):
        raise ValueError(f"expected presence of shape (4,) or None, got {presence.shape}")
    if len(frame_size) != 2 or min(frame_size) < 1:
        raise ValueError(f"frame_size must be (height, width) > 0, got {frame_size}")


def _apply(
    probs: np.ndarray, presence: np.ndarray | None, params: PostprocessParams, frame_size: tuple[int, int],
    defects: list[Defect] | None, with_rle: bool, with_masks: bool = True,
) -> np.ndarray:
    """All four rules on one tile; appends to ``defects`` when given. Returns the (4, H, W) frame masks,
    or a (0, H, W) array when ``with_masks`` is False (events need only the defects: this saves zeroing
    and upsampling 1.6 MB of masks per tile, ~12% of the daemon's inference thread, measured)."""
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    pres = None if presence is None else np.asarray(presence, dtype=np.float32).reshape(-1)
    _check(probs, pres, frame_size)
    fh, fw = frame_size
    factors = scale_factors(probs.shape, frame_size)
    masks = np.zeros((NUM_CLASSES if with_masks else 0, fh, fw), np.uint8)
    if params.skips(pres):
        return masks
    for c in range(NUM_CLASSES):
        p = class_probs(probs[c], None if pres is None else float(pres[c]), params, c)
        if p is None:
            continue
        if factors is None:  # nearest resize commutes with thresholding: resize the probabilities once
            p = np.ascontiguousarray(upscale(p, frame_size))
        scale = factors or (1, 1)
        binary = binarize(p, params.pixel_threshold[c])
        if not cv2.countNonZero(binary):
            continue
        comps = find_components(binary, scale)
        keep = keep_components(comps.areas, params.min_component[c], params.min_area[c])
        if not keep.any():
            continue
        if with_masks:
            masks[c] = upscale(comps.mask(keep), frame_size)
        if defects is not None:
            defects.extend(_defects(c, p, comps, keep, with_rle))
    return masks


def _defects(
    c: int, p: np.ndarray, comps: Components, keep: np.ndarray, with_rle: bool,
) -> list[Defect]:
    """One Defect per kept component of class index ``c``; ``p`` are the gated probabilities it was cut from."""
    out = []
    for i in np.flatnonzero(keep):
        x, y, w, h = (int(v) for v in comps.boxes[i])
        # Work inside the component's box at model resolution: a few hundred pixels, not the frame.
        rows, cols = comps.window(int(i))
        score = float(p[rows, cols][comps.labels[rows, cols] == i + 1].mean())
        rle = _component_rle(comps.labels[:, cols] == i + 1, x, comps.scale) if with_rle else None
        out.append(Defect(c + 1, score, (x, y, w, h), int(comps.areas[i]), rle))
    return out


def _component_rle(strip: np.ndarray, x: int, scale: tuple[int, int]) -> str:
    """Frame RLE of one component from its full-height (h, w) bool column strip, which starts at frame column x.

    Equal to ``encode`` of the whole frame mask, since the columns outside the strip are empty, but it
    transposes and scans only the strip: a fraction of the frame.
    """
    sy, sx = scale
    fh = strip.shape[0] * sy
    rle = encode(upscale(strip.view(np.uint8), (fh, strip.shape[1] * sx)))
    if not x or not rle:
        return rle
    values = np.array(rle.split(), dtype=np.int64)
    values[0::2] += x * fh  # column-major numbering: each frame column before the strip holds fh pixels
    return " ".join(map(str, values.tolist()))


def postprocess(
    probs: np.ndarray,
    presence: np.ndarray | None,
    params: PostprocessParams,
    frame_size: tuple[int, int] = FRAME_SIZE,
    with_rle: bool = False,
    with_masks: bool = True,
) -> TileResult:
    """The rules on one tile: ``probs`` (4, h, w) sigmoid outputs, ``presence`` (4,) or None.

    Masks, boxes and areas are in the pixels of a ``frame_size`` = (height, width) frame. With
    ``with_masks=False`` the result's ``masks`` is an empty (0, H, W) array: defects only.
    """
    defects: list[Defect] = []
    masks = _apply(probs, presence, params, frame_size, defects, with_rle, with_masks)
    pres = None
    if presence is not None:  # four entries: _apply checked
        p1, p2, p3, p4 = (float(v) for v in np.asarray(presence).reshape(-1))
        pres = (p1, p2, p3, p4)
    return TileResult(masks, tuple(defects), pres)


def masks_only(
    probs: np.ndarray, presence: np.ndarray | None, params: PostprocessParams, frame_size: tuple[int, int] = FRAME_SIZE,
) -> np.ndarray:
    """The (4, H, W) uint8 final masks alone, skipping scores and boxes (evaluation, tuning checks)."""
    return _apply(probs, presence, params, frame_size, None, False)


def postprocess_batch(
    probs: np.ndarray,
    presence: np.ndarray | None,
    params: PostprocessParams,
    frame_size: tuple[int, int] = FRAME_SIZE,
    with_rle: bool = False,
) -> list[TileResult]:
    """``postprocess`` over a batch: probs (N, 4, h, w), presence (N, 4) or None."""
    if probs.ndim != 4:
        raise ValueError(f"expected a batch of probabilities (N, 4, h, w), got {probs.shape}")
    if presence is not None and presence.shape[0] != probs.shape[0]:
        raise ValueError(f"batch sizes differ: probs {probs.shape[0]}, presence {presence.shape[0]}")
    return [postprocess(probs[n], None if presence is None else presence[n], params, frame_size, with_rle)
            for n in range(probs.shape[0])]
