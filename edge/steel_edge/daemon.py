"""The daemon: source -> preprocess -> batched inference -> post-processing -> events to every sink.

A thin pipeline of stages joined by bounded queues (``steel_edge.queues``), so decode, inference and
publishing overlap (OpenCV and onnxruntime release the GIL):

- **capture** (``steel_edge.capture.CaptureSupervisor``) owns the source: opens it, reads it, reopens a
  lost live source with back-off, converts frames to the model's input and queues them under the
  source's overflow policy (live sources drop the oldest frame and count the drop, files wait).
- **infer** (``steel_edge.stages.InferStage``) runs the model on batches of frames and nothing else: on a
  small box it is the bottleneck.
- **publish** (``steel_edge.publishing.PublishStage``, on the thread that called ``run``) post-processes
  each frame with its model's head, numbers each event once and hands it to every sink
  (``steel_edge.sinks``: ZeroMQ with journal replay and CURVE, JSON Lines), then tells the source the
  frame is done.
- **reload** (``steel_edge.reload.ModelReloader``) swaps in a changed, validated model file.

``build_daemon(cfg)`` is the one place that reads the config and wires these parts; ``Daemon`` only
starts the threads, runs the publishing loop and shuts everything down in order.

Threads: onnxruntime gets the CPUs of the process's affinity minus one (at least one) unless
``inference.threads`` says otherwise: capture (JPEG decode, ~1 ms a frame) and post-processing need a
core of their own, and an inference pool that spans every core is held up by them (measured with
``steel-edge bench``: 2 threads on 2 cores ran each batch 1.5x slower inside the pipeline than alone).

Shutdown (SIGINT/SIGTERM, or ``stop()``) sets one event: capture stops reading and closes the source,
the frames already queued are processed and published, an ``eos`` event (reason ``interrupted``) goes
out, and the sinks close (ZeroMQ with its linger). Batch mode ends the same way with reason ``complete``;
a source that could not be opened or was given up ends with ``source_failed`` and exit 1.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steel_edge.capture import CaptureSupervisor
from steel_edge.config import EdgeConfig
from steel_edge.journal import Journal, default_path
from steel_edge.model import EdgeModel, available_threads
from steel_edge.outputs import FrameSaver
from steel_edge.publisher import Publisher
from steel_edge.publishing import PublishStage
from steel_edge.queues import BoundedQueue
from steel_edge.reload import ModelReloader, load_checked
from steel_edge.replay import ReplayServer
from steel_edge.sinks import FanOut, Sequencer, ZmqSink, build_sinks
from steel_edge.sources import Source, SourceError, open_source
from steel_edge.stages import Eos, InferStage, Queued, Shared
from steel_edge.telemetry import Probes, PrometheusMetrics, Stats

log = logging.getLogger("steel_edge.daemon")
BUNDLED_MODEL = Path(__file__).parent / "models" / "default_seg.onnx"


@dataclass
class Daemon:
    """One source, one model, the configured sinks. Made by ``build_daemon``; call ``run`` (blocking) once."""

    cfg: EdgeConfig
    model_path: Path
    threads: int
    shared: Shared
    source: Source
    journal: Journal | None
    sequencer: Sequencer
    sinks: FanOut
    capture: CaptureSupervisor
    infer: InferStage
    publish: PublishStage
    reloader: ModelReloader

    # -- what callers and tests look at -----------------------------------------------------------
    @property
    def model(self) -> EdgeModel:
        return self.shared.model

    @property
    def stats(self) -> Stats:
        return self.shared.stats

    @property
    def frames(self) -> BoundedQueue[Queued | Eos]:
        """The capture -> infer queue (its ``drops`` are the live source's dropped frames)."""
        return self.shared.frames

    @property
    def zeromq(self) -> ZmqSink:
        sink = self.sinks.get("zeromq")
        assert isinstance(sink, ZmqSink)
        return sink

    @property
    def publisher(self) -> Publisher:
        assert self.zeromq.publisher is not None
        return self.zeromq.publisher

    @property
    def replay(self) -> ReplayServer | None:
        return self.zeromq.replay

    @property
    def curve(self) -> Any:
        """The ``steel_edge.security.CurveServer`` when CURVE is on, else None."""
        return self.zeromq.curve

    # -- control ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the daemon to drain and exit (what SIGINT/SIGTERM do); safe from any thread."""
        self.shared.stop_event.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: self.stop())

    def not_ready(self) -> list[str]:
        """What keeps the daemon from being ready (``/readyz``); empty when ready."""
        problems = []
        if self.shared.state != "running":
            problems.append(f"source {self.source.spec}: {self.shared.state}")
        problems += [f"sink {h.name}: not connected" for h in self.publish.health if not h.connected]
        if not self.publish.health:
            problems.append("starting")
        return problems

    def run(self) -> int:
        """Run until the source ends or ``stop``; 0 on a clean end, 1 after a fatal error."""
        cfg, shared = self.cfg, self.shared
        prom = None
        threads: list[threading.Thread] = []
        try:
            if cfg.metrics.port is not None:
                prom = PrometheusMetrics(cfg.camera)
                probes = Probes(cfg.status.interval_s, self.not_ready)
                self.publish.tick = probes.beat
                host, port = prom.start(cfg.metrics, probes)
                prom.set_model(self.model.sha256)
                shared.stats.prom = prom
                log.info("metrics on http://%s:%d/metrics (probes /healthz, /readyz)", host, port)
            log.info("camera %s: source %s (%s), model %s (%s, sha256 %s), publishing on %s", cfg.camera,
                     self.source.spec, "live" if self.source.live else "files", self.model_path.name,
                     self.model.contract.kind, self.model.sha256[:12],
                     ", ".join(self.zeromq.bound or cfg.publish.endpoints))
            self._wait_for_subscribers()
            self.sinks.start()
            if self.replay is not None:
                log.info("replay on %s (journal %s)", self.replay.endpoint, self.journal.path if self.journal else "")
            starts: list[tuple[Callable[[], None], str]] = [(self.capture.run, "capture"), (self.infer.run, "infer")]
            if cfg.reload.enabled:
                starts.append((self.reloader.run, "reload"))
            for target, name in starts:
                t = threading.Thread(target=target, name=f"steel-edge-{name}", daemon=True)
                t.start()
                threads.append(t)
            self.publish.run()
        finally:
            shared.stop_event.set()
            shared.frames.close()
            shared.out.close()
            for t in threads:
                t.join(timeout=10)
            self.capture.close()
            self.close()
            if prom is not None:
                prom.stop()
        return 1 if shared.fatal else 0

    def _wait_for_subscribers(self) -> None:
        """Hold the first message for subscribers: ``publish.wait_subscribers`` of them when set; else, for a
        run over files, up to ``publish.start_grace_s`` for the first one (ZeroMQ drops what is sent before
        a subscription arrives, so a subscriber started before a batch run would miss its start)."""
        pub = self.cfg.publish
        count, timeout = pub.wait_subscribers, pub.wait_timeout_s
        if not count and not self.source.live and pub.start_grace_s > 0 and self.zeromq.bound:
            count, timeout = 1, pub.start_grace_s
        if count and not self.zeromq.wait_for_subscribers(count, timeout, self.shared.stop_event) \
                and pub.wait_subscribers:
            log.warning("only %d of %d subscriptions arrived; starting anyway",
                        self.publisher.subscriptions, pub.wait_subscribers)

    def close(self) -> None:
        """Sinks first (sockets with their linger, files flushed), then the journal."""
        self.sinks.close()
        if self.journal is not None:
            self.journal.close()


