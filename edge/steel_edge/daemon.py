"""The daemon: source -> preprocess -> batched inference -> post-processing -> ZeroMQ events.

Three threads joined by bounded queues (``steel_edge.queues``), so decode, inference and publishing
overlap (OpenCV and onnxruntime release the GIL):

- **capture** reads the source (for a folder: reads and decodes the file), counts frames in, and queues
  them under the source's overflow policy: live sources drop the oldest frame and count the drop, files
  wait. It owns the source: it opens it, reopens a lost live source with exponential back-off (each loss
  is a ``status`` event in state ``reconnecting``), and closes it.
- **infer** takes up to ``batch_size`` frames (waiting at most ``max_batch_wait_ms`` for a batch to
  fill) and runs the model once on the batch. It does nothing else: on a small box it is the bottleneck.
- **publish** (the thread that called ``run``) post-processes each frame with the model's tuned rules and
  owns the ZeroMQ socket: it sends every result, error, status and end-of-stream event, then tells the
  source the frame is done (a folder source records the file in its ledger only then, so nothing is
  skipped after a crash), and saves frames when asked.

Threads: onnxruntime gets the CPUs of the process's affinity minus one (at least one) unless
``inference.threads`` says otherwise: capture (JPEG decode, ~1 ms a frame) and post-processing need a
core of their own, and an inference pool that spans every core is held up by them (measured with
``steel-edge bench``: 2 threads on 2 cores ran each batch 1.5x slower inside the pipeline than alone).

Shutdown (SIGINT/SIGTERM, or ``stop()``) sets one event: capture stops reading and closes the source,
the frames already queued are processed and published, an ``eos`` event (reason ``interrupted``) goes
out, and the socket closes with its linger. Batch mode ends the same way with reason ``complete``.

The model is hot-reloaded when its file changes: the new file is loaded and validated in the background
(same kind and input size), then swapped in between two batches; a file that fails is refused with an
``error`` event and the old model keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import zmq

from steel_edge.config import EdgeConfig
from steel_edge.events import (
    AnyEvent,
    EndOfStreamEvent,
    ErrorEvent,
    Latency,
    ModelInfo,
    StatusEvent,
    result_event,
    utcnow,
)
from steel_edge.journal import Journal, default_path
from steel_edge.model import EdgeModel, ModelContractError, available_threads, load_model
from steel_edge.outputs import FrameSaver, crop_jpeg
from steel_edge.postprocess import Defect, PostprocessParams, TileResult, postprocess
from steel_edge.publisher import Publisher
from steel_edge.queues import BoundedQueue, Closed
from steel_edge.replay import ReplayServer
from steel_edge.sources import EndOfStream, Frame, FrameError, Source, SourceError, SourceLost, open_source
from steel_edge.sources.base import ErrorKind
from steel_edge.telemetry import PrometheusMetrics, Stats

log = logging.getLogger("steel_edge.daemon")
BUNDLED_MODEL = Path(__file__).parent / "models" / "default_seg.onnx"
_POLL_S = 0.1


@dataclass(frozen=True)
class _Result:
    """A frame's raw model outputs; post-processed on the publishing thread (see ``_send_result``)."""

    frame: Frame
    model: EdgeModel
    outputs: np.ndarray  # seg: (4, h, w) probabilities; cls: (C,) class probabilities
    presence: np.ndarray | None  # seg: (4,)
    params: PostprocessParams | None


@dataclass(frozen=True)
class _Queued:
    """A frame on its way to inference, with its input tensor when the capture thread could make it."""

    frame: Frame
    model: EdgeModel | None = None  # the model the tensor was made for (a reload may swap it meanwhile)
    tensor: np.ndarray | None = None


@dataclass(frozen=True)
class _Error:
    kind: ErrorKind
    message: str
    frame_id: str | None = None
    file: str | None = None
    quarantined_to: str | None = None
    fatal: bool = False
    done: Callable[[], None] | None = None  # run once the error event is out


@dataclass(frozen=True)
class _State:
    state: Literal["running", "reconnecting", "draining"]


@dataclass(frozen=True)
class _Eos:
    reason: Literal["complete", "interrupted"]


_Item = _Result | _Error | _State | _Eos


