"""A bounded queue between pipeline stages whose overflow policy is named, not implied.

``wait``: ``put`` blocks until there is room (folder and video files: a frame is never lost).
``drop_oldest``: ``put`` never blocks; when full, the oldest queued item is discarded and counted
(live cameras: the camera will not wait, and the freshest frame is the one worth inspecting, so
latency stays bounded when inference is slower than the camera). ``queue.Queue`` offers neither the
drop-oldest policy nor a count, hence this small class.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["wait", "drop_oldest"]


class Closed(Exception):
    """``put`` on a queue that was closed (the pipeline is shutting down)."""


class BoundedQueue(Generic[T]):
    def __init__(self, maxsize: int, policy: Policy) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.policy = policy
        self.drops = 0
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, timeout: float | None = None, *, force: bool = False) -> T | None:
        """Queue ``item``; returns the item dropped to make room (drop_oldest), else None.

        ``force`` queues past ``maxsize`` (end-of-stream markers must never be dropped or block).
        ``wait`` with a ``timeout`` raises ``TimeoutError`` when no room appeared in time.
        """
        with self._cond:
            if self._closed and not force:
                raise Closed("queue closed")
            dropped = None
            if not force and len(self._items) >= self.maxsize:
                if self.policy == "drop_oldest":
                    dropped = self._items.popleft()
                    self.drops += 1
                else:
                    end = None if timeout is None else time.monotonic() + timeout
                    while len(self._items) >= self.maxsize and not self._closed:
                        left = None if end is None else end - time.monotonic()
                        if left is not None and left <= 0:
                            raise TimeoutError("queue full")
                        self._cond.wait(left)
                    if self._closed:
                        raise Closed("queue closed")
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, or None when none arrived within ``timeout``."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> T | None:
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Wake every blocked ``put`` with ``Closed``; items already queued stay readable."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
