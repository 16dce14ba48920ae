"""Image files: cheap header-only size checks and grayscale decoding with errors that name the file.

Reading a JPEG or PNG header costs microseconds, decoding it milliseconds; the loaders check every
image's size up front, so they read headers, and only decode when pixels are needed. The header reader
also lets the daemon refuse a decompression bomb before handing it to the decoder.

Hostile or broken input (the daemon reads whatever lands in a folder) is refused here, before OpenCV
sees it, with an ``ImageReadError`` that names the file:

- **Format by content, not by name.** Only JPEG, PNG, BMP and TIFF signatures are handed to the
  decoder; text, HTML or random bytes named ``.jpg`` are "not an image" without calling OpenCV, which
  would otherwise try every codec it has.
- **Decompression bombs.** The size is read from the header and an image over ``MAX_IMAGE_PIXELS``
  (64 Mi pixels) is refused (``ImageTooLarge``) without decoding, so a 1 KB file claiming 60000x60000
  never allocates gigabytes. As a second line, ``OPENCV_IO_MAX_IMAGE_PIXELS`` is set to the same limit
  (unless already set), which covers formats whose header we do not parse (TIFF); OpenCV reads it once,
  when ``cv2`` is first imported, so it only takes effect in a process that imports this module first.
  Files over ``MAX_FILE_BYTES`` are refused from ``fstat`` before they are read.
- **Truncation.** OpenCV may return a partly decoded image for a JPEG cut inside its scan data (libjpeg
  only warns and fills the rest grey), which would put a made-up frame in front of the model. So a JPEG
  must have an EOI marker (``FFD9``) after the start of its scan data (trailing padding or appended
  data after it is allowed) and a PNG's chunk list must run intact up to ``IEND``; otherwise the file is
  refused as truncated.
- **Channels and depth** are converted, not refused: colour and RGBA images become 8-bit gray by OpenCV's
  luma conversion (alpha dropped; Severstal's JPEGs are R=G=B, where luma is that channel), and 16-bit
  images are scaled to 8 bits by taking the high byte (``>> 8``, a full-range 16-bit image keeps its
  look; a 12-bit camera must scale to the full range itself, or its frames come out dark).
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO, Final

# A second line of defence behind our header check; must be set before OpenCV first decodes anything.
MAX_IMAGE_PIXELS: Final = 1 << 26  # 64 Mi pixels: 160 Severstal frames (1600x256); far beyond any line camera
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402  (after the environment variable above, on purpose)
import numpy as np  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Bigger than any honest 64 Mi-pixel JPEG/PNG/BMP/TIFF of 8-bit gray or colour; refused before reading.
MAX_FILE_BYTES: Final = 256 << 20

# JPEG start-of-frame markers carry the size; DHT (C4), JPG (C8) and DAC (CC) share the range but do not.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS: Final = 0xDA
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


class ImageReadError(ValueError):
    """An image that cannot be read: missing, truncated, not an image, or of an unexpected size."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ImageFileError(ImageReadError):
    """The file itself could not be read: gone, not a regular file, a link not followed, too big, I/O error."""


class ImageTooLarge(ImageReadError):
    """The header declares more than ``MAX_IMAGE_PIXELS`` (a decompression bomb, or simply too big)."""


def display_path(path: Path | str) -> str:
    """``path`` as text any UTF-8 consumer (JSON, logs) accepts.

    A Linux file name is bytes; one that is not UTF-8 reaches Python with lone surrogates, which JSON
    encoders refuse. Those bytes are shown as ``\\xff`` escapes instead; open the file by its real path.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_size(path: Path | str) -> tuple[int, int]:
    """Return (width, height) from the file header of a PNG or JPEG, without decoding pixels."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(32)
            if head.startswith(_PNG_SIGNATURE):
                return _png_size(head, path)
            if head.startswith(b"\xff\xd8"):
                fh.seek(2)
                width, height, _ = _jpeg_header(fh, path, until_scan=False)
                return width, height
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc.strerror or exc}") from None
    if not head:
        raise ImageReadError(path, "empty file (0 bytes)")
    raise ImageReadError(path, "not a PNG or JPEG file (unrecognised header)")