def build_daemon(cfg: EdgeConfig, *, model: EdgeModel | None = None) -> Daemon:
    """The one place that turns a config into a running pipeline's parts (nothing runs until ``run``)."""
    if cfg.source is None:
        raise SourceError("no source: give --source (e.g. camera0, folder:DIR) or set source: in the config")
    model_path = Path(cfg.model) if cfg.model else BUNDLED_MODEL
    threads = cfg.inference.threads or max(1, available_threads() - 1)
    model = model or load_checked(model_path, cfg, threads)
    spec = model.contract.input
    exact = spec.resize == "none" and not cfg.source.startswith("linescan:")
    source = open_source(cfg.source, cfg, (spec.height, spec.width), exact_size=exact, model_sha256=model.sha256)
    policy = cfg.pipeline.overflow
    if policy == "auto":
        policy = "drop_oldest" if source.live else "wait"
    shared = Shared(model=model, params_override=cfg.postprocess,
                    frames=BoundedQueue(cfg.pipeline.queue_size, policy),
                    out=BoundedQueue(max(16, 4 * cfg.pipeline.batch_size), "wait"))
    journal = Journal(cfg.journal.path or default_path(cfg.camera), cfg.journal) if cfg.journal.enabled else None
    try:
        sinks = FanOut(build_sinks(cfg, journal))
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    sequencer = Sequencer(journal)
    saver = FrameSaver(cfg.save) if cfg.save.dir is not None else None
    return Daemon(
        cfg=cfg, model_path=model_path, threads=threads, shared=shared, source=source, journal=journal,
        sequencer=sequencer, sinks=sinks,
        capture=CaptureSupervisor(source, shared, cfg.reconnect, cfg.live.open_timeout_s),
        infer=InferStage(shared, cfg.pipeline.batch_size, cfg.pipeline.max_batch_wait_ms),
        publish=PublishStage(cfg, shared, sequencer, sinks, source.spec, saver),
        reloader=ModelReloader(model_path, cfg, threads, shared),
    )
