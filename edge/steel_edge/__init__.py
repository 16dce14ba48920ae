"""steel-edge: the light side of the product (daemon, data codec, metrics). Never imports TensorFlow."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steel-edge")
except PackageNotFoundError:  # running from a checkout with PYTHONPATH=edge:train:export
    __version__ = "0.0.0+checkout"