def _png_size(head: bytes, path: Path) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ImageReadError(path, "truncated PNG header")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _jpeg_header(fh: BinaryIO, path: Path, *, until_scan: bool) -> tuple[int, int, int]:
    """Walk the JPEG segments after SOI: (width, height, offset of the scan data or -1).

    With ``until_scan`` the walk goes on past the frame header to the first SOS, so a file cut inside its
    headers is told apart from one cut inside its scan data.
    """
    size: tuple[int, int] | None = None
    while True:
        byte = fh.read(1)
        while byte == b"\xff":  # markers may be padded with fill bytes
            byte = fh.read(1)
        if not byte:
            what = "no scan data" if size else "no frame header found"
            raise ImageReadError(path, f"truncated JPEG: {what}")
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers, no length
            byte = fh.read(1)
            if byte != b"\xff":
                raise ImageReadError(path, "corrupt JPEG: marker expected")
            continue
        if marker == 0xD9:
            raise ImageReadError(path, "corrupt JPEG: end of image before any scan data")
        raw = fh.read(2)
        if len(raw) < 2:
            raise ImageReadError(path, "truncated JPEG header")
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            raise ImageReadError(path, f"corrupt JPEG: segment length {length}")
        if marker in _SOF_MARKERS and size is None:
            body = fh.read(5)
            if len(body) < 5:
                raise ImageReadError(path, "truncated JPEG frame header")
            height, width = struct.unpack(">HH", body[1:5])
            size = int(width), int(height)
            if not until_scan:
                return size[0], size[1], -1
            fh.seek(length - 2 - 5, 1)
        elif marker == _SOS:
            if size is None:
                raise ImageReadError(path, "corrupt JPEG: scan data before the frame header")
            fh.seek(length - 2, 1)
            return size[0], size[1], fh.tell()
        else:
            fh.seek(length - 2, 1)
        nxt = fh.read(1)
        if not nxt:
            what = "no scan data" if size else "no frame header found"
            raise ImageReadError(path, f"truncated JPEG: {what}")
        if nxt != b"\xff":
            raise ImageReadError(path, "corrupt JPEG: marker expected")


