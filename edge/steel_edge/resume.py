"""At-least-once delivery for subscribers: live events from the PUB socket, the rest from the journal.

``ResumingSubscriber`` wraps ``Subscriber`` and a ``ReplayClient`` (the daemon's replay endpoint,
``steel_edge.replay``):

1. At start it catches up: everything the journal still holds after ``resume_from`` (the last seq this
   client handled, e.g. from its state file), or everything retained when it has none. Live messages
   that arrive meanwhile wait in the SUB socket's queue.
2. Then it reads live messages. One at or below the last delivered seq is a duplicate and is dropped; one
   past a hole is preceded by the missing events fetched from the journal. So the caller sees every
   retained event once, in seq order, across subscriber restarts, gaps and slow reading.
3. Events older than the journal's retention cannot come back: ``lost`` counts them, honestly.

It follows one publisher (one daemon's journal): the one the replay endpoint serves. Live messages from
another publisher (a proxy fanning in other daemons) pass through unchanged, without recovery.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from steel_edge.events import EventError, decode_message
from steel_edge.replay import REPLAY_SCHEMA
from steel_edge.subscriber import Received, Subscriber


class ReplayError(RuntimeError):
    """The replay endpoint refused a request or did not answer."""


@dataclass(frozen=True)
class ReplayBatch:
    events: list[Received]
    publisher: str
    next_seq: int
    oldest_seq: int | None
    last_seq: int | None

    @property
    def caught_up(self) -> bool:
        return self.last_seq is None or self.next_seq > self.last_seq


class ReplayClient:
    """Asks a daemon's replay endpoint for events by seq (a DEALER socket; one request at a time)."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None, timeout: float = 10.0,
                 secure: Callable[[zmq.Socket[bytes]], None] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._secure = secure
        self._own = context is None
        self._ctx: zmq.Context[Any] = context or zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            if self._secure is not None:
                self._secure(self._sock)
            self._sock.connect(self.endpoint)
        return self._sock

    def fetch(self, from_seq: int, publisher: str | None = None, max_events: int = 1000,
              to_seq: int | None = None) -> ReplayBatch:
        req: dict[str, Any] = {"schema": REPLAY_SCHEMA, "from_seq": from_seq, "max": max_events}
        if publisher is not None:
            req["publisher"] = publisher
        if to_seq is not None:
            req["to_seq"] = to_seq
        sock = self._socket()
        sock.send(json.dumps(req).encode())
        if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
            sock.close(0)  # a late answer must not be read as the answer to the next request
            self._sock = None
            raise ReplayError(f"replay endpoint {self.endpoint} did not answer within {self.timeout} s")
        frames = sock.recv_multipart()
        if frames[0] == b"error":
            raise ReplayError(f"replay endpoint {self.endpoint}: {json.loads(frames[1]).get('error')}")
        events: list[Received] = []
        i = 0
        while frames[i] == b"event":
            topic, payload, crop = frames[i + 1], frames[i + 2], frames[i + 3]
            parts = [topic, payload] + ([crop] if crop else [])
            try:
                event, crop_out = decode_message(parts)
            except EventError as err:
                raise ReplayError(f"replay endpoint {self.endpoint}: a stored event does not decode ({err})") from err
            events.append(Received(event=event, crop=crop_out, topic=topic))
            i += 4
        if frames[i] != b"end":
            raise ReplayError(f"replay endpoint {self.endpoint}: malformed reply (frame {i} is {frames[i][:20]!r})")
        end = json.loads(frames[i + 1])
        return ReplayBatch(events, end["publisher"], int(end["next_seq"]), end["oldest_seq"], end["last_seq"])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._own:
            self._ctx.term()


class ResumingSubscriber:
    """``recv``/iterate like ``Subscriber``; every retained event once, in seq order (module docstring)."""

    def __init__(self, endpoints: str | Sequence[str], replay: str, *, resume_from: tuple[str, int] | None = None,
                 batch: int = 1000, timeout: float = 10.0,
                 secure: Callable[[zmq.Socket[bytes]], None] | None = None) -> None:
        self.sub = Subscriber(endpoints, (b"",), detect_gaps=False, secure=secure)
        self.client = ReplayClient(replay, timeout=timeout, secure=secure)
        self.batch = batch
        self.publisher: str | None = None
        self.delivered: int | None = None  # last seq handed to the caller
        self.recovered = 0  # events that came from the journal
        self.duplicates = 0  # live events dropped as already delivered
        self.lost = 0  # events past the journal's retention: gone for good
        self._resume_from = resume_from
        self._pending: deque[Received] = deque()
        self._caught_up = False

    def _fill(self, from_seq: int, to_seq: int | None) -> None:
        """Fetch from ``from_seq`` (to ``to_seq``) into the pending queue, batch by batch."""
        while True:
            got = self.client.fetch(from_seq, self.publisher, self.batch, to_seq)
            if self.publisher is None or got.publisher != self.publisher:
                self.publisher = got.publisher
            for msg in got.events:
                if msg.event.seq > from_seq:
                    self.lost += msg.event.seq - from_seq  # retention already removed these
                self._pending.append(msg)
                self.recovered += 1
                from_seq = msg.event.seq + 1
            if not got.events:
                if to_seq is not None and from_seq <= to_seq:
                    self.lost += to_seq - from_seq + 1
                return
            if got.caught_up or (to_seq is not None and from_seq > to_seq):
                return

    def _catch_up(self) -> None:
        start = 0
        if self._resume_from is not None:
            pub, seq = self._resume_from
            probe = self.client.fetch(0, None, 1)
            if probe.publisher == pub:
                self.publisher, self.delivered, start = pub, seq, seq + 1
        self._fill(start, None)
        self._caught_up = True

    def recv(self, timeout: float | None = None) -> Received | None:
        if not self._caught_up:
            self._catch_up()
        while True:
            if self._pending:
                msg = self._pending.popleft()
                if self.delivered is not None and msg.event.publisher == self.publisher \
                        and msg.event.seq <= self.delivered:
                    self.duplicates += 1
                    continue
                if msg.event.publisher == self.publisher:
                    self.delivered = msg.event.seq
                return msg
            live = self.sub.recv(timeout)
            if live is None:
                return None
            ev = live.event
            if self.publisher is None:
                self.publisher = ev.publisher
            if ev.publisher != self.publisher:
                return live  # another daemon behind a proxy: passed through, not recovered
            if self.delivered is not None and ev.seq > self.delivered + 1:
                self._fill(self.delivered + 1, ev.seq - 1)  # the hole, from the journal, before this one
            self._pending.append(live)

    def close(self) -> None:
        self.sub.close()
        self.client.close()

    def __enter__(self) -> ResumingSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
