"""Drawing helpers shared by the training plots, the reports and the daemon's annotated frames.

OpenCV only (no matplotlib), so the edge box can annotate frames. Masks follow the Severstal layout used
everywhere in the product: a (4, H, W) array with class k at index k-1. Outlines rather than filled
overlays, because a filled overlay hides the very texture an engineer wants to judge the defect by;
ground truth is drawn solid and predictions dashed in the same class colour, so the two read apart
even where they coincide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import cv2
import numpy as np

Color = tuple[int, int, int]

# BGR. Amber, blue, green, red: distinct on gray steel and for the common colour-vision deficiencies
# as far as four colours allow (class 3, by far the most frequent, gets green).
CLASS_COLORS: Mapping[int, Color] = MappingProxyType(
    {1: (0, 200, 255), 2: (255, 140, 30), 3: (60, 210, 60), 4: (60, 60, 240)}
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy of a gray (H, W), (H, W, 1) or BGR (H, W, 3) image; floats are clipped to 0..255."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr.copy()
    raise ValueError(f"expected a gray (H, W) or BGR (H, W, 3) image, got shape {arr.shape}")


def draw_mask_outlines(
    image: np.ndarray,
    masks: np.ndarray,
    thickness: int = 2,
    colors: Mapping[int, Color] = CLASS_COLORS,
    *,
    dashed: bool = False,
    dash: int = 8,
) -> np.ndarray:
    """Outline each class's mask on a BGR copy of ``image``; the input is never modified.

    ``masks`` is (K, H, W), class k at index k-1, non-zero = defect. Call it twice to compare truth and
    prediction (see ``draw_truth_vs_pred``): the second call draws on the first call's output.
    """
    out = to_bgr(image)
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != out.shape[:2]:
        raise ValueError(f"masks must be (K, {out.shape[0]}, {out.shape[1]}), got shape {masks.shape}")
    approx = cv2.CHAIN_APPROX_NONE if dashed else cv2.CHAIN_APPROX_SIMPLE
    for k in range(masks.shape[0]):
        mask = masks[k]
        if not mask.any():
            continue
        contours, _ = cv2.findContours((mask != 0).view(np.uint8), cv2.RETR_LIST, approx)
        color = colors[k + 1]
        if dashed:
            _draw_dashed(out, contours, color, thickness, dash)
        else:
            cv2.drawContours(out, contours, -1, color, thickness, lineType=cv2.LINE_8)
    return out


def _draw_dashed(
    out: np.ndarray, contours: Sequence[np.ndarray], color: Color, thickness: int, dash: int
) -> None:
    """Draw every other run of ``dash`` contour pixels; OpenCV has no dashed line style of its own."""
    pieces = []
    for contour in contours:
        pts = contour.reshape(-1, 2)
        closed = np.concatenate([pts, pts[:1]])  # walk round to the start so the last dash closes the loop
        for start in range(0, len(closed) - 1, 2 * dash):
            piece = closed[start : start + dash + 1]
            if len(piece) >= 2:
                pieces.append(piece.reshape(-1, 1, 2))
    if pieces:
        cv2.polylines(out, pieces, False, color, thickness, lineType=cv2.LINE_8)


def draw_truth_vs_pred(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors: Mapping[int, Color] = CLASS_COLORS
) -> np.ndarray:
    """Ground truth as solid 2 px outlines, prediction as dashed 1 px outlines, in the class colours."""
    out = draw_mask_outlines(image, truth, thickness=2, colors=colors)
    return draw_mask_outlines(out, pred, thickness=1, colors=colors, dashed=True)


def draw_legend(image: np.ndarray, colors: Mapping[int, Color] = CLASS_COLORS, names: Sequence[str] = ()) -> np.ndarray:
    """A BGR copy of ``image`` with a small class-colour key in the top-right corner; ``names`` (class k's
    at index k-1) label the swatches instead of the bare class ids."""
    out = to_bgr(image)
    labels = {k: (f"{k} {names[k - 1]}" if len(names) >= k and names[k - 1] != str(k) else str(k)) for k in colors}
    widths = {k: 22 + cv2.getTextSize(labels[k], _FONT, 0.45, 1)[0][0] for k in colors}
    x = out.shape[1] - 8 - sum(widths.values())
    for k, color in sorted(colors.items()):
        cv2.rectangle(out, (x - 2, 4), (x + widths[k] - 6, 20), (0, 0, 0), -1)
        cv2.rectangle(out, (x, 6), (x + 12, 18), color, -1)
        cv2.putText(out, labels[k], (x + 16, 17), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        x += widths[k]
    return out


def contact_sheet(
    tiles: list[np.ndarray],
    cols: int,
    labels: list[str] | None = None,
    *,
    scale: float = 1.0,
    gap: int = 4,
    caption_height: int = 18,
    background: Color = (24, 24, 24),
) -> np.ndarray:
    """Tile images (gray or BGR) into one BGR sheet, ``cols`` per row, each with an optional caption.

    Tiles are resized by ``scale`` and laid out in cells as large as the largest tile, so a sheet can mix
    sizes. Captions go in a bar above each tile rather than on it, so they never hide a defect.
    """
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"got {len(labels)} labels for {len(tiles)} tiles")
    images = [to_bgr(t) for t in tiles]
    if scale != 1.0:
        images = [
            cv2.resize(
                im,
                (max(1, round(im.shape[1] * scale)), max(1, round(im.shape[0] * scale))),
                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            )
            for im in images
        ]
    cap = caption_height if labels is not None else 0
    cell_h = max(im.shape[0] for im in images) + cap
    cell_w = max(im.shape[1] for im in images)
    rows = -(-len(images) // cols)
    sheet = np.empty((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3), np.uint8)
    sheet[:] = background
    for i, im in enumerate(images):
        y = gap + (i // cols) * (cell_h + gap)
        x = gap + (i % cols) * (cell_w + gap)
        if labels is not None:
            cv2.putText(sheet, labels[i], (x + 3, y + cap - 5), _FONT, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
        sheet[y + cap : y + cap + im.shape[0], x : x + im.shape[1]] = im
    return sheet
