"""Image files: cheap header-only size checks and grayscale decoding with errors that name the file.

Reading a JPEG or PNG header costs microseconds, decoding it milliseconds; the loaders check every
image's size up front, so they read headers, and only decode when pixels are needed. The header reader
also lets the daemon refuse a decompression bomb before handing it to the decoder.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# JPEG start-of-frame markers carry the size; DHT (C4), JPG (C8) and DAC (CC) share the range but do not.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(ValueError):
    """An image that cannot be read: missing, truncated, not an image, or of an unexpected size."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_size(path: Path | str) -> tuple[int, int]:
    """Return (width, height) from the file header of a PNG or JPEG, without decoding pixels."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(32)
            if head.startswith(_PNG_SIGNATURE):
                if len(head) < 24 or head[12:16] != b"IHDR":
                    raise ImageReadError(path, "truncated PNG header")
                width, height = struct.unpack(">II", head[16:24])
                return int(width), int(height)
            if head.startswith(b"\xff\xd8"):
                fh.seek(2)
                return _jpeg_size(fh, path)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc.strerror or exc}") from None
    if not head:
        raise ImageReadError(path, "empty file (0 bytes)")
    raise ImageReadError(path, "not a PNG or JPEG file (unrecognised header)")


def _jpeg_size(fh, path: Path) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    while True:
        byte = fh.read(1)
        while byte == b"\xff":  # markers may be padded with fill bytes
            byte = fh.read(1)
        if not byte:
            raise ImageReadError(path, "truncated JPEG: no frame header found")
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers, no length
            byte = fh.read(1)
            if byte != b"\xff":
                raise ImageReadError(path, "corrupt JPEG: marker expected")
            continue
        raw = fh.read(2)
        if len(raw) < 2:
            raise ImageReadError(path, "truncated JPEG header")
        (length,) = struct.unpack(">H", raw)
        if marker in _SOF_MARKERS:
            body = fh.read(5)
            if len(body) < 5:
                raise ImageReadError(path, "truncated JPEG frame header")
            height, width = struct.unpack(">HH", body[1:5])
            return int(width), int(height)
        fh.seek(length - 2, 1)
        nxt = fh.read(1)
        if not nxt:
            raise ImageReadError(path, "truncated JPEG: no frame header found")
        if nxt != b"\xff":
            raise ImageReadError(path, "corrupt JPEG: marker expected")


def read_gray(path: Path | str, expect: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file into a (H, W) uint8 grayscale array.

    ``expect`` is (height, width); a mismatch raises ImageReadError naming the file and both sizes.
    """
    path = Path(path)
    if expect is not None:
        width, height = image_size(path)
        if (height, width) != expect:
            raise ImageReadError(
                path, f"image is {width}x{height}, expected {expect[1]}x{expect[0]} (width x height)"
            )
    data = np.fromfile(path, dtype=np.uint8) if path.exists() else None
    if data is None:
        raise ImageReadError(path, "file not found")
    if data.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ImageReadError(path, "cannot decode image (corrupt or not an image)")
    return image


def write_jpeg(path: Path | str, gray: np.ndarray, quality: int = 90) -> None:
    """Write a grayscale image the way Kaggle stored Severstal: a 3-channel JPEG with R=G=B."""
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageReadError(path, "JPEG encoding failed")
    Path(path).write_bytes(buf.tobytes())
