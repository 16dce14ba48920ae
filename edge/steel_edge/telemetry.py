"""The daemon's counters: what ``status`` events report and, optionally, what Prometheus scrapes.

One ``Stats`` object counts per stage; the publishing loop turns a ``snapshot`` into each ``status``
event (fps and latency percentiles over the last interval, totals since start). With ``metrics.port``
set, the same numbers are served for Prometheus (``prometheus_client``, imported only then) from a
registry of our own, so nothing else in the process leaks into the scrape.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steel_edge.config import MetricsConfig

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Snapshot:
    fps: float
    p50_ms: float | None
    p99_ms: float | None
    frames_in: int
    frames_out: int
    errors: int
    reconnects: int


@dataclass
class Stats:
    """Thread-safe counters; ``frames_*`` since start, latencies since the last snapshot."""

    started: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    reconnects: int = 0
    reloads: int = 0
    _latencies: list[float] = field(default_factory=list)
    _last_out: int = 0
    _last_t: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    prom: PrometheusMetrics | None = None

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1
        if self.prom:
            self.prom.frames_in.inc()

    def frame_out(self, latency_s: float) -> None:
        with self._lock:
            self.frames_out += 1
            self._latencies.append(latency_s)
        if self.prom:
            self.prom.frames_out.inc()
            self.prom.latency.observe(latency_s)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors += 1
        if self.prom:
            self.prom.errors.labels(kind).inc()

    def reconnect(self) -> None:
        with self._lock:
            self.reconnects += 1
        if self.prom:
            self.prom.reconnects.inc()

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def snapshot(self) -> Snapshot:
        """Totals, and fps and latency since the previous snapshot (which this one resets)."""
        now = time.monotonic()
        with self._lock:
            lat, self._latencies = self._latencies, []
            dt = max(now - self._last_t, 1e-9)
            fps = (self.frames_out - self._last_out) / dt
            self._last_out, self._last_t = self.frames_out, now
            totals = (self.frames_in, self.frames_out, self.errors, self.reconnects)
        p50 = p99 = None
        if lat:
            p50, p99 = (float(v) * 1000 for v in np.percentile(np.asarray(lat), [50, 99]))
        return Snapshot(fps, p50, p99, *totals)


class PrometheusMetrics:
    """The metric families, on a private registry served by ``start``."""

    def __init__(self, camera: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels: dict[str, Any] = {"registry": self.registry}
        self.frames_in = Counter("steel_edge_frames_in", "frames read from the source", **labels)
        self.frames_out = Counter("steel_edge_frames_out", "result events published", **labels)
        self.drops = Gauge("steel_edge_drops", "frames dropped by back-pressure (live sources)", **labels)
        self.errors = Counter("steel_edge_errors", "error events published", ["kind"], **labels)
        self.reconnects = Counter("steel_edge_reconnects", "source reconnects", **labels)
        self.latency = Histogram("steel_edge_latency_seconds", "capture to publish", buckets=LATENCY_BUCKETS_S,
                                 **labels)
        self.queue_depth = Gauge("steel_edge_queue_depth", "items queued per stage", ["stage"], **labels)
        self.subscriptions = Gauge("steel_edge_subscriptions", "ZeroMQ subscriptions open", **labels)
        self.info = Gauge("steel_edge_model_info", "the loaded model (value 1)", ["camera", "sha256"], **labels)
        self.camera = camera

    def start(self, cfg: MetricsConfig) -> tuple[str, int]:
        """Serve ``/metrics`` on ``cfg.host:cfg.port`` from a daemon thread; returns the bound address."""
        from prometheus_client import start_http_server

        assert cfg.port is not None
        server, _thread = start_http_server(cfg.port, addr=cfg.host, registry=self.registry)
        self._server = server
        host, port = server.server_address[:2]
        return str(host), int(port)

    def set_model(self, sha256: str) -> None:
        self.info.clear()
        self.info.labels(self.camera, sha256).set(1)

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
