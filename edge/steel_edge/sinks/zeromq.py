"""The ZeroMQ sink: the XPUB publisher, the journal's replay endpoint and CurveZMQ, with one context.

Subscribers connect to ``publish.endpoints`` (``steel_edge.publisher``) and fetch what they missed from
``journal.replay_endpoint`` (``steel_edge.replay``); with ``security.curve_secret_key`` both sockets
encrypt and authenticate (``steel_edge.security``). Close order matters: sockets (with their linger),
then the authenticator, then the context; the other order hangs the process.
"""

from __future__ import annotations

import threading
from typing import Any

import zmq

from steel_edge.config import EdgeConfig
from steel_edge.endpoints import replay_endpoint_for
from steel_edge.journal import Journal
from steel_edge.publisher import Publisher
from steel_edge.replay import ReplayServer
from steel_edge.sinks.base import Outgoing, SinkHealth


class ZmqSink:
    name = "zeromq"

    def __init__(self, cfg: EdgeConfig, journal: Journal | None) -> None:
        self.cfg = cfg
        self._ctx = zmq.Context()
        self.curve: Any = None
        self.publisher: Publisher | None = None
        self.replay: ReplayServer | None = None
        try:
            if cfg.security.curve_secret_key is not None:
                from steel_edge.security import CurveServer, SecurityError

                if cfg.security.curve_allowed_clients is None:
                    raise SecurityError("security.curve_secret_key needs security.curve_allowed_clients (a folder "
                                        "of subscriber public keys)")
                self.curve = CurveServer(self._ctx, cfg.security.curve_secret_key, cfg.security.curve_allowed_clients)
                self.curve.start()
            self.publisher = Publisher(cfg.publish, self._ctx, secure=self.curve)
            endpoint = cfg.journal.replay_endpoint
            if endpoint == "auto":
                endpoint = replay_endpoint_for(self.publisher.bound[0] if self.publisher.bound
                                               else cfg.publish.endpoints[0])
            if journal is not None and endpoint:
                self.replay = ReplayServer(self._ctx, endpoint, journal.path, cfg.journal.replay_max_batch,
                                           secure=self.curve)
        except BaseException:
            self.close()
            raise

    @property
    def bound(self) -> list[str]:
        return self.publisher.bound if self.publisher is not None else []

    def start(self) -> None:
        if self.replay is not None:
            self.replay.start()

    def wait_for_subscribers(self, count: int, timeout: float, stop: threading.Event | None = None) -> bool:
        assert self.publisher is not None
        return self.publisher.wait_for_subscribers(count, timeout, stop)

    def send(self, out: Outgoing) -> None:
        assert self.publisher is not None
        self.publisher.send(out.topic, out.payload, out.crop)

    def flush(self) -> None:
        """ZeroMQ flushes on close, within ``publish.linger_ms``; nothing to do before."""

    def health(self) -> SinkHealth:
        pub = self.publisher
        subs = pub.poll_subscriptions() if pub is not None else 0
        detail: dict[str, int | str] = {"subscriptions": subs}
        if self.replay is not None:
            detail["replay"] = self.replay.endpoint
        return SinkHealth(self.name, connected=pub is not None and bool(pub.bound or self.cfg.publish.endpoints),
                          sent=pub.sent if pub is not None else 0, detail=detail)

    def close(self) -> None:
        if self.replay is not None:
            self.replay.close()
            self.replay = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self.curve is not None:
            self.curve.stop()
            self.curve = None
        if not self._ctx.closed:
            self._ctx.term()
