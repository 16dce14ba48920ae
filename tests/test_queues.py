"""The bounded queue's two named overflow policies."""

from __future__ import annotations

import threading
import time

import pytest

from steel_edge.queues import BoundedQueue, Closed


def test_drop_oldest_never_blocks_and_counts_each_drop() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, "drop_oldest")
    dropped = [q.put(i) for i in range(7)]
    assert dropped == [None, None, None, 0, 1, 2, 3] and q.drops == 4
    assert [q.get(0) for _ in range(3)] == [4, 5, 6] and q.get(0.01) is None


@pytest.mark.timeout(10)
def test_wait_blocks_until_room_and_times_out() -> None:
    q: BoundedQueue[int] = BoundedQueue(1, "wait")
    q.put(1)
    with pytest.raises(TimeoutError):
        q.put(2, timeout=0.05)
    threading.Timer(0.1, q.get).start()
    t0 = time.monotonic()
    q.put(3, timeout=5)
    assert time.monotonic() - t0 >= 0.05 and q.drops == 0 and q.get(0) == 3


@pytest.mark.timeout(10)
def test_close_wakes_a_blocked_put_and_force_passes_the_limit() -> None:
    q: BoundedQueue[int] = BoundedQueue(1, "wait")
    q.put(1)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            q.put(2)
        except Closed as err:
            errors.append(err)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(5)
    assert errors and not t.is_alive()
    q.put(9, force=True)  # end-of-stream markers go in whatever the state
    assert [q.get(0), q.get(0)] == [1, 9]


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue(0, "wait")
