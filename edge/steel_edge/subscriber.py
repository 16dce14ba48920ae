"""The subscriber side of the event contract: a small client for plant integrators, and ``steel-edge subscribe``.

``Subscriber`` wraps one ZeroMQ SUB socket: it connects to one or more daemons (or a ``steel-edge proxy``),
decodes every multipart message with ``events.decode_message`` and hands back a frozen ``Received``. It
adds the two things every integrator otherwise gets wrong:

- **Gap detection.** ``seq`` counts every message of a publisher run, whatever its kind, so a jump in it
  is a lost message (a PUB drops silently once a subscriber's queue is full). It is keyed on
  ``publisher``: the first message of a run only sets the baseline (a subscriber that starts late missed
  nothing it could have had), a new publisher id is a restart, not a gap, and a ``seq`` at or below the
  last one seen is a replay or duplicate, flagged but not a gap. Detection is only exact when the socket
  receives every kind: subscribed to ``b"result."`` only, the status and error messages in between are
  filtered out by ZeroMQ and their ``seq`` values look missing. So ``detect_gaps=None`` (the default)
  enables it only for the catch-all subscription ``b""``; pass ``True`` to force it, ``False`` to skip it.
- **A missed start is said.** Status and ``eos`` events carry ``run_start_seq``, the seq of the daemon
  run's first message; a subscriber whose first message from that run came later missed the start, and
  ``Received.missed_start`` (once per run) says which seqs, so "0 gaps" never hides lost first events.
- **Malformed messages do not kill the client.** A message ``decode_message`` refuses is skipped and
  counted in ``invalid``; ``last_error`` keeps the latest ``EventError`` and an optional ``on_invalid``
  callback sees each one with its raw frames. One bad publisher must not stop a plant's dashboard.

Endpoints are connected (the daemon binds, subscribers connect); a ``@``-prefixed endpoint is bound
instead, for a subscriber that many daemons connect to (the mirror of the daemon's ``>`` prefix).
The socket closes with linger 0 (a subscriber has nothing worth flushing); a context passed in is never
terminated, one the client created is, after the socket is closed (the other order hangs).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import zmq

from steel_edge.events import AnyEvent, EventError, decode_message

DEFAULT_RCVHWM: Final = 10_000  # ZeroMQ's 1000 is ~40 s of one camera; a slow consumer deserves more slack
_MAX_PUBLISHERS: Final = 1024  # publisher runs remembered for gap detection; the oldest is forgotten first
PROG: Final = "steel-edge subscribe"


@dataclass(frozen=True)
class Gap:
    """Messages ``first_missing..last_missing`` (inclusive) of one publisher run never arrived."""

    publisher: str
    first_missing: int
    last_missing: int

    @property
    def count(self) -> int:
        return self.last_missing - self.first_missing + 1


@dataclass(frozen=True)
class Received:
    """One decoded message: the event, its JPEG crop if any, its topic, and what seq says about it.

    ``gap`` is the run of messages lost just before this one (None if none, or detection is off);
    ``replay`` is True when this seq is at or below the last one seen from the same publisher run.
    """

    event: AnyEvent
    crop: bytes | None
    topic: bytes
    gap: Gap | None = None
    replay: bool = False
    missed_start: Gap | None = None  # the run's first messages, sent before this subscriber's first one


class GapDetector:
    """Tracks the highest ``seq`` per publisher run; ``observe`` says whether messages were lost before it."""

    def __init__(self, max_publishers: int = _MAX_PUBLISHERS) -> None:
        # Bounded: a daemon restarted every minute for a year must not grow the subscriber's memory.
        self._last: OrderedDict[str, int] = OrderedDict()
        self._first: dict[str, int] = {}  # first seq seen per run, until its start has been checked
        self._max = max_publishers

    def observe(self, publisher: str, seq: int) -> tuple[Gap | None, bool]:
        """(gap before this message or None, whether it is a replay). A replay leaves the baseline alone."""
        last = self._last.get(publisher)
        if last is None:
            self._last[publisher] = seq
            self._first[publisher] = seq
            if len(self._last) > self._max:
                gone, _ = self._last.popitem(last=False)
                self._first.pop(gone, None)
            return None, False
        self._last.move_to_end(publisher)
        if seq <= last:
            return None, True
        self._last[publisher] = seq
        gap = Gap(publisher, last + 1, seq - 1) if seq > last + 1 else None
        return gap, False

    def start(self, publisher: str, run_start_seq: int | None) -> Gap | None:
        """Once per run, given the run's first seq (from a status or eos event): the messages of the run
        sent before the first one seen here, or None."""
        first = self._first.get(publisher)
        if first is None or run_start_seq is None:
            return None
        del self._first[publisher]
        return Gap(publisher, run_start_seq, first - 1) if first > run_start_seq else None


def _as_list(items: str | bytes | Sequence[Any]) -> list[Any]:
    # A lone b"result." would otherwise iterate as integers, a lone "tcp://..." as characters.
    return [items] if isinstance(items, (str, bytes)) else list(items)


class Subscriber:
    """A SUB socket that yields decoded, gap-checked events. Use as a context manager; one thread only.

    ``endpoints``: e.g. ``"tcp://127.0.0.1:5555"`` or several; ``topics``: byte (or str) prefixes,
    ``b""`` for everything, ``events.topic("result", "cam1")`` for one camera's results exactly.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        topics: bytes | str | Sequence[bytes | str] = (b"",),
        *,
        context: zmq.Context[Any] | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        detect_gaps: bool | None = None,
        on_invalid: Callable[[EventError, list[bytes]], None] | None = None,
        secure: Callable[[zmq.Socket[bytes]], None] | None = None,
    ) -> None:
        eps = _as_list(endpoints)
        subs = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in _as_list(topics)]
        if not eps:
            raise ValueError("at least one endpoint is needed")
        if not subs:
            raise ValueError("at least one topic prefix is needed (b'' for everything)")
        if rcvhwm < 0:
            raise ValueError(f"rcvhwm must be >= 0 (0: unlimited), got {rcvhwm}")
        self.endpoints: tuple[str, ...] = tuple(eps)
        self.topics: tuple[bytes, ...] = tuple(subs)
        self.detect_gaps = (b"" in subs) if detect_gaps is None else detect_gaps
        self.on_invalid = on_invalid
        self.received = 0
        self.invalid = 0
        self.last_error: EventError | None = None
        self.gaps = 0
        self.missing = 0
        self.missed_start = 0  # messages sent before this subscriber's first one, over all runs seen
        self.replays = 0
        self._gaps = GapDetector()
        self._own_context = context is None
        self._ctx: zmq.Context[Any] = zmq.Context() if context is None else context
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        for prefix in subs:
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        if secure is not None:  # e.g. steel_edge.security.apply_client_curve, before connecting
            secure(self._sock)
        try:
            for ep in eps:
                if ep.startswith("@"):
                    self._sock.bind(ep[1:])
                else:
                    self._sock.connect(ep.removeprefix(">"))
        except zmq.ZMQError as err:
            self.close()
            raise ValueError(f"cannot open ZeroMQ endpoint {ep!r}: {err}") from err

    def recv(self, timeout: float | None = None) -> Received | None:
        """The next valid event, waiting up to ``timeout`` seconds (None: forever); None if none came.

        Invalid messages are skipped (see ``invalid``) without extending the wait.
        """
        sock = self._socket()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))
            if not sock.poll(wait_ms, zmq.POLLIN):
                return None
            frames = sock.recv_multipart()
            try:
                event, crop = decode_message(frames)
            except EventError as err:
                self.invalid += 1
                self.last_error = err
                if self.on_invalid is not None:
                    self.on_invalid(err, frames)
                continue
            self.received += 1
            gap, replay, missed = None, False, None
            if self.detect_gaps:
                gap, replay = self._gaps.observe(event.publisher, event.seq)
                if gap is not None:
                    self.gaps += 1
                    self.missing += gap.count
                self.replays += replay
                missed = self._gaps.start(event.publisher, getattr(event, "run_start_seq", None))
                if missed is not None:
                    self.missed_start += missed.count
            return Received(event=event, crop=crop, topic=frames[0], gap=gap, replay=replay, missed_start=missed)

    def __iter__(self) -> Iterator[Received]:
        """Every event, forever (until the socket is closed or the loop is left)."""
        while True:
            msg = self.recv(None)
            if msg is not None:
                yield msg

    def close(self) -> None:
        """Close the socket (linger 0) and the context if this client created it. Idempotent."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            if self._own_context:
                self._ctx.term()

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise RuntimeError("subscriber is closed")
        return self._sock

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