class Daemon:
    """One source, one model, one publisher. Build it, then call ``run`` (blocking) from one thread."""

    def __init__(self, config: EdgeConfig, *, model: EdgeModel | None = None) -> None:
        if config.source is None:
            raise SourceError("no source: give --source (e.g. camera0, folder:DIR) or set source: in the config")
        self.cfg = config
        self.model_path = Path(config.model) if config.model else BUNDLED_MODEL
        self.threads = config.inference.threads or max(1, available_threads() - 1)
        self.model = model or load_model(self.model_path, threads=self.threads,
                                         spinning=config.inference.spinning, providers=config.inference.providers)
        _check_pin(self.model, config.security.model_sha256)
        spec = self.model.contract.input
        self.tile_size = (spec.height, spec.width)
        exact = spec.resize == "none" and not config.source.startswith("linescan:")
        self.source: Source = open_source(config.source, config, self.tile_size, exact_size=exact)
        policy = config.pipeline.overflow
        if policy == "auto":
            policy = "drop_oldest" if self.source.live else "wait"
        self.frames: BoundedQueue[_Queued | _Eos] = BoundedQueue(config.pipeline.queue_size, policy)
        self.out: BoundedQueue[_Item] = BoundedQueue(max(16, 4 * config.pipeline.batch_size), "wait")
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.state: Literal["running", "reconnecting", "draining"] = "running"
        self._ctx = zmq.Context()
        self.curve = None
        self.journal: Journal | None = None
        self.replay: ReplayServer | None = None
        try:
            if config.security.curve_secret_key is not None:
                from steel_edge.security import CurveServer

                if config.security.curve_allowed_clients is None:
                    raise SourceError("security.curve_secret_key needs security.curve_allowed_clients (a folder "
                                      "of subscriber public keys)")
                self.curve = CurveServer(self._ctx, config.security.curve_secret_key,
                                         config.security.curve_allowed_clients)
                self.curve.start()
            if config.journal.enabled:
                self.journal = Journal(config.journal.path or default_path(config.camera), config.journal)
            self.publisher = Publisher(config.publish, self._ctx, journal=self.journal, secure=self.curve)
            if self.journal is not None and config.journal.replay_endpoint:
                self.replay = ReplayServer(self._ctx, config.journal.replay_endpoint, self.journal.path,
                                           config.journal.replay_max_batch, secure=self.curve)
        except BaseException:
            self._close_zmq()
            raise
        self.saver = FrameSaver(config.save) if config.save.dir is not None else None
        self.fatal = False
        self.frames_processed = 0
        self._threads: list[threading.Thread] = []

    @property
    def params(self) -> PostprocessParams | None:
        return self.cfg.postprocess or self.model.contract.postprocess

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the daemon to drain and exit (what SIGINT/SIGTERM do); safe from any thread."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: self.stop())

    def run(self) -> int:
        """Run until the source ends or ``stop``; 0 on a clean end, 1 after a fatal error."""
        prom = None
        if self.cfg.metrics.port is not None:
            prom = PrometheusMetrics(self.cfg.camera)
            host, port = prom.start(self.cfg.metrics)
            prom.set_model(self.model.sha256)
            self.stats.prom = prom
            log.info("metrics on http://%s:%d/metrics", host, port)
        log.info("camera %s: source %s (%s), model %s (%s, sha256 %s), publishing on %s", self.cfg.camera,
                 self.source.spec, "live" if self.source.live else "files", self.model_path.name,
                 self.model.contract.kind, self.model.sha256[:12], ", ".join(self.publisher.bound or
                                                                            self.cfg.publish.endpoints))
        try:
            if self.cfg.publish.wait_subscribers:
                got = self.publisher.wait_for_subscribers(self.cfg.publish.wait_subscribers,
                                                          self.cfg.publish.wait_timeout_s, self.stop_event)
                if not got:
                    log.warning("only %d of %d subscriptions arrived; starting anyway",
                                self.publisher.subscriptions, self.cfg.publish.wait_subscribers)
            if self.replay is not None:
                self.replay.start()
                log.info("replay on %s (journal %s)", self.replay.endpoint, self.journal.path if self.journal else "")
            self._start(self._capture_loop, "capture")
            self._start(self._infer_loop, "infer")
            if self.cfg.reload.enabled:
                self._start(self._reload_loop, "reload")
            self._publish_loop()
        finally:
            self.stop_event.set()
            self.frames.close()
            self.out.close()
            for t in self._threads:
                t.join(timeout=10)
            self._close_source()
            self._close_zmq()
            if prom is not None:
                prom.stop()
        return 1 if self.fatal else 0

    def _close_zmq(self) -> None:
        """Sockets first (with their linger), then the authenticator, then the context: the other order hangs."""
        if getattr(self, "replay", None) is not None:
            self.replay.close()  # type: ignore[union-attr]
        if getattr(self, "publisher", None) is not None:
            self.publisher.close()
        if self.journal is not None:
            self.journal.close()
        if self.curve is not None:
            self.curve.stop()
        self._ctx.term()

    def _start(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=f"steel-edge-{name}", daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _post(self, item: _Item) -> None:
        """Hand an item to the publishing loop; it always drains, so waiting here is bounded."""
        with contextlib.suppress(Closed):
            self.out.put(item)

    # -- capture -------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        reason: Literal["complete", "interrupted"] = "interrupted"
        opened = False
        backoff = self.cfg.reconnect.initial_s
        attempts = 0
        try:
            while not self.stop_event.is_set():
                if not opened:
                    try:
                        self.source.open()
                    except SourceLost as err:
                        if not self._lost(err, attempts := attempts + 1, backoff):
                            return
                        backoff = min(2 * backoff, self.cfg.reconnect.max_s)
                        continue
                    except (SourceError, OSError) as err:
                        self.fatal = True
                        self._post(_Error("source", self._source_message(err), fatal=True))
                        return
                    opened = True
                    if attempts:
                        log.info("%s: reconnected after %d attempt(s)", self.source.spec, attempts)
                        self._post(_State("running"))
                    attempts, backoff = 0, self.cfg.reconnect.initial_s
                try:
                    frame = self.source.read(_POLL_S)
                except EndOfStream:
                    reason = "complete"
                    return
                except FrameError as err:
                    self._post(_Error(err.kind, str(err), err.frame_id, err.file, err.quarantined_to,
                                      done=err.done))
                    continue
                except SourceLost as err:
                    self.stats.reconnect()
                    self._close_source()
                    opened = False
                    if not self._lost(err, attempts := attempts + 1, backoff):
                        return
                    continue
                if frame is None:
                    continue
                self.stats.frame_in()
                if not self._queue_frame(self._pretensor(frame)):
                    return
        except Exception as err:  # a bug in a source: report it rather than die silently
            log.exception("capture failed")
            self.fatal = True
            self._post(_Error("internal", f"capture: {type(err).__name__}: {err}", fatal=True))
        finally:
            # the source stays open until every frame it gave out is published: a folder source's
            # ledger records each file as its event goes out; run() closes it after the last one
            self.frames.put(_Eos(reason), force=True)

    def _pretensor(self, frame: Frame) -> _Queued:
        """Convert the frame to the model's float input here, on the capture thread: the inference thread
        is the pipeline's bottleneck and should only run the model (a frame of the wrong size is left for
        the inference thread to report)."""
        model = self.model
        try:
            return _Queued(frame, model, model.to_tensor(model.fit_input(frame.image)[None]))
        except ValueError:
            return _Queued(frame)

    def _queue_frame(self, frame: _Queued) -> bool:
        while True:
            try:
                self.frames.put(frame, timeout=_POLL_S)
                if self.stats.prom:
                    self.stats.prom.drops.set(self.frames.drops)
                return True
            except TimeoutError:
                if self.stop_event.is_set():
                    # shutting down: this frame was read but will not be processed; it is not acked,
                    # so a folder source hands it out again after a restart
                    return False
            except Closed:
                return False

    def _source_message(self, err: Exception) -> str:
        """The error, led by the source's spec once (sources' own errors already start with it)."""
        message = str(err)
        return message if message.startswith(self.source.spec) else f"{self.source.spec}: {message}"

    def _lost(self, err: Exception, attempts: int, backoff: float) -> bool:
        """A lost live source: announce, wait ``backoff``; False when it is time to give up."""
        log.warning("%s: source lost (%s); reconnect attempt %d in %.1f s", self.source.spec, err, attempts, backoff)
        self.state = "reconnecting"
        self._post(_State("reconnecting"))
        limit = self.cfg.reconnect.max_attempts
        if not self.source.live or (limit and attempts > limit):
            self.fatal = True
            self._post(_Error("source", self._source_message(err), fatal=True))
            return False
        return not self.stop_event.wait(backoff)

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken camera may fail; there is nothing left to do with it
            log.debug("closing the source failed", exc_info=True)

    # -- inference -----------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        bs = self.cfg.pipeline.batch_size
        wait = self.cfg.pipeline.max_batch_wait_ms / 1000
        while True:
            first = self.frames.get(timeout=_POLL_S)
            if first is None:
                continue
            if isinstance(first, _Eos):
                self._post(first)
                return
            batch = [first]
            eos = None
            end = time.monotonic() + wait
            while len(batch) < bs:
                item = self.frames.get(timeout=max(0.0, end - time.monotonic()))
                if item is None:
                    break
                if isinstance(item, _Eos):
                    eos = item
                    break
                batch.append(item)
            try:
                self._infer(batch)
            except Exception as err:
                log.exception("inference failed")
                for q in batch:
                    self._post(_Error("inference", f"{type(err).__name__}: {err}", q.frame.frame_id, q.frame.file))
            if eos is not None:
                self._post(eos)
                return

    def _infer(self, batch: list[_Queued]) -> None:
        model, params = self.model, self.params  # one consistent pair per batch, whatever a reload does
        ok: list[Frame] = []
        tensors = []
        for q in batch:
            f = q.frame
            try:
                tensors.append(q.tensor if q.model is model and q.tensor is not None
                               else model.to_tensor(model.fit_input(f.image)[None]))
                ok.append(f)
            except ValueError as err:
                self._post(_Error("frame_size", str(err), f.frame_id, f.file, done=f.done))
        if not ok:
            return
        x = tensors[0] if len(tensors) == 1 else np.concatenate(tensors)
        outputs = model.run_tensor(x)
        if model.contract.kind == "seg":
            probs, presence = outputs
            for i, f in enumerate(ok):
                self._post(_Result(f, model, probs[i], presence[i], params))
        else:
            for i, f in enumerate(ok):
                self._post(_Result(f, model, outputs[0][i], None, None))

    # -- publishing ----------------------------------------------------------------------------
    def _publish_loop(self) -> None:
        interval = self.cfg.status.interval_s
        self._send_status()
        next_status = time.monotonic() + interval
        draining = False
        while True:
            if self.stop_event.is_set() and not draining:
                draining = True
                self.state = "draining"
                self._send_status()
            item = self.out.get(timeout=max(0.0, min(next_status - time.monotonic(), _POLL_S)))
            if isinstance(item, _Result):
                self._send_result(item)
            elif isinstance(item, _Error):
                self._send_error(item)
            elif isinstance(item, _State):
                self.state = item.state
                self._send_status()
            elif isinstance(item, _Eos):
                self._send_status()
                self._send(EndOfStreamEvent(**self._head(), reason=item.reason, frames_processed=self.frames_processed,
                                            errors=self.stats.errors, last_seq=self.publisher.last_seq))
                log.info("end of stream (%s): %d frames, %d errors, %d drops in %.1f s", item.reason,
                         self.frames_processed, self.stats.errors, self.frames.drops, self.stats.uptime())
                return
            if time.monotonic() >= next_status:
                self._send_status()
                next_status = time.monotonic() + interval

    def _head(self) -> dict[str, object]:
        return {"seq": self.publisher.next_seq(), "publisher": self.publisher.publisher_id,
                "camera": self.cfg.camera, "source": self.source.spec, "published_at": utcnow()}

    def _send(self, event: AnyEvent, crop: bytes | None = None) -> None:
        self.publisher.send(event, crop)

    def _postprocess(self, item: _Result) -> TileResult:
        if item.model.contract.kind != "seg":
            return _cls_result(item.outputs, item.model, item.frame.image.shape)
        assert item.params is not None
        spec = item.model.contract.input
        return postprocess(item.outputs, item.presence, item.params, (spec.height, spec.width),
                           with_rle=self.cfg.publish.rle, with_masks=self.saver is not None)

    def _send_result(self, item: _Result) -> None:
        f = item.frame
        try:
            result = self._postprocess(item)
        except Exception as err:  # a bug, not bad input: report it for this frame and go on
            log.exception("post-processing failed")
            self._send_error(_Error("internal", f"post-processing: {type(err).__name__}: {err}", f.frame_id, f.file,
                                    done=f.done))
            return
        crop = crop_jpeg(f.image, result.defects, self.cfg.publish)
        latency = time.monotonic() - f.t_mono
        head = self._head()
        event = result_event(result, model=item.model, seq=head["seq"], publisher=self.publisher.publisher_id,  # type: ignore[arg-type]
                             camera=self.cfg.camera, source=self.source.spec, frame_id=f.frame_id,
                             captured_at=f.captured_at, tile=f.tile, strip_offset_px=f.strip_offset_px,
                             latency_ms=latency * 1000, has_crop=crop is not None)
        self._send(event, crop)
        f.done()
        self.frames_processed += 1
        self.stats.frame_out(latency)
        if self.saver is not None:
            masks = result.masks if result.masks.shape[0] else None
            self.saver.save(self.cfg.camera, f.frame_id, f.image, masks, result.defects)

    def _send_error(self, item: _Error) -> None:
        self.stats.error(item.kind)
        log.warning("error (%s): %s", item.kind, item.message)
        self._send(ErrorEvent(**self._head(), error=item.kind, message=item.message[:4000],
                              frame_id=item.frame_id, file=item.file, quarantined_to=item.quarantined_to,
                              fatal=item.fatal))
        if item.done is not None:
            item.done()

    def _send_status(self) -> None:
        snap = self.stats.snapshot()
        latency = Latency(p50_ms=snap.p50_ms, p99_ms=snap.p99_ms) if snap.p50_ms is not None else None
        queues = {"frames": len(self.frames), "results": len(self.out)}
        if self.stats.prom:
            for stage, depth in queues.items():
                self.stats.prom.queue_depth.labels(stage).set(depth)
            self.stats.prom.subscriptions.set(self.publisher.poll_subscriptions())
        self._send(StatusEvent(**self._head(), interval_s=self.cfg.status.interval_s, state=self.state,
                               uptime_s=self.stats.uptime(), fps=snap.fps, latency=latency, queues=queues,
                               frames_in=snap.frames_in, frames_out=snap.frames_out, drops=self.frames.drops,
                               errors=snap.errors, reconnects=snap.reconnects, model=ModelInfo.of(self.model),
                               journal_errors=self.journal.errors if self.journal is not None else 0))

    # -- model hot reload ----------------------------------------------------------------------
    def _reload_loop(self) -> None:
        last = _stat(self.model_path)
        pending = None
        while not self.stop_event.wait(self.cfg.reload.poll_s):
            now = _stat(self.model_path)
            if now == last or now is None:
                pending = None
                continue
            if now != pending:  # changed since the last look: wait one more poll for the writer to finish
                pending = now
                continue
            last, pending = now, None
            self._reload()

    def _reload(self) -> None:
        try:
            new = load_model(self.model_path, threads=self.threads, spinning=self.cfg.inference.spinning,
                             providers=self.cfg.inference.providers)
            _check_pin(new, self.cfg.security.model_sha256)
            old = self.model.contract
            if new.contract.kind != old.kind or new.contract.input != old.input:
                raise ModelContractError(
                    f"{self.model_path}: the new model is a {new.contract.kind} model with input "
                    f"{new.contract.input.width}x{new.contract.input.height}; the running one is a {old.kind} model "
                    f"with input {old.input.width}x{old.input.height} (restart the daemon to change either)")
        except (ModelContractError, OSError) as err:
            self._post(_Error("inference", f"model reload refused, the old model keeps running: {err}"))
            return
        if new.sha256 == self.model.sha256:
            return
        self.model = new  # one reference assignment: the next batch uses it, the current one finishes
        self.stats.reloads += 1
        if self.stats.prom:
            self.stats.prom.set_model(new.sha256)
        log.info("model reloaded: %s (sha256 %s)", self.model_path, new.sha256[:12])
        self._post(_State(self.state))


def _check_pin(model: EdgeModel, pinned: str | None) -> None:
    if pinned is not None and model.sha256 != pinned:
        raise ModelContractError(f"{model.path}: sha256 is {model.sha256}, but security.model_sha256 pins {pinned}; "
                                 "refusing to run a model other than the pinned one")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _cls_result(probs: np.ndarray, model: EdgeModel, shape: tuple[int, ...]) -> TileResult:
    """A classifier's answer as a result: its top class as one defect covering the frame, every
    class probability as ``presence`` (NEU-style models have no defect-free class)."""
    h, w = int(shape[0]), int(shape[1])
    top = int(np.argmax(probs))
    defect = Defect(class_id=model.contract.class_ids[top], score=float(probs[top]), bbox=(0, 0, w, h), area_px=w * h)
    return TileResult(masks=np.zeros((0, h, w), np.uint8), defects=(defect,),
                      presence=tuple(float(p) for p in probs))
