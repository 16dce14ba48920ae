"""The ZeroMQ sink's socket: one XPUB socket and the multipart wire format (``steel_edge.sinks.zeromq``).

XPUB rather than PUB: subscribers see no difference (XPUB speaks the PUB protocol), but the daemon
receives each subscription, so batch mode can hold its first message until the expected subscribers are
listening (``publish.wait_subscribers``). ZeroMQ drops whatever a PUB sends before a subscription has
arrived, so without this a batch run's first results would be lost to a subscriber that started a
moment too late.

Endpoints: a plain or ``@``-prefixed endpoint is bound (the default ``tcp://127.0.0.1:5555`` is
loopback; another interface must be named explicitly), a ``>``-prefixed one is connected, which is how a
daemon feeds a ``steel-edge proxy``. The socket is used by one thread only (ZeroMQ sockets are not
thread-safe): the daemon's publishing loop. ``close`` lingers ``linger_ms`` so queued messages leave
before the context ends (closing after terminating the context hangs the process).

Send never blocks: a subscriber whose queue reached ``sndhwm`` loses messages (ZeroMQ's PUB rule), which
it detects as a gap in ``seq`` and recovers from the journal through the replay endpoint. Numbering and
the journal are not this socket's business: ``steel_edge.sinks.sequencer`` does both before any sink.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from steel_edge.config import PublishConfig


class Publisher:
    """``secure``: a ``steel_edge.security.CurveServer`` applied to the socket before it binds."""

    def __init__(self, cfg: PublishConfig, context: zmq.Context | None = None, *, secure: Any = None) -> None:
        self.cfg = cfg
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        if secure is not None:
            secure.apply(self._sock)
        self._sock.setsockopt(zmq.SNDHWM, cfg.sndhwm)
        self._sock.setsockopt(zmq.LINGER, cfg.linger_ms)
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscribe, also repeats of a topic
        self.bound: list[str] = []
        try:
            for ep in cfg.endpoints:
                if ep.startswith(">"):
                    self._sock.connect(ep[1:])
                else:
                    self._sock.bind(ep.lstrip("@"))
                    self.bound.append(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except zmq.ZMQError as err:
            self.close()
            raise OSError(f"cannot open ZeroMQ endpoint {ep!r}: {err}") from err
        self.subscriptions = 0
        self.sent = 0

    def send(self, topic: bytes, payload: bytes, crop: bytes | None = None) -> None:
        """Send one message ``[topic, payload, crop?]``; never blocks (see the module's note on ``sndhwm``)."""
        self._sock.send_multipart([topic, payload] if crop is None else [topic, payload, crop], copy=False)
        self.sent += 1

    def poll_subscriptions(self) -> int:
        """Read pending subscription notices (keeping the socket's inbox empty); subscriptions now open."""
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def wait_for_subscribers(self, count: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until ``count`` subscriptions arrived, ``timeout`` passed or ``stop`` was set."""
        end = time.monotonic() + timeout
        while self.poll_subscriptions() < count:
            if time.monotonic() >= end or (stop is not None and stop.is_set()):
                return False
            self._sock.poll(50, zmq.POLLIN)
        # the subscription reached us, so the subscriber's filter is in place: nothing sent now is lost
        return True

    def close(self) -> None:
        self._sock.close(linger=self.cfg.linger_ms)
        if self._own_context:
            self._ctx.term()
