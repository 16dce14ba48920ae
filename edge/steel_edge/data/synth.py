"""Synthetic line-camera frames of steel strip with Severstal-style defect labels.

Real labelled data is scarce (31 shared images), so tests, demos and benchmarks stream frames from here:
rolled-steel texture (streaks run vertically, the rolling direction in Severstal frames), lamp falloff,
stains, the dark background beyond a strip edge, and the four defect classes drawn with their real
morphology and labelled the way Severstal's annotators did, with coarse polygons rather than pixel-exact
masks. Every frame is a pure function of ``(seed, index)``, so a data set can be generated in any order,
in parallel, and regenerated bit-for-bit. numpy and OpenCV only: the edge side imports this.
"""

from __future__ import annotations

import csv
import functools
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import count as _count
from pathlib import Path

import cv2
import numpy as np

from steel_edge.data import rle
from steel_edge.data.synth_defects import Canvas, draw_defects

__all__ = ["SynthConfig", "SynthSample", "generate", "stream", "write_dataset"]

CSV_HEADER = ("ImageId", "ClassId", "EncodedPixels")


@dataclass(frozen=True)
class SynthSample:
    """One synthetic frame: what a Severstal loader would produce for one image."""

    image_id: str
    image: np.ndarray  # (H, W) uint8 grayscale, already through JPEG like the files on disk
    masks: np.ndarray  # (4, H, W) uint8 0/1, class k at index k-1, classes never overlap

    @property
    def classes(self) -> tuple[int, ...]:
        """Classes with a non-empty mask; an empty tuple is a defect-free frame."""
        return tuple(k + 1 for k in range(self.masks.shape[0]) if self.masks[k].any())


