"""What every frame source is: a small protocol, the frame it yields, and how it says it is done or lost.

A source is named by one string (``camera0``, ``/dev/video0``, ``line.avi``, ``rtsp://...``,
``folder:DIR``, ``synth:SEED``, ``linescan:INNER``, ``genicam:CTI``) and parsed by
``steel_edge.sources.open_source``. The daemon only ever calls ``open``, ``read(timeout)`` and ``close``:

- ``read`` returns a ``Frame``, or ``None`` when nothing arrived within ``timeout`` seconds (a live
  camera between frames, a watched folder with no new file). It never blocks much longer than ``timeout``,
  so the daemon can notice a shutdown request.
- End of stream is explicit: ``read`` raises ``EndOfStream`` (a video file's last frame was read, a
  folder in batch mode is done). It is not a special return value buried in a loop.
- ``SourceLost`` means a live source stopped delivering (camera unplugged, stream cut): the daemon
  closes it, publishes a ``status`` event in state ``reconnecting`` and opens it again with back-off.
- ``FrameError`` means one frame or file could not be used (corrupt JPEG, wrong size): the daemon
  publishes an ``error`` event for it and reads on. Folder sources move the file to quarantine first.

``live`` decides the back-pressure policy (docs/design.md): a live source's frames are dropped oldest-first
when the pipeline is behind, because the camera will not wait; a file source's frames wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from steel_edge.events import ErrorKind, utcnow

__all__ = ["EndOfStream", "ErrorKind", "Frame", "FrameError", "Source", "SourceError", "SourceLost"]


class EndOfStream(Exception):
    """The source has no more frames, ever (video file finished, folder batch done)."""


class SourceError(Exception):
    """A source that cannot be opened or used at all (bad spec, missing folder, no such device)."""


class SourceLost(SourceError):
    """A live source stopped delivering; reconnecting may bring it back."""


class FrameError(Exception):
    """One frame or file could not be used; the source itself goes on.

    ``kind`` is the error event's ``error`` field; ``file`` the offending file (folder sources),
    ``quarantined_to`` where it was moved, ``frame_id`` the frame's stable name when it has one.
    """

    def __init__(self, message: str, *, kind: ErrorKind = "read", frame_id: str | None = None,
                 file: str | None = None, quarantined_to: str | None = None,
                 done: Callable[[], None] | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.frame_id = frame_id
        self.file = file
        self.quarantined_to = quarantined_to
        # called once the error event is published (a folder source records the file as handled)
        self.done = done


def _no_op() -> None:
    return None


@dataclass(frozen=True)
class Frame:
    """One grayscale frame (or line-scan tile) as it leaves a source.

    ``frame_id`` names the frame stably within its source (folder: the path relative to the folder;
    video: the frame number; camera: a counter), so the result's ``event_id`` is the same if the same
    input is processed twice. ``t_mono`` is ``time.monotonic()`` at capture, for latency. ``done`` is
    called once the frame's event is published: a folder source records the file as processed then,
    and only then, so a crash never skips a file.
    """

    image: np.ndarray  # (H, W) uint8 gray
    frame_id: str
    t_mono: float
    captured_at: datetime = field(default_factory=utcnow)
    tile: int | None = None  # line-scan: tile index along the strip
    strip_offset_px: int | None = None  # line-scan: strip row (along the motion) of the tile's first row
    file: str | None = None  # folder sources: the file's path
    done: Callable[[], None] = field(default=_no_op, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.image.dtype != np.uint8:
            raise ValueError(f"frame {self.frame_id!r}: expected a (H, W) uint8 gray image, "
                             f"got {self.image.dtype} {self.image.shape}")


@runtime_checkable
class Source(Protocol):
    """The protocol every source implements (module docstring)."""

    spec: str  # the string it was opened from; goes into every event's ``source``
    live: bool  # True: frames are dropped oldest-first under overload; False: frames wait

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | None: ...

    def close(self) -> None: ...
