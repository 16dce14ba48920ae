"""What the daemon produces besides the JSON payload: the JPEG crop part and frames saved to disk.

The crop is the frame region that holds every reported defect (their union box, padded by 16 px),
scaled down to ``crop_max_width``: enough for an operator's screen to show what was found without
sending whole frames over the wire. Saved files are named after the camera and frame id, sanitised and without the
source file's own image extension (``cam0_coil12-0034.jpg`` for ``coil12-0034.png``; tiles add ``_tN``), so
the name says where the frame came from; annotated frames carry a class-colour legend with the model's
class names; saving stops at ``max_files`` to protect the disk.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from steel_edge.config import PublishConfig, SaveConfig
from steel_edge.names import frame_file_name
from steel_edge.postprocess import Defect
from steel_edge.sources import Frame
from steel_edge.viz import draw_legend, draw_mask_outlines

_PAD = 16


def defects_box(defects: tuple[Defect, ...], shape: tuple[int, int], pad: int = _PAD) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the union of the defects' boxes, padded and clipped to the frame."""
    x0 = min(d.bbox[0] for d in defects) - pad
    y0 = min(d.bbox[1] for d in defects) - pad
    x1 = max(d.bbox[0] + d.bbox[2] for d in defects) + pad
    y1 = max(d.bbox[1] + d.bbox[3] for d in defects) + pad
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(shape[1], x1), min(shape[0], y1)
    return x0, y0, x1 - x0, y1 - y0


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _shrink(image: np.ndarray, max_width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= max_width:
        return image
    return cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def crop_jpeg(image: np.ndarray, defects: tuple[Defect, ...], cfg: PublishConfig) -> bytes | None:
    """The crop part for a result, or None when there is nothing to show."""
    if cfg.crop == "none" or not defects:
        return None
    x, y, w, h = defects_box(defects, image.shape[:2])
    return _jpeg(_shrink(image[y:y + h, x:x + w], cfg.crop_max_width), cfg.jpeg_quality)


class FrameSaver:
    """Writes annotated frames or crops of results with defects under ``cfg.dir``."""

    def __init__(self, cfg: SaveConfig, quality: int = 90) -> None:
        assert cfg.dir is not None
        self.cfg = cfg
        self.dir = cfg.dir
        self.quality = quality
        self.saved = 0
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, camera: str, frame: Frame, masks: np.ndarray | None, defects: tuple[Defect, ...],
             class_names: tuple[str, ...] = ()) -> Path | None:
        if (self.cfg.only_defects and not defects) or self.saved >= self.cfg.max_files:
            return None
        image = frame.image
        if self.cfg.what == "crops" and defects:
            x, y, w, h = defects_box(defects, image.shape[:2])
            out = image[y:y + h, x:x + w]
            name = frame_file_name(camera, frame.frame_id, frame.tile, "crop")
        else:
            out = draw_mask_outlines(image, masks) if masks is not None and masks.any() else image
            out = draw_legend(out, names=class_names)
            name = frame_file_name(camera, frame.frame_id, frame.tile)
        path = self.dir / name
        path.write_bytes(_jpeg(out, self.quality))
        self.saved += 1
        return path