@dataclass(frozen=True)
class SynthConfig:
    """Generator knobs. Defaults reproduce the Kaggle Severstal train set's statistics (12,568 images)."""

    height: int = 256
    width: int = 1600
    # Share of frames with no defect at all (Kaggle: 5,902 of 12,568).
    defect_free_share: float = 0.47
    # Relative frequency of (image, class) pairs (Kaggle: 897, 247, 5,150, 801).
    class_weights: tuple[float, float, float, float] = (897.0, 247.0, 5150.0, 801.0)
    # Share of defective frames that carry two classes (Kaggle: 429 of 6,666).
    multi_class_share: float = 0.064
    # Share of frames showing the dark background beyond the strip edge on one side.
    edge_share: float = 0.18
    # Range of a frame's mean gray level on the strip (real frames: about 40-160).
    brightness: tuple[float, float] = (55.0, 140.0)
    # Standard deviation range of the fine grain, in gray levels.
    grain: tuple[float, float] = (3.0, 7.0)
    # Share of frames with fine wavy cross marks (grinding/roll marks seen in some real frames).
    cross_marks_share: float = 0.3
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        # Tuples, whatever was passed: the config must stay hashable (the class plan is cached on it).
        object.__setattr__(self, "class_weights", tuple(float(x) for x in self.class_weights))
        if self.height < 64 or self.width < 256:
            raise ValueError(f"frame must be at least 64x256 (HxW), got {self.height}x{self.width}")
        for name in ("defect_free_share", "multi_class_share", "edge_share", "cross_marks_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if len(self.class_weights) != 4 or min(self.class_weights) < 0 or sum(self.class_weights) <= 0:
            raise ValueError(f"class_weights must be 4 non-negative numbers, not all 0: {self.class_weights}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        for name in ("brightness", "grain"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high, got {(lo, hi)}")


def generate(seed: int, index: int, config: SynthConfig = SynthConfig()) -> SynthSample:
    """Frame ``index`` of the data set ``seed``: deterministic in (seed, index) alone."""
    return _render(seed, index, config)[0]


def stream(seed: int, count: int | None = None, config: SynthConfig = SynthConfig()) -> Iterator[SynthSample]:
    """Frames 0, 1, 2... of data set ``seed`` (endless when ``count`` is None); nothing touches disk."""
    indices = range(count) if count is not None else _count()
    for index in indices:
        yield generate(seed, index, config)


def write_dataset(
    out: Path,
    images: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
    progress: bool = False,
    workers: int | None = None,
) -> dict[str, object]:
    """Write a Kaggle-layout data set: ``out/train.csv`` and ``out/train_images/<id>.jpg``.

    The JPEG bytes on disk are the very bytes ``generate`` decoded, so a loader reading the files gets
    exactly ``generate(seed, i).image``. Frames are rendered on a thread pool (OpenCV and numpy's
    generators release the GIL); the output does not depend on the number of workers.
    """
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    start = time.perf_counter()
    out = Path(out)
    image_dir = out / "train_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(4, len(os.sched_getaffinity(0))))
    rows: list[tuple[str, int, str]] = []
    class_images = dict.fromkeys(range(1, 5), 0)
    defect_free = 0

    def one(index: int) -> tuple[str, list[tuple[int, str]]]:
        sample, jpeg = _render(seed, index, config)
        (image_dir / sample.image_id).write_bytes(jpeg)
        return sample.image_id, [(k, rle.encode(sample.masks[k - 1])) for k in sample.classes]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (image_id, labels) in enumerate(pool.map(one, range(images)), start=1):
            defect_free += not labels
            for k, encoded in labels:
                class_images[k] += 1
                rows.append((image_id, k, encoded))
            if progress and (done == images or done % max(1, images // 10) == 0):
                print(f"synth: {done}/{images} images", file=sys.stderr, flush=True)
    rows.sort(key=lambda row: (row[0], row[1]))
    with (out / "train.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    return {
        "images": images,
        "defect_free": defect_free,
        "class_images": class_images,
        "seconds": round(time.perf_counter() - start, 3),
        "out": str(out),
    }


def _render(seed: int, index: int, config: SynthConfig) -> tuple[SynthSample, bytes]:
    """Draw one frame and return it with its JPEG file bytes (3-channel, R=G=B, as Kaggle stores them)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    h, w = config.height, config.width
    classes = _pick_classes(rng, config)
    img, strip = _background(rng, config)
    canvas = Canvas(img=img, label=np.zeros((h, w), np.uint8), x_lo=strip[0], x_hi=strip[1])
    draw_defects(rng, canvas, classes)
    gray = np.clip(canvas.img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    )
    if not ok:  # pragma: no cover - OpenCV only fails here on a broken build
        raise RuntimeError("OpenCV could not encode a JPEG")
    # With R=G=B the chroma planes are constant, so the luma plane alone is the decoded image.
    image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if image is None:  # pragma: no cover - as above
        raise RuntimeError("OpenCV could not decode the JPEG it just encoded")
    masks = np.stack([(canvas.label == k) for k in range(1, 5)]).view(np.uint8)
    return SynthSample(f"synth_{seed:04d}_{index:06d}.jpg", image, masks), buf.tobytes()


def _pick_classes(rng: np.random.Generator, config: SynthConfig) -> tuple[int, ...]:
    """Which classes a frame carries: none, one, or (with ``multi_class_share``) two.

    Drawn so that the long-run (image, class) pair frequencies equal ``class_weights``, two-class
    frames included; picking both classes of a pair like a single one would under-count class 3.
    """
    if rng.random() < config.defect_free_share:
        return ()
    single, pair = _class_plan(config.class_weights, config.multi_class_share)
    if pair is None or rng.random() >= config.multi_class_share:
        return (int(rng.choice(4, p=single)) + 1,)
    # Systematic sampling: each class owns an interval of length b_k <= 1 on [0, 2); the points u and
    # u + 1 fall in two different intervals and class k is included with probability exactly b_k.
    edges = np.cumsum(pair)
    last = int(np.flatnonzero(pair)[-1])  # guards against rounding: the sum can end a hair below 2
    u = rng.random()
    first, second = (min(last, int(np.searchsorted(edges, v, side="right"))) for v in (u, u + 1.0))
    return (min(first, second) + 1, max(first, second) + 1)


@functools.lru_cache(maxsize=16)
def _class_plan(weights: tuple[float, ...], multi: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-class probabilities for one-class frames, and inclusion probabilities for two-class ones.

    A class is in a two-class frame with probability ``b_k`` (at most 1, summing to 2), proportional
    to its weight where that cap allows; the one-class probabilities ``a_k`` then make up the rest,
    so that ``(1 - m) a_k + m b_k`` is proportional to the weight, as in the target pair counts.
    """
    p = np.asarray(weights, np.float64) / sum(weights)
    if multi <= 0 or (p > 0).sum() < 2:
        return p, None
    b = 2 * p
    while (b > 1 + 1e-12).any():  # cap at 1 and hand the excess to the uncapped classes
        capped = b >= 1
        b[capped] = 1.0
        b[~capped] = p[~capped] * (2 - capped.sum()) / p[~capped].sum()
    if multi >= 1:
        return p, b
    a = np.clip((p * (1 + multi) - multi * b) / (1 - multi), 0, None)
    return a / a.sum(), b


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Unit-variance noise on a coarse (rows, cols) grid, upsampled bicubically to size (H, W).

    A grid far coarser in rows than in columns gives structures elongated vertically, along the rolling
    direction, which is how stains and streaks look on real strip.
    """
    coarse = rng.standard_normal((max(2, grid[0]), max(2, grid[1])), dtype=np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _profile(rng: np.random.Generator, n: int, octaves: tuple[tuple[int, float], ...]) -> np.ndarray:
    """A 1-D sum of random octaves ((knots, amplitude), ...) of length ``n``, interpolated bicubically.

    Cubic, not linear: a piecewise-linear profile has kinks that show as creases across the frame.
    """
    out = np.zeros(n, np.float32)
    for knots, amp in octaves:
        values = rng.standard_normal((1, min(knots, n) + 1), dtype=np.float32)
        out += amp * cv2.resize(values, (n, 1), interpolation=cv2.INTER_CUBIC)[0]
    return out


def _background(rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """Bare strip as float32 gray levels, and the x range ``[lo, hi)`` that shows strip (not background)."""
    h, w = config.height, config.width
    # Everything smooth along the strip (lamp, mottling, stains) is built on a quarter-height grid and
    # upsampled once: that saves most full-frame passes, the bulk of a frame's cost.
    hs = max(16, h // 4)
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)
    ys = np.linspace(0.0, 1.0, hs, dtype=np.float32)
    # Lamp: a broad falloff across the width and along the rows (no row-wise banding: real frames
    # brighten and darken smoothly from top to bottom), sometimes with a bright hot spot.
    cx, vig = rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.6)
    col = 1.0 - vig * ((xs - cx) / 0.75) ** 2
    # Streaks along the rolling direction: column-wise variation at several scales, per-frame strength.
    octaves = ((4, 0.08), (12, 0.06), (60, 0.04), (300, 0.025), (w, 0.015))
    col += rng.uniform(0.7, 2.0) * _profile(rng, w, octaves)
    cy, vig_y = rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.9)
    row = 1.0 - vig_y * (ys - cy) ** 2 + rng.normal(0.0, 0.2) * (ys - 0.5) + _profile(rng, hs, ((2, 0.1),))
    illum = row[:, None] * col[None, :]
    if rng.random() < 0.35:
        gx = np.exp(-(((xs - rng.uniform(0, 1)) / rng.uniform(0.08, 0.3)) ** 2))
        gy = np.exp(-(((ys - rng.uniform(-0.3, 1.3)) / rng.uniform(0.3, 1.0)) ** 2))
        illum += rng.uniform(0.15, 0.6) * np.outer(gy, gx)
    # Mottling: broad lighter and darker areas, elongated along the strip.
    illum *= 1.0 + rng.uniform(0.03, 0.1) * _smooth_noise(rng, (2, 48), (hs, w))
    # Normalised so that the drawn brightness is the frame's mean gray level whatever the lamp does.
    low = illum * (rng.uniform(*config.brightness) / float(illum.mean()))
    base = float(low.mean())
    # Stains: dark, short vertical smudges, clustered where a coarse envelope is high.
    # Two scales, so that they vary in size rather than repeat one drop shape.
    stains = (
        0.8 * _smooth_noise(rng, (h // 24, w // 5), (hs, w))
        + 0.6 * _smooth_noise(rng, (h // 10, w // 12), (hs, w))
        + 1.2 * _smooth_noise(rng, (2, 6), (hs, w))
    )
    # A ramp above the threshold gives the crisper edges of real marks rather than soft clouds.
    stains = np.clip((stains - rng.uniform(1.6, 3.2)) * rng.uniform(0.8, 2.5), 0.0, 1.0)
    low -= (rng.uniform(0.05, 0.3) * base) * stains
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    # Brushed look: thin streaks a few tens of px long, as rolling leaves them.
    img += rng.uniform(2.0, 5.0) * _smooth_noise(rng, (h // 12, w // 2), (h, w))
    if rng.random() < config.cross_marks_share:
        img += _cross_marks(rng, h, w) * rng.uniform(2.0, 6.0)
    _fine_marks(rng, img, base)
    # Fine grain: crisp per-pixel noise; JPEG later softens it the way it softens the real frames.
    img += rng.uniform(*config.grain) * rng.standard_normal((h, w), dtype=np.float32)
    return _strip_edge(rng, img, config)


def _fine_marks(rng: np.random.Generator, img: np.ndarray, base: float) -> None:
    """Unlabelled small marks, added in place: short thin scratches and bright specks.

    Real frames are full of them and their labels ignore them, so a model must learn that a short faint
    line is not a class 2 or 3 defect. Drawn on a zero layer, since OpenCV's drawing sets, not adds.
    """
    h, w = img.shape
    marks = np.zeros_like(img)
    for _ in range(int(rng.poisson(rng.uniform(5, 50)))):
        x, y, length = rng.uniform(0, w), rng.uniform(-20, h), rng.uniform(6, 50)
        p0, p1 = (round(x), round(y)), (round(x + rng.normal(0, 1.5)), round(y + length))
        cv2.line(marks, p0, p1, -rng.uniform(0.06, 0.25) * base, 1)
    n = int(rng.poisson(rng.uniform(0, 40)))
    marks[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(0.2, 0.6, n) * base
    img += marks


def _cross_marks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Fine wavy marks across the strip (wood-grain-like), in a band that fades in and out."""
    period = rng.uniform(4.0, 10.0)
    phase = np.arange(h, dtype=np.float32)[:, None] / period + rng.uniform(2, 6) * _smooth_noise(
        rng, (3, 16), (h, w)
    )
    envelope = np.clip(_smooth_noise(rng, (2, 5), (h, w)), 0.0, 1.0)
    # Only the crests of the wave: thin lines with gaps between them, not a woven pattern.
    return np.maximum(np.sin((2 * np.pi) * phase) - 0.5, 0.0) * (2.0 * envelope)


def _strip_edge(
    rng: np.random.Generator, img: np.ndarray, config: SynthConfig
) -> tuple[np.ndarray, tuple[int, int]]:
    """Maybe blacken one side beyond the strip edge: a nearly straight, slightly tilted, soft boundary."""
    h, w = img.shape
    if rng.random() >= config.edge_share:
        return img, (0, w)
    depth = int(rng.uniform(0.08, 0.55) * w)  # how much of the frame is background
    tilt = rng.normal(0.0, 0.02) * h
    wobble = _profile(rng, h, ((4, 1.0), (h // 8, 0.4)))
    edge = depth + tilt * (np.arange(h, dtype=np.float32) / h - 0.5) + wobble
    xs = np.arange(w, dtype=np.float32)
    left = rng.random() < 0.5
    inside = (xs[None, :] - edge[:, None]) if left else ((w - 1 - xs)[None, :] - edge[:, None])
    # Into the strip: a soft ramp over a few pixels, a slightly dim band, then full brightness.
    soft = rng.uniform(1.5, 5.0)
    alpha = np.clip(inside / soft, 0.0, 1.0) * (1.0 - 0.25 * np.exp(-np.maximum(inside, 0.0) / 25.0))
    dark = rng.uniform(1.0, 6.0)
    img = dark + (img - dark) * alpha
    margin = int(np.ceil(edge.max() + soft)) + 8
    return img, ((margin, w) if left else (0, w - margin))
