"""``linescan:INNER``: rows (or short frames) from a line-scan camera stacked into overlapping tiles.

A line-scan camera delivers the strip one line (or a few lines) at a time; the model wants tiles of its
input size. Rows run along the strip's motion, columns across it. Lines are appended to a buffer; every
time it holds ``tile_height`` rows a tile is emitted and the buffer moves on by ``tile_height -
overlap_px`` rows, so successive tiles share ``overlap_px`` rows and a defect on a tile boundary is seen
whole in one of them.

**Across the strip**, a line as wide as the tile is used as is. Otherwise ``across: resize`` scales each
incoming chunk to the tile width (INTER_AREA), and ``across: split`` cuts the line into ``ceil(W /
tile_width)`` tiles spread evenly, the last flush with the right edge (lines narrower than a tile cannot
be split: use resize).

**Naming.** ``strip_offset_px`` is the strip row of a tile's first row, counted over every line this
source delivered since it was created; ``frame_id`` is ``r{row:010d}`` (``-x{x:05d}`` added with split,
x in line pixels); ``tile`` is a running index over emitted tiles. ``t_mono``/``captured_at`` are those of
the tile's newest line, so latency counts from the moment the tile could exist.

**Ends and gaps.** At ``EndOfStream`` rows not yet in any tile (a final partial tile) are dropped and
counted in ``partial_rows_dropped``: a padded tile would show the model an edge that is not there. When
the inner source is lost, the partial tile is discarded on reopen (counted the same way) so no tile
spans the gap; the strip row count continues from the last delivered line. ``FrameError`` passes
through. An inner frame's ``done`` runs once a tile covering its last row has been published, so a
``linescan:folder:DIR`` ledger records a file only when its rows are in a published tile.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import cv2
import numpy as np

from steel_edge.config import LineScanConfig
from steel_edge.sources.base import EndOfStream, Frame, FrameError, Source, SourceError


@dataclass
class _Chunk:
    """The timing and completion callback of one inner frame's rows in the buffer."""

    last_row: int  # strip row of its last line
    t_mono: float
    captured_at: datetime
    done: list[Callable[[], None]] = field(default_factory=list)


def split_positions(width: int, tile_width: int) -> list[int]:
    """Left edges of ``ceil(width / tile_width)`` tiles spread evenly over ``width``, the last flush right."""
    n = math.ceil(width / tile_width)
    if n <= 1:
        return [0]
    return [round(i * (width - tile_width) / (n - 1)) for i in range(n)]


class LineScanSource:
    """Tiles of ``tile_height`` x ``tile_width`` assembled from an inner source's lines (module docstring)."""

    def __init__(self, spec: str, inner: Source, cfg: LineScanConfig, tile_size: tuple[int, int]) -> None:
        self.spec = spec
        self.inner = inner
        self.live = inner.live
        self.tile_height = cfg.tile_height or tile_size[0]
        self.tile_width = cfg.tile_width or tile_size[1]
        self.overlap = cfg.overlap_px
        self.step = self.tile_height - self.overlap
        if self.step <= 0:
            raise SourceError(f"{spec}: linescan.overlap_px ({self.overlap}) must be smaller than the tile "
                              f"height ({self.tile_height})")
        self.across = cfg.across
        self.partial_rows_dropped = 0
        self.rows_seen = 0  # strip rows delivered so far: the next line's strip row
        self._tile = 0
        self._pending: deque[Frame] = deque()
        self._fill = 0
        self._covered = 0
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        """Forget the rows not yet emitted (a gap in the strip), counting those no tile covered."""
        self.partial_rows_dropped += max(0, self._fill - self._covered)
        self._buf: np.ndarray | None = None
        self._fill = 0  # valid rows in _buf
        self._covered = 0  # rows at the front of _buf already in an emitted tile
        self._buf_row = self.rows_seen  # strip row of _buf[0]
        self._chunks: list[_Chunk] = []
        self._xs: list[int] = [0]
        self._line_width: int | None = None

    def open(self) -> None:
        self._pending.clear()
        self._reset_buffer()
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self._pending:
            try:
                frame = self.inner.read(max(0.0, deadline - time.monotonic()))
            except EndOfStream:
                self._reset_buffer()
                raise
            if frame is None:
                return None
            self._add(frame)
            if not self._pending and time.monotonic() >= deadline:
                return None
        return self._pending.popleft()

    def _prepare(self, frame: Frame) -> np.ndarray:
        """The chunk at the buffer's width, checking the line width a split source was set up for."""
        image = frame.image
        width = image.shape[1]
        if self.across == "resize":
            if width != self.tile_width:
                image = cv2.resize(image, (self.tile_width, image.shape[0]), interpolation=cv2.INTER_AREA)
            return image
        if width < self.tile_width:
            raise SourceError(f"{self.spec}: lines are {width} px wide, narrower than the {self.tile_width} px "
                              "tile; set linescan.across: resize")
        if self._line_width is None:
            self._line_width = width
            self._xs = split_positions(width, self.tile_width)
        elif width != self._line_width:
            raise FrameError(f"{self.spec}: line width changed from {self._line_width} to {width} px",
                             kind="frame_size", frame_id=frame.frame_id)
        return image

    def _add(self, frame: Frame) -> None:
        chunk = self._prepare(frame)
        rows = chunk.shape[0]
        if self._buf is None or self._fill + rows > self._buf.shape[0]:
            old = 0 if self._buf is None else self._buf.shape[0]
            capacity = max(2 * self.tile_height, self._fill + rows, 2 * old)
            grown = np.empty((capacity, chunk.shape[1]), np.uint8)
            if self._buf is not None:
                grown[: self._fill] = self._buf[: self._fill]
            self._buf = grown
        self._buf[self._fill: self._fill + rows] = chunk
        self._fill += rows
        self.rows_seen += rows
        self._chunks.append(_Chunk(self.rows_seen - 1, frame.t_mono, frame.captured_at, [frame.done]))
        while self._fill >= self.tile_height:
            self._emit()

    def _emit(self) -> None:
        """Queue the tile(s) at the front of the buffer, then move the buffer on by one step."""
        assert self._buf is not None
        top = self._buf_row
        bottom = top + self.tile_height - 1
        newest = self._chunks[bisect.bisect_left([c.last_row for c in self._chunks], bottom)]
        finished = [c for c in self._chunks if c.last_row <= bottom]
        callbacks = [cb for c in finished for cb in c.done]
        for c in finished:
            c.done = []
        for i, x in enumerate(self._xs):
            image = self._buf[: self.tile_height, x: x + self.tile_width].copy()
            frame_id = f"r{top:010d}" if self.across == "resize" else f"r{top:010d}-x{x:05d}"
            last = i == len(self._xs) - 1
            self._pending.append(Frame(image, frame_id, newest.t_mono, newest.captured_at, tile=self._tile,
                                       strip_offset_px=top, done=_run_all(callbacks) if last else _noop))
            self._tile += 1
        # numpy moves the rows kept (overlap and beyond) to the front in one copy
        keep = self._fill - self.step
        self._buf[:keep] = self._buf[self.step: self._fill]
        self._fill = keep
        self._covered = self.overlap
        self._buf_row += self.step
        self._chunks = [c for c in self._chunks if c.last_row >= self._buf_row]


def _noop() -> None:
    return None


def _run_all(callbacks: list[Callable[[], None]]) -> Callable[[], None]:
    """One ``done`` that runs every inner frame's ``done`` this tile completed."""

    def done() -> None:
        for cb in callbacks:
            cb()

    return done
