"""The publishing stage: post-process each frame with its model's head, build the events, number them
once (``Sequencer``), and hand them to every sink (``FanOut``); status events and the end of stream.

It runs on the thread that called ``Daemon.run``, and it alone touches the sinks (ZeroMQ sockets are not
thread-safe). After an event is out it tells the source the frame is done: a folder source records the
file in its ledger only then, so nothing is skipped after a crash (order: journal, sinks, ledger).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from steel_edge.config import EdgeConfig
from steel_edge.events import (
    AnyEvent,
    EndOfStreamEvent,
    ErrorEvent,
    Latency,
    ModelInfo,
    SinkStatus,
    StatusEvent,
    result_event,
    utcnow,
)
from steel_edge.outputs import FrameSaver, crop_jpeg
from steel_edge.postprocess import TileResult
from steel_edge.sinks import FanOut, Sequencer, SinkHealth
from steel_edge.stages import POLL_S, Eos, ErrorItem, Result, Shared, StateItem

log = logging.getLogger("steel_edge.daemon")


class PublishStage:
    def __init__(self, cfg: EdgeConfig, shared: Shared, sequencer: Sequencer, sinks: FanOut, source_spec: str,
                 saver: FrameSaver | None) -> None:
        self.cfg = cfg
        self.shared = shared
        self.sequencer = sequencer
        self.sinks = sinks
        self.source_spec = source_spec
        self.saver = saver
        self.frames_processed = 0
        self.health: list[SinkHealth] = []  # as of the last status event (read by /readyz from another thread)
        self.tick: Callable[[], None] = lambda: None  # called every turn of the loop (the /healthz heartbeat)

    def run(self) -> None:
        interval = self.cfg.status.interval_s
        shared = self.shared
        self.send_status()
        next_status = time.monotonic() + interval
        draining = False
        while True:
            self.tick()
            if shared.stop_event.is_set() and not draining:
                draining = True
                shared.state = "draining"
                self.send_status()
            item = shared.out.get(timeout=max(0.0, min(next_status - time.monotonic(), POLL_S)))
            if isinstance(item, Result):
                self.send_result(item)
            elif isinstance(item, ErrorItem):
                self.send_error(item)
            elif isinstance(item, StateItem):
                shared.state = item.state
                self.send_status()
            elif isinstance(item, Eos):
                self.send_status()
                self._send(EndOfStreamEvent(**self._head(), reason=item.reason, frames_processed=self.frames_processed,
                                            errors=shared.stats.errors, last_seq=self.sequencer.last_seq,
                                            run_start_seq=self.sequencer.run_start_seq))
                self.sinks.flush()
                log.info("end of stream (%s): %d frames, %d errors, %d drops in %.1f s", item.reason,
                         self.frames_processed, shared.stats.errors, shared.frames.drops, shared.stats.uptime())
                return
            if time.monotonic() >= next_status:
                self.send_status()
                next_status = time.monotonic() + interval

    def _head(self) -> dict[str, object]:
        return {"seq": self.sequencer.next_seq(), "publisher": self.sequencer.publisher_id,
                "camera": self.cfg.camera, "source": self.source_spec, "published_at": utcnow()}

    def _send(self, event: AnyEvent, crop: bytes | None = None) -> None:
        self.sinks.send(self.sequencer.commit(event, crop))

    def _postprocess(self, item: Result) -> TileResult:
        return item.model.head.result(item.raw, item.model.contract, item.params, item.frame.image.shape,
                                      with_rle=self.cfg.publish.rle, with_masks=self.saver is not None)

    def send_result(self, item: Result) -> None:
        f = item.frame
        try:
            result = self._postprocess(item)
        except Exception as err:  # a bug, not bad input: report it for this frame and go on
            log.exception("post-processing failed")
            self.send_error(ErrorItem("internal", f"post-processing: {type(err).__name__}: {err}", f.frame_id,
                                      f.file, done=f.done))
            return
        crop = crop_jpeg(f.image, result.defects, self.cfg.publish)
        latency = time.monotonic() - f.t_mono
        event = result_event(result, model=item.model, seq=self.sequencer.next_seq(),
                             publisher=self.sequencer.publisher_id, camera=self.cfg.camera, source=self.source_spec,
                             frame_id=f.frame_id, captured_at=f.captured_at, tile=f.tile,
                             strip_offset_px=f.strip_offset_px, latency_ms=latency * 1000, has_crop=crop is not None)
        self._send(event, crop)
        f.done()
        self.frames_processed += 1
        self.shared.stats.frame_out(latency)
        if item.model.kind == "seg" and item.params is not None and item.params.skips(result.presence):
            self.shared.stats.tile_skipped()
        if self.saver is not None:
            masks = result.masks if result.masks.shape[0] else None
            self.saver.save(self.cfg.camera, f, masks, result.defects, item.model.contract.class_names)

    def send_error(self, item: ErrorItem) -> None:
        self.shared.stats.error(item.kind)
        log.warning("error (%s): %s", item.kind, item.message)
        self._send(ErrorEvent(**self._head(), error=item.kind, message=item.message[:4000],
                              frame_id=item.frame_id, file=item.file, quarantined_to=item.quarantined_to,
                              fatal=item.fatal))
        if item.done is not None:
            item.done()

    def send_status(self) -> None:
        shared = self.shared
        stats = shared.stats
        snap = stats.snapshot()
        latency = Latency(p50_ms=snap.p50_ms, p99_ms=snap.p99_ms) if snap.p50_ms is not None else None
        queues = {"frames": len(shared.frames), "results": len(shared.out)}
        self.health = self.sinks.health()
        stats.observe(queues, self.health)
        journal = self.sequencer.journal
        self._send(StatusEvent(
            **self._head(), interval_s=self.cfg.status.interval_s, state=shared.state, uptime_s=stats.uptime(),
            fps=snap.fps, latency=latency, queues=queues, frames_in=snap.frames_in, frames_out=snap.frames_out,
            drops=shared.frames.drops, errors=snap.errors, reconnects=snap.reconnects,
            model=ModelInfo.of(shared.model), journal_errors=journal.errors if journal is not None else 0,
            sinks={h.name: SinkStatus(connected=h.connected, sent=h.sent, errors=h.errors, queued=h.queued)
                   for h in self.health},
            run_start_seq=self.sequencer.run_start_seq))
