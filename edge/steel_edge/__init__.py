"""steel-edge: the light side of the product (daemon, data codec, metrics). Never imports TensorFlow."""

from __future__ import annotations

import os
from typing import Any

# OpenCV reads this once, when cv2 is first imported: refuse to decode images over 2^26 pixels (a
# decompression bomb) even if one got past steel_edge.data.imageio's own header check.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 26))


def __getattr__(name: str) -> Any:
    """``steel_edge.__version__`` on first use: nothing on the daemon's path needs the version, and
    importlib.metadata (email, zipfile, csv ...) is start-up time (with the lazy zmq.auth: 9-15 ms off the first
    event, benchmarks/first_event.py)."""
    if name != "__version__":
        raise AttributeError(f"module 'steel_edge' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("steel-edge")
    except PackageNotFoundError:  # running from a checkout with PYTHONPATH=edge:train:export
        found = "0.0.0+checkout"
    globals()["__version__"] = found
    return found