def _png_check(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) of a PNG in memory whose chunk list runs intact from IHDR to IEND."""
    width, height = _png_size(data[:32], path)
    pos, idat = 8, False
    while True:
        if pos + 8 > len(data):
            raise ImageReadError(path, "truncated PNG: no IEND chunk (file cut short)")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise ImageReadError(path, f"truncated PNG: {ctype.decode('latin-1')!r} chunk cut short")
        if ctype == b"IDAT":
            idat = True
        elif ctype == b"IEND":
            if not idat:
                raise ImageReadError(path, "corrupt PNG: no image data (IDAT) before IEND")
            return width, height  # anything after IEND is padding and ignored, as decoders do
        pos = end


def _bmp_size(data: bytes, path: Path) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageReadError(path, "truncated BMP header")
    (header_len,) = struct.unpack("<I", data[14:18])
    if header_len == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))  # negative height: top-down rows


def checked_size(data: bytes, path: Path | str = "<bytes>") -> tuple[int, int]:
    """(width, height) of an encoded image in memory, after the checks of the module docstring.

    Raises ``ImageReadError`` for an empty, unknown, truncated or corrupt file and ``ImageTooLarge``
    for one whose header declares more than ``MAX_IMAGE_PIXELS``; nothing is decoded. TIFF sizes are
    not parsed (0, 0 is returned): OpenCV's own pixel limit guards them.
    """
    path = Path(path)
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    if data.startswith(_PNG_SIGNATURE):
        width, height = _png_check(data, path)
    elif data.startswith(b"\xff\xd8"):
        fh = io.BytesIO(data)
        fh.seek(2)
        width, height, scan = _jpeg_header(fh, path, until_scan=True)
        # Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so an FFD9
        # after the scan start is the end-of-image marker; without it, the file was cut short.
        if data.rfind(b"\xff\xd9", scan) < 0:
            raise ImageReadError(path, "truncated JPEG: no end-of-image marker (file cut short)")
    elif data.startswith(b"BM"):
        width, height = _bmp_size(data, path)
    elif data.startswith(_TIFF_SIGNATURES):
        return 0, 0
    else:
        raise ImageReadError(path, "not an image: no JPEG, PNG, BMP or TIFF signature")
    if width == 0 or height == 0:
        raise ImageReadError(path, f"corrupt image header: size {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(path, f"header declares {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                                  f"over the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit; not decoded")
    return width, height


def decode_jpeg_strict(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """A JPEG decoded to (H, W) uint8 gray, or ``ImageReadError`` naming the file when its compressed data is
    corrupt.

    libjpeg decodes a damaged JPEG that still has its end marker, prints "Corrupt JPEG data: ..." on the
    process's stderr (naming no file) and returns an image with garbage in it; OpenCV passes that on
    silently. ``simplejpeg`` (libjpeg-turbo) in strict mode turns those warnings into errors, so the damaged
    file is refused and named. Its gray output is bit-identical to OpenCV's ``IMREAD_GRAYSCALE`` (checked on
    real Severstal and synthetic frames, ``tests/test_bad_inputs.py``), so the file is decoded once.
    """
    import simplejpeg

    try:
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
    except ValueError as err:
        raise ImageReadError(Path(path), f"corrupt JPEG data ({err}); libjpeg would decode garbage") from None
    return np.ascontiguousarray(image[..., 0])


def decode_gray(data: bytes, path: Path | str = "<bytes>",
                expect: tuple[int, int] | None = None, *, strict_jpeg: bool = False) -> np.ndarray:
    """Check (``checked_size``) and decode an encoded image in memory into (H, W) uint8 gray.

    ``expect`` is (height, width); a mismatch raises ``ImageReadError`` from the header, before decoding.
    ``strict_jpeg`` refuses a JPEG whose compressed data is corrupt (``decode_jpeg_strict``); the daemon's
    folder source sets it. Colour, alpha and 16-bit images are converted (module docstring).
    """
    path = Path(path)
    width, height = checked_size(data, path)
    if expect is not None and width and (height, width) != expect:
        raise ImageReadError(path, f"image is {width}x{height}, expected {expect[1]}x{expect[0]} (width x height)")
    if strict_jpeg and data.startswith(b"\xff\xd8"):
        image = decode_jpeg_strict(data, path)
    else:
        image = _decode_opencv(data, path)
    if expect is not None and image.shape != expect:
        raise ImageReadError(path, f"image is {image.shape[1]}x{image.shape[0]}, expected {expect[1]}x{expect[0]} "
                                   "(width x height)")
    return np.ascontiguousarray(image)


def _decode_opencv(data: bytes, path: Path) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:  # OpenCV's own pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS) raises, not returns None
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageTooLarge(path, f"over OpenCV's pixel limit ({os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS')}); "
                                      "not decoded") from None
        raise ImageReadError(path, f"cannot decode image: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageReadError(path, "cannot decode image (corrupt or not an image)")
    if image.dtype != np.uint8:  # IMREAD_GRAYSCALE already gives 8 bits; a defensive high-byte fallback
        image = (np.right_shift(image, 8) if image.dtype == np.uint16 else image).astype(np.uint8)
    return image


def read_bytes(path: Path | str, *, follow_symlinks: bool = True) -> bytes:
    """The whole file, read once through one descriptor; ``ImageFileError`` if that cannot be done.

    ``follow_symlinks=False`` opens with ``O_NOFOLLOW``, so a link swapped in after a directory listing
    is refused rather than followed. ``O_NONBLOCK`` keeps a FIFO named like an image from blocking the
    read forever; its ``fstat`` then shows it is no regular file. Over ``MAX_FILE_BYTES`` is refused unread.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageFileError(path, "file not found (deleted or renamed before it could be read)") from None
    except OSError as exc:
        if not follow_symlinks and os.path.islink(path):
            raise ImageFileError(path, "is a symbolic link; links are not followed") from None
        raise ImageFileError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError(path, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageFileError(path, f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit; not read")
        chunks, total = [], 0
        while total <= MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise ImageFileError(path, f"file grew over the {MAX_FILE_BYTES}-byte limit while read; not read")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageFileError(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_gray(path: Path | str, expect: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file into a (H, W) uint8 grayscale array.

    ``expect`` is (height, width); a mismatch raises ImageReadError naming the file and both sizes.
    The file is read once and checked from memory (``decode_gray``): truncated files, non-images and
    decompression bombs are refused before decoding.
    """
    return decode_gray(read_bytes(path), path, expect)


def write_jpeg(path: Path | str, gray: np.ndarray, quality: int = 90) -> None:
    """Write a grayscale image the way Kaggle stored Severstal: a 3-channel JPEG with R=G=B."""
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageReadError(path, "JPEG encoding failed")
    Path(path).write_bytes(buf.tobytes())
