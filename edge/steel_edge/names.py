"""File names for what the daemon and subscribers save: safe, and saying which camera and frame they show.

Light on purpose (no OpenCV): ``steel_edge.subscriber`` uses it and needs only pyzmq and pydantic.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # what folder sources take


def safe_name(*parts: str) -> str:
    return "_".join(_UNSAFE.sub("-", p).strip("-") or "x" for p in parts)[:200]


def frame_stem(frame_id: str) -> str:
    """The frame id without a source file's image extension (``a/b.png`` -> ``a/b``)."""
    lower = frame_id.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return frame_id[: -len(suffix)]
    return frame_id


def frame_file_name(camera: str, frame_id: str, tile: int | None = None, extra: str = "") -> str:
    """``camera_stem[_tN][_extra].jpg``: what a saved frame, or a crop of that frame, is called."""
    parts = [camera, frame_stem(frame_id)] + ([f"t{tile}"] if tile is not None else []) + ([extra] if extra else [])
    return safe_name(*parts) + ".jpg"
