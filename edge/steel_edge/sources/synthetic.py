"""``synth:SEED[:COUNT]``: a fake line camera, for demos, benchmarks and the daemon's tests.

Frames come from ``steel_edge.data.synth.generate``. Generating one costs milliseconds, which would make
the source slower than a fast model, so ``open()`` renders a small ring (16 frames by default, once per
source) and the stream cycles through it: frame ``i`` shows ring slot ``i % ring`` (``generate(seed,
i % ring)``). Its labels are ``truth(frame_id)``; do not call ``generate(seed, i)`` yourself.

It behaves like a live camera: ``live`` is True, and with ``live.fps`` set frames are due at that rate
(``read`` sleeps until the next is due, never longer than ``timeout``, and returns None if it is not
due yet). A reader that falls behind does not get a burst of old frames: the schedule restarts from now,
as a camera that overwrote its buffer would. Without ``fps`` every ``read`` returns a frame at once.

**Simulated loss**, for reconnect tests: ``lose(after=N, failed_opens=K)`` makes the read after the
next N reads raise ``SourceLost`` (and every read after it, until reopened), and the next K ``open()``
calls raise ``SourceLost`` too, as an unplugged camera would; the following ``open()`` works again and
the frame index goes on where it stopped. ``after=None`` leaves reads alone (only opens fail);
``fail_after=N`` in the constructor is ``lose(after=N)`` at once.

Frames share the ring's arrays: treat ``Frame.image`` as read-only, as for every source.
"""

from __future__ import annotations

import threading
import time

from steel_edge.config import LiveConfig
from steel_edge.data.synth import SynthSample, generate
from steel_edge.events import utcnow
from steel_edge.sources.base import EndOfStream, Frame, SourceError, SourceLost

DEFAULT_RING = 16


class SynthSource:
    """Generated strip frames paced like a camera, with ground truth and simulated camera loss."""

    live = True

    def __init__(self, spec: str, seed: int, live: LiveConfig, count: int | None = None, *,
                 ring: int = DEFAULT_RING, fail_after: int | None = None) -> None:
        if ring < 1:
            raise SourceError(f"{spec}: ring must hold at least one frame, got {ring}")
        self.spec = spec
        self.seed = seed
        self.config = live
        self.count = count
        self.ring_size = ring if count is None else max(1, min(ring, count))
        self._ring: list[SynthSample] = []
        self._index = 0  # next frame index; goes on across reopen, like a strip that kept moving
        self._opened = False
        self._next_due = 0.0
        self._lock = threading.Lock()  # lose() may be called from a test thread while the daemon reads
        self._reads_before_loss: int | None = None
        self._lost = False
        self._failed_opens = 0
        self.opens = 0  # successful open() calls, for tests
        if fail_after is not None:
            self.lose(after=fail_after)

    def lose(self, after: int | None = 0, failed_opens: int = 0) -> None:
        """Simulate an unplugged camera: reads fail after ``after`` more reads (None: reads unchanged) and
        the next ``failed_opens`` opens fail."""
        with self._lock:
            if after is not None:
                self._reads_before_loss = max(0, after)
            self._failed_opens = max(0, failed_opens)

    def open(self) -> None:
        with self._lock:
            if self._failed_opens > 0:
                self._failed_opens -= 1
                raise SourceLost(f"{self.spec}: simulated camera not reachable")
            self._lost = False  # a loss scheduled by lose() but not yet reached stays scheduled
        if not self._ring:
            self._ring = [generate(self.seed, i) for i in range(self.ring_size)]
        self._next_due = time.monotonic()
        self._opened = True
        self.opens += 1

    def read(self, timeout: float) -> Frame | None:
        if not self._opened:
            raise SourceLost(f"{self.spec}: read before open()")
        with self._lock:
            if self._reads_before_loss is not None:
                if self._reads_before_loss == 0:
                    self._lost = True
                self._reads_before_loss -= 1
            if self._lost:
                self._reads_before_loss = None
                raise SourceLost(f"{self.spec}: simulated camera loss")
        if self.count is not None and self._index >= self.count:
            raise EndOfStream(f"{self.spec}: {self.count} frames")
        now = time.monotonic()
        fps = self.config.fps
        if fps:
            if now < self._next_due:
                time.sleep(min(self._next_due - now, max(timeout, 0.0)))
                now = time.monotonic()
                if now < self._next_due:
                    return None
            period = 1.0 / fps
            # a reader more than a period late gets no burst: the schedule restarts from now
            self._next_due = max(self._next_due + period, now)
        sample = self._ring[self._index % self.ring_size]
        frame = Frame(sample.image, f"{self._index:09d}", now, utcnow())
        self._index += 1
        return frame

    def close(self) -> None:
        self._opened = False

    def sample(self, frame_id: str) -> SynthSample:
        """The generated sample (image and masks) a frame of this source showed."""
        if not self._ring:
            self._ring = [generate(self.seed, i) for i in range(self.ring_size)]
        return self._ring[int(frame_id) % self.ring_size]

    def truth(self, frame_id: str) -> tuple[int, ...]:
        """The defect classes (1-4) present in a frame of this source; empty for a clean frame."""
        return self.sample(frame_id).classes
