"""steel-edge: the light side of the product (daemon, data codec, metrics). Never imports TensorFlow."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# OpenCV reads this once, when cv2 is first imported: refuse to decode images over 2^26 pixels (a
# decompression bomb) even if one got past steel_edge.data.imageio's own header check.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 26))

try:
    __version__ = version("steel-edge")
except PackageNotFoundError:  # running from a checkout with PYTHONPATH=edge:train:export
    __version__ = "0.0.0+checkout"
