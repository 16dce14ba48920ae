"""The four Severstal defect classes, drawn onto a synthetic strip and labelled like the real annotations.

Each class copies what the real frames show: class 1 small pits and specks in little clusters, class 2
thin short scratches across the strip (vertical in the frame), class 3 long streaks along the strip and
patches of rolled-in scale, class 4 large dark rough patches with relief. Labels are coarse polygons
(a padded hull or quad around the defect, or a simplified outline for class 4), because that is how
the real masks were drawn, and a model trained here should meet the same label noise it meets there.
Everything is drawn on small regions of interest, so a frame costs a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator

# Small classes first: they claim their pixels before large class-3/4 labels can swallow them, so
# a class that is listed always keeps a non-empty mask (labels are first-come, never overlapping).
DRAW_ORDER = (2, 1, 4, 3)


@dataclass
class Canvas:
    """The frame being drawn: float32 gray levels, a class-id label map (0 = none), the strip's x range."""

    img: np.ndarray
    label: np.ndarray
    x_lo: int
    x_hi: int

    @property
    def gain(self) -> float:
        """Contrast scale: a defect on a dark frame is darker in absolute gray levels, as on real strip."""
        return float(self.img[::8, self.x_lo : self.x_hi : 8].mean()) / 100.0


def draw_defects(rng: Rng, canvas: Canvas, classes: tuple[int, ...]) -> None:
    """Draw every class in ``classes`` onto ``canvas`` (image and label map) in place."""
    gain = canvas.gain
    for cls in DRAW_ORDER:
        if cls in classes:
            _DRAWERS[cls](rng, canvas, gain)


def _place(
    rng: Rng, cv: Canvas, cls: int, bw: int, bh: int, y: int | None = None, force: bool = False
) -> tuple[int, int] | None:
    """Top-left corner for a bw x bh box on the strip that no other class has labelled yet.

    Rejection sampling keeps classes apart; ``force`` returns the last try anyway so that the first
    instance of a listed class is always drawn (the label map then resolves any overlap).
    """
    h = cv.label.shape[0]
    x = yy = 0
    for _ in range(12):
        x = int(rng.integers(cv.x_lo, max(cv.x_lo + 1, cv.x_hi - bw + 1)))
        yy = int(rng.integers(0, max(1, h - bh + 1))) if y is None else y
        roi = cv.label[max(yy, 0) : max(yy + bh, 0), x : x + bw]
        if not ((roi != 0) & (roi != cls)).any():
            return x, yy
    return (x, yy) if force else None


