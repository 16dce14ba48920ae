"""The daemon's counters: what ``status`` events report and, optionally, what Prometheus scrapes.

One ``Stats`` object counts per stage; the publishing loop turns a ``snapshot`` into each ``status``
event (fps and latency percentiles over the last interval, totals since start). With ``metrics.port``
set, the same numbers are served for Prometheus (``prometheus_client``, imported only then) from a
registry of our own, so nothing else in the process leaks into the scrape. Counters are Prometheus
counters (exposed with ``_total``: frames, drops, errors, reconnects, per-sink events and failures);
levels are gauges (queue depths, sink up, subscriptions).

The same port answers probes for supervisors and container orchestrators: ``/healthz`` is 200 while the
publishing loop is alive (it checks in at least every status interval), ``/readyz`` is 200 when the
model is loaded, the source is open and every sink can deliver, else 503 with a JSON body saying what
is not ready.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from steel_edge.config import MetricsConfig

if TYPE_CHECKING:
    from steel_edge.sinks import SinkHealth

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

    def tile_skipped(self) -> None:
        """A seg tile the skip rule cleared without reading a mask (a cascade model skipped its decoder)."""
        if self.prom:
            self.prom.skipped.inc()

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

    def drops(self, total: int) -> None:
        """The frame queue's drop total now (counted there); the Prometheus counter follows it."""
        if self.prom:
            self.prom.count(self.prom.drops, total, "drops")

    def observe(self, queues: dict[str, int], sinks: Sequence[SinkHealth]) -> None:
        """Levels the publishing loop sees at each status event."""
        if not self.prom:
            return
        for stage, depth in queues.items():
            self.prom.queue_depth.labels(stage).set(depth)
        for h in sinks:
            self.prom.sink_up.labels(h.name).set(1 if h.connected else 0)
            self.prom.count(self.prom.sink_sent.labels(h.name), h.sent, f"sent:{h.name}")
            self.prom.count(self.prom.sink_errors.labels(h.name), h.errors, f"errors:{h.name}")
            self.prom.sink_queued.labels(h.name).set(h.queued)
            subs = h.detail.get("subscriptions")
            if isinstance(subs, int):
                self.prom.subscriptions.set(subs)

    def set_model(self, sha256: str) -> None:
        if self.prom:
            self.prom.set_model(sha256)

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
        self.drops = Counter("steel_edge_drops", "frames dropped by back-pressure (live sources)", **labels)
        self.skipped = Counter("steel_edge_tiles_skipped", "seg tiles cleared by the skip rule without reading a mask "
                               "(a cascade model did not run its mask decoder on them)", **labels)
        self.errors = Counter("steel_edge_errors", "error events published", ["kind"], **labels)
        self.reconnects = Counter("steel_edge_reconnects", "source reconnects", **labels)
        self.latency = Histogram("steel_edge_latency_seconds", "capture to publish", buckets=LATENCY_BUCKETS_S,
                                 **labels)
        self.queue_depth = Gauge("steel_edge_queue_depth", "items queued per stage", ["stage"], **labels)
        self.subscriptions = Gauge("steel_edge_subscriptions", "ZeroMQ subscriptions open", **labels)
        self.sink_up = Gauge("steel_edge_sink_up", "1 while the sink can deliver", ["sink"], **labels)
        self.sink_sent = Counter("steel_edge_sink_events", "events delivered by the sink", ["sink"], **labels)
        self.sink_errors = Counter("steel_edge_sink_errors", "events the sink failed to deliver", ["sink"], **labels)
        self.sink_queued = Gauge("steel_edge_sink_queued", "events accepted, not yet delivered", ["sink"], **labels)
        self._totals: dict[str, int] = {}
        self.info = Gauge("steel_edge_model_info", "the loaded model (value 1)", ["camera", "sha256"], **labels)
        self.camera = camera

    def count(self, counter: Any, total: int, key: str) -> None:
        """Advance ``counter`` to ``total`` (totals are kept elsewhere; a counter only goes up)."""
        delta = total - self._totals.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._totals[key] = total

    def start(self, cfg: MetricsConfig, probes: Probes | None = None) -> tuple[str, int]:
        """Serve ``/metrics`` (and ``/healthz``, ``/readyz`` with ``probes``) on ``cfg.host:cfg.port`` from a
        daemon thread; returns the bound address."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        assert cfg.port is not None
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz") and probes is not None:
                    ok, body = probes.alive() if path == "/healthz" else probes.ready()
                    self._reply(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")
                else:
                    self._reply(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes every few seconds would flood the daemon's log."""

        server = ThreadingHTTPServer((cfg.host, cfg.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="steel-edge-metrics", daemon=True).start()
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


@dataclass
class Probes:
    """Answers for ``/healthz`` and ``/readyz``: (ok, JSON body). ``heartbeat`` is the publishing loop's
    last check-in (monotonic seconds); ``ready`` lists what is not ready (empty: ready)."""

    interval_s: float
    not_ready: Callable[[], list[str]]
    heartbeat: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def alive(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.heartbeat
        ok = age <= 3 * self.interval_s + 1.0
        return ok, {"alive": ok, "last_heartbeat_s": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        problems = self.not_ready()
        return not problems, {"ready": not problems, "not_ready": problems}
