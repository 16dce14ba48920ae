"""OpenCV sources: a local camera (``camera0``, ``/dev/video0``), a network stream, a video file.

All three are thin adapters over ``cv2.VideoCapture``; what they add is what OpenCV leaves to the caller:

- **Failure is loud.** ``VideoCapture(0)`` with no camera does not raise, it returns a capture whose
  ``isOpened()`` is False, and a failed read returns ``(False, None)``. Here a live source that cannot be
  opened or stops delivering raises ``SourceLost`` (the daemon reconnects), a file that cannot be read
  raises ``SourceError`` and a finished file raises ``EndOfStream``.
- **Streams do not hang.** Without timeouts an FFmpeg read on a dead RTSP/HTTP stream blocks for about
  30 s; ``StreamSource`` passes ``live.open_timeout_s`` and ``live.read_timeout_s`` to FFmpeg.
- **Frames are gray uint8**, whatever the device delivers (BGR, BGRA, 16-bit).
- **Frame ids never repeat.** A live frame's id is ``OPENSTAMP-COUNTER``: the UTC time of ``open()``
  (made strictly increasing within the process) and a per-open counter, so frames after a reconnect, or
  after a daemon restart, never reuse an id (event ids hash it). A video file's frame id is its frame
  number, so processing the same file twice yields the same ids.

``cap.read()`` blocks until the device delivers a frame; for a running camera that is at most one frame
period, which is what ``read(timeout)`` accepts instead of a capture thread.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from steel_edge.config import LiveConfig
from steel_edge.events import utcnow
from steel_edge.sources.base import EndOfStream, Frame, SourceError, SourceLost

_stamp_lock = threading.Lock()
_last_stamp_ms = 0


def open_stamp() -> str:
    """A UTC time string (ms) strictly later than any this process returned before: the live id prefix."""
    global _last_stamp_ms
    with _stamp_lock:
        ms = max(int(time.time() * 1000), _last_stamp_ms + 1)
        _last_stamp_ms = ms
    when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return when.strftime("%Y%m%dT%H%M%S") + f".{ms % 1000:03d}Z"


def to_gray(image: np.ndarray) -> np.ndarray:
    """The (H, W) uint8 gray version of what a capture returned (gray, BGR, BGRA; 8 or 16 bit)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"unsupported frame type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim != 2:
        raise SourceError(f"unsupported frame shape {image.shape}")
    return np.ascontiguousarray(image)


class _Capture:
    """What every OpenCV source shares: the ``cv2.VideoCapture`` it holds and releasing it."""

    _cap: Any = None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _LiveCapture(_Capture):
    """What a camera and a stream share: read, loss detection, ids; subclasses only open the capture."""

    live = True

    def __init__(self, spec: str, live: LiveConfig) -> None:
        self.spec = spec
        self.config = live
        self._cap: Any = None
        self._stamp = ""
        self._n = 0
        self._last_frame = 0.0

    def _open_capture(self) -> Any:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        self._cap = self._open_capture()
        self._stamp = open_stamp()
        self._n = 0
        self._last_frame = time.monotonic()

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise SourceLost(f"{self.spec}: read before open()")
        ok, image = self._cap.read()
        now = time.monotonic()
        if not ok or image is None:
            raise SourceLost(f"{self.spec}: no frame from the device (unplugged, stream ended or timed out)")
        if now - self._last_frame > self.config.read_timeout_s and self._n > 0:
            # the frame did come, but after a stall longer than allowed: treat the gap as a loss
            raise SourceLost(f"{self.spec}: no frame for {now - self._last_frame:.1f} s "
                             f"(read_timeout_s={self.config.read_timeout_s})")
        self._last_frame = now
        frame = Frame(to_gray(image), f"{self._stamp}-{self._n:09d}", now, utcnow())
        self._n += 1
        return frame


class CameraSource(_LiveCapture):
    """A local camera by index (``camera0``) or device path (``/dev/video0``); V4L2 on Linux."""

    def __init__(self, spec: str, device: int | str, live: LiveConfig) -> None:
        super().__init__(spec, live)
        self.device = device

    def _open_capture(self) -> Any:
        if sys.platform.startswith("linux") and hasattr(cv2, "CAP_V4L2"):
            cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceLost(f"{self.spec}: camera {self.device!r} could not be opened "
                             "(no such device, in use by another process, or no permission)")
        if self.config.frame_width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.frame_width)
        if self.config.frame_height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.frame_height)
        # honoured by backends that support it; otherwise the loss check in read() still applies
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.config.read_timeout_s * 1000)
        return cap


class StreamSource(_LiveCapture):
    """A network stream (rtsp, http, ...) through FFmpeg, with open and read timeouts from ``live``."""

    def __init__(self, spec: str, url: str, live: LiveConfig) -> None:
        super().__init__(spec, live)
        self.url = url

    def _open_capture(self) -> Any:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000)]
        start = time.monotonic()
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            took = time.monotonic() - start
            if took < 0.9 * self.config.open_timeout_s:  # an answer, not a timeout: say so, and how fast
                raise SourceLost(f"{self.spec}: stream could not be opened: refused, unreachable or not a video "
                                 f"stream (failed after {took:.1f} s)")
            raise SourceLost(f"{self.spec}: stream could not be opened within {self.config.open_timeout_s:g} s "
                             "(live.open_timeout_s): no answer from the server")
        return cap


class VideoFileSource(_Capture):
    """A video file, frame by frame, never dropping one; ``EndOfStream`` after the last frame."""

    live = False

    def __init__(self, spec: str, path: Path) -> None:
        self.spec = spec
        self.path = Path(path)
        self._cap: Any = None
        self._n = 0

    def open(self) -> None:
        self.close()
        if not self.path.is_file():
            raise SourceError(f"{self.spec}: no such file")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.spec}: cannot be read as a video (unknown format or corrupt file)")
        self._cap = cap
        self._n = 0

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.spec}: read before open()")
        ok, image = self._cap.read()
        if not ok or image is None:
            if self._n == 0:
                raise SourceError(f"{self.spec}: the file holds no readable frame")
            raise EndOfStream(f"{self.spec}: {self._n} frames")
        frame = Frame(to_gray(image), f"{self._n:09d}", time.monotonic(), utcnow())
        self._n += 1
        return frame