def _paste(cv: Canvas, x0: int, y0: int, layer: np.ndarray) -> None:
    """Add a local layer whose top-left is (x0, y0) to the image, clipped to the frame and the strip."""
    h, w = cv.img.shape
    xa, ya = max(x0, cv.x_lo, 0), max(y0, 0)
    xb, yb = min(x0 + layer.shape[1], cv.x_hi, w), min(y0 + layer.shape[0], h)
    if xa < xb and ya < yb:
        cv.img[ya:yb, xa:xb] += layer[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _fill_label(cv: Canvas, cls: int, pts: np.ndarray, pad: float = 0.0) -> None:
    """Label the polygon ``pts`` (frame coordinates), grown by ``pad`` px, where no class is yet."""
    h, w = cv.label.shape
    pts = np.round(np.asarray(pts, np.float64)).astype(np.int32).reshape(-1, 2)
    p = round(pad)
    ux0, uy0 = pts.min(0) - p - 1
    ux1, uy1 = pts.max(0) + p + 2
    xa, ya, xb, yb = max(ux0, cv.x_lo, 0), max(uy0, 0), min(ux1, cv.x_hi, w), min(uy1, h)
    if xa >= xb or ya >= yb:
        return
    tmp = np.zeros((uy1 - uy0, ux1 - ux0), np.uint8)
    local = (pts - (ux0, uy0)).reshape(-1, 1, 2)
    cv2.fillPoly(tmp, [local], 1)
    if p:  # a polygon stroked 2p wide is the polygon dilated by p, at the cost of one draw call
        cv2.polylines(tmp, [local], True, 1, thickness=2 * p + 1)
    roi = cv.label[ya:yb, xa:xb]
    roi[(tmp[ya - uy0 : yb - uy0, xa - ux0 : xb - ux0] > 0) & (roi == 0)] = cls


def _blur(layer: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(layer, (0, 0), sigma)


def _noise(rng: Rng, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    coarse = rng.standard_normal((max(2, grid[0]), max(2, grid[1])), dtype=np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _vertical_extent(rng: Rng, h: int, lo: int, p_full: float) -> tuple[int, int]:
    """(top, length) of a defect along the strip: often the full frame, else anchored to an edge."""
    if rng.random() < p_full:
        return 0, h
    length = int(rng.integers(min(lo, h), h + 1))
    u = rng.random()
    top = 0 if u < 0.45 else h - length if u < 0.75 else int(rng.integers(0, h - length + 1))
    return top, length


def _line(rng: Rng, layer: np.ndarray, x_top: float, x_bot: float, value: float, thickness: int) -> None:
    """A scratch from top to bottom of ``layer`` whose depth varies along its length."""
    bh = layer.shape[0]
    n = int(rng.integers(4, 10))
    ys = np.linspace(0, bh - 1, n + 1)
    xs = np.interp(ys, (0, bh - 1), (x_top, x_bot)) + rng.normal(0, 0.6, n + 1)
    for i in range(n):
        v = value * rng.uniform(0.3, 1.2)
        cv2.line(layer, (round(xs[i]), round(ys[i])), (round(xs[i + 1]), round(ys[i + 1])), v, thickness)


def _pits(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 1: clusters of small dark and bright specks, each cluster labelled by its padded hull."""
    for i in range(1 + min(int(rng.poisson(1.5)), 5)):
        rw, rh = int(rng.integers(20, 56)), int(rng.integers(30, 120))
        at = _place(rng, cv, 1, rw, rh, force=i == 0)
        if at is None:
            continue
        layer = np.zeros((rh, rw), np.float32)
        cv2.ellipse(layer, (rw // 2, rh // 2), (rw // 2, rh // 2), 0, 0, 360, -rng.uniform(3, 14), -1)
        layer = _blur(layer, 3)
        k = int(rng.integers(3, 14))
        pts = np.column_stack([rng.normal(rw / 2, rw / 6, k), rng.normal(rh / 2, rh / 5, k)])
        pts = np.clip(pts, 2, (rw - 3, rh - 3))
        bright = rng.random() < 0.4
        for px, py in pts:
            r = rng.uniform(0.8, 3.2)
            v = rng.uniform(30, 90) if bright and rng.random() < 0.7 else -rng.uniform(25, 70)
            axes = (max(1, round(r)), max(1, round(r * rng.uniform(1.0, 2.2))))
            cv2.ellipse(layer, (round(px), round(py)), axes, 0, 0, 360, v, -1)
        _paste(cv, *at, _blur(layer, 0.8) * gain)
        _fill_label(cv, 1, pts + at, pad=rng.uniform(6, 12))


def _thin_scratches(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 2: one or two thin, short scratches across the strip, labelled by a narrow quad."""
    h = cv.img.shape[0]
    for i in range(1 if rng.random() < 0.8 else 2):
        top, length = _vertical_extent(rng, h, 50, 0.25)
        slant = float(rng.normal(0, 3))
        pl, pr = rng.uniform(4, 10, 2)
        bw = int(abs(slant) + pl + pr) + 6
        at = _place(rng, cv, 2, bw, length, y=top, force=i == 0)
        if at is None:
            continue
        x_top = pl + 3 + max(0.0, -slant)
        layer = np.zeros((length, bw), np.float32)
        value = rng.uniform(25, 65) * (1 if rng.random() < 0.25 else -1)
        _line(rng, layer, x_top, x_top + slant, value * 0.25, int(rng.integers(4, 8)))
        layer = _blur(layer, 2.0)
        _line(rng, layer, x_top, x_top + slant, value, int(rng.integers(1, 3)))
        _paste(cv, *at, _blur(layer, 0.8) * gain)
        quad = np.array(
            [
                [x_top - pl, 0],
                [x_top + pr, 0],
                [x_top + slant + pr, length - 1],
                [x_top + slant - pl, length - 1],
            ]
        )
        _fill_label(cv, 2, quad + at)


def _long_streaks(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 3: bands of long scratches or soft streaks along the strip, each band labelled as a quad."""
    h = cv.img.shape[0]
    for i in range(int(rng.choice([1, 1, 1, 2, 2, 3, 4, 6]))):
        top, length = _vertical_extent(rng, h, 60, 0.55)
        bw = int(rng.integers(10, 72))
        slant = float(rng.normal(0, 3))
        at = _place(rng, cv, 3, bw + int(abs(slant)), length, y=top, force=i == 0)
        if at is None:
            continue
        layer = np.zeros((length, bw + int(abs(slant))), np.float32)
        x_shift = max(0.0, -slant)
        if rng.random() < 0.3:  # a soft bright or dark streak a few px wide
            sw = int(rng.integers(3, max(4, bw // 2)))
            x = x_shift + rng.uniform(2, max(3, bw - sw - 2))
            _line(rng, layer, x, x + slant, rng.uniform(12, 45) * (1 if rng.random() < 0.6 else -1), sw)
            layer = _blur(layer, 2.5)
        lines = [
            (
                x_shift + rng.uniform(3, max(4, bw - 3)),
                rng.uniform(30, 85) * rng.choice([-1, 1], p=[0.7, 0.3]),
            )
            for _ in range(int(rng.integers(1, 5)))
        ]
        for x, value in lines:  # a soft halo first: the scratch's shoulders catch the light differently
            _line(rng, layer, x, x + slant, 0.2 * value, int(rng.integers(5, 12)))
        layer = _blur(layer, 2.0)
        for x, value in lines:
            _line(rng, layer, x, x + slant, value, int(rng.integers(1, 4)))
        _paste(cv, *at, _blur(layer, 0.7) * gain)
        quad = np.array(
            [
                [x_shift, 0],
                [x_shift + bw, 0],
                [x_shift + slant + bw, length - 1],
                [x_shift + slant, length - 1],
            ]
        )
        _fill_label(cv, 3, quad + at)


def _relief(height: np.ndarray, strength: float) -> np.ndarray:
    """Oblique-light shading of a height map: raised edges catch light on one side, shadow on the other."""
    dx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    return strength * (dx + 0.5 * dy)


def _scale_patches(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 3: patches of rolled-in scale flakes with relief, each labelled by its padded hull."""
    h = cv.img.shape[0]
    for i in range(int(rng.choice([1, 1, 2, 2, 3, 4, 5]))):
        pw, ph = int(rng.integers(30, 150)), int(rng.integers(30, min(130, h)))
        at = _place(rng, cv, 3, pw, ph, force=i == 0)
        if at is None:
            continue
        height = np.zeros((ph, pw), np.float32)
        k = int(rng.integers(4, 22))
        centres = np.column_stack([rng.normal(pw / 2, pw / 5, k), rng.normal(ph / 2, ph / 5, k)])
        centres = np.clip(centres, 6, (pw - 7, ph - 7))
        # Flakes lie rolled flat, mostly stretched across the frame; pick one habit per patch.
        angle0 = 0.0 if rng.random() < 0.6 else 90.0
        for cx, cy in centres:
            axes = (max(2, round(rng.uniform(3, 13))), max(1, round(rng.uniform(1.0, 4.0))))
            cv2.ellipse(
                height,
                (round(cx), round(cy)),
                axes,
                angle0 + rng.normal(0, 25),
                0,
                360,
                rng.uniform(0.4, 1.0),
                -1,
            )
        height = _blur(height, 1.0)
        # Under the flakes, the strip is stained darker over the whole patch.
        stain = -rng.uniform(4, 16) * _blur(np.minimum(height * 4, 1.0), 6.0)
        body = (
            stain + height * rng.choice([-1, 1]) * rng.uniform(20, 50) + _relief(height, rng.uniform(30, 60))
        )
        _paste(cv, *at, body * gain)
        _fill_label(cv, 3, cv2.convexHull(np.round(centres + at).astype(np.int32)), pad=rng.uniform(10, 20))


def _wide_band(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 3: a wide band along the strip, full of fine scratches and smudges, labelled as one quad."""
    h = cv.img.shape[0]
    top, length = _vertical_extent(rng, h, 120, 0.75)
    bw = int(rng.integers(60, 240)) if rng.random() < 0.85 else int(rng.integers(240, 520))
    at = _place(rng, cv, 3, bw, length, y=top, force=True)
    assert at is not None
    smudge = np.maximum(_noise(rng, (length // 20, bw // 5), (length, bw)) - rng.uniform(0.6, 1.4), 0)
    layer = rng.uniform(-18, 12) - rng.uniform(15, 45) * smudge
    ramp = np.minimum(np.arange(bw, dtype=np.float32), np.arange(bw, dtype=np.float32)[::-1])
    layer = layer * np.clip(ramp / 8.0, 0, 1)[None, :]
    for _ in range(int(rng.integers(4, 20))):
        x = rng.uniform(3, bw - 3)
        _line(rng, layer, x, x + rng.normal(0, 1.5), rng.uniform(10, 45) * rng.choice([-1, 1]), 1)
    _paste(cv, *at, _blur(layer, 0.8) * gain)
    jx = rng.uniform(-8, 8, 4)
    quad = np.array([[jx[0], 0], [bw + jx[1], 0], [bw + jx[2], length - 1], [jx[3], length - 1]])
    _fill_label(cv, 3, quad + at)


def _class3(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 3 takes several looks in the real data; pick one, sometimes two."""
    for _ in range(1 if rng.random() < 0.88 else 2):
        u = rng.random()
        (_long_streaks if u < 0.5 else _scale_patches if u < 0.82 else _wide_band)(rng, cv, gain)


def _blob(rng: Rng, rx: float, ry: float, n: int = 40, rough: float = 0.35) -> np.ndarray:
    """An irregular closed outline (n x 2, centred on 0): an ellipse with random harmonics and jitter."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + rng.normal(0, rough * 0.06, n)
    for harmonic in range(2, 10):
        r += rough / harmonic**1.4 * rng.normal() * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.3, 1.7)
    return np.column_stack([rx * r * np.cos(t), ry * r * np.sin(t)])


def _rough_patch(rng: Rng, cv: Canvas, gain: float, rx: float, ry: float, first: bool) -> None:
    """One class-4 patch: a few overlapping irregular lobes, dark, rough, with a raised rim in relief."""
    h = cv.img.shape[0]
    lobes = [_blob(rng, rx, ry)]
    for _ in range(int(rng.integers(0, 4))):
        s = rng.uniform(0.3, 0.7)
        lobes.append(_blob(rng, rx * s, ry * s, rough=0.5) + rng.uniform(-0.85, 0.85, 2) * (rx, ry))
    lo = np.min([lobe.min(0) for lobe in lobes], axis=0) - 4
    hi = np.max([lobe.max(0) for lobe in lobes], axis=0) + 4
    bw, bh = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
    y = None
    if first and rng.random() < 0.5:  # large patches often run off the top or bottom of the frame
        y = int(rng.uniform(-0.4, 0.0) * bh) if rng.random() < 0.5 else h - int(rng.uniform(0.6, 1.0) * bh)
    at = _place(rng, cv, 4, bw, bh, y=y, force=first)
    if at is None:
        return
    mask = np.zeros((bh, bw), np.uint8)
    for lobe in lobes:  # one call per lobe: a single fillPoly call would leave the overlaps as holes
        cv2.fillPoly(mask, [np.round(lobe - lo).astype(np.int32).reshape(-1, 1, 2)], 1)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    height = (
        _noise(rng, (bh // 14, bw // 14), (bh, bw))
        + 0.4 * _noise(rng, (bh // 6, bw // 6), (bh, bw))
        + 0.12 * _noise(rng, (bh // 3, bw // 3), (bh, bw))
    )
    height += rng.uniform(0.5, 2.0) * np.exp(-inside / rng.uniform(2.0, 6.0))  # the peeled, raised rim
    height *= mask
    depth = -rng.uniform(15, 45)
    if rng.random() < 0.15:  # a hole: much darker towards the middle of the patch
        depth = depth - rng.uniform(20, 50) * np.minimum(inside / 25.0, 1.0)
    body = (
        depth
        + rng.uniform(10, 35) * np.maximum(height - 0.9, 0)
        + _relief(_blur(height, 1.2), rng.uniform(20, 45))
        + rng.uniform(3, 8) * rng.standard_normal((bh, bw), dtype=np.float32)
    )
    _paste(cv, *at, body * _blur(mask.astype(np.float32), 1.5) * gain)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        poly = cv2.approxPolyDP(contour, rng.uniform(2, 6), True)
        _fill_label(cv, 4, poly.reshape(-1, 2) + at, pad=rng.uniform(2, 6))


def _rough_patches(rng: Rng, cv: Canvas, gain: float) -> None:
    """Class 4: a large dark rough patch, sometimes with small satellites, labelled by its outline."""
    _rough_patch(rng, cv, gain, rng.uniform(18, 180), rng.uniform(22, 190), first=True)
    for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.35 else 0):
        _rough_patch(rng, cv, gain, rng.uniform(12, 40), rng.uniform(12, 45), first=False)


_DRAWERS: dict[int, Callable[[Rng, Canvas, float], None]] = {
    1: _pits,
    2: _thin_scratches,
    3: _class3,
    4: _rough_patches,
}
