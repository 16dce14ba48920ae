"""The capture stage and its supervisor: open the source, read it, reopen a lost live source.

Rules (docs/operations.md, "Operations"):

- A source that **never opened** is retried with back-off for at most ``live.open_timeout_s`` (a camera
  being plugged in, a stream server starting), then the run fails: an ``error`` event (fatal), an ``eos``
  with reason ``source_failed``, exit 1. A source that says it is unusable outright (``SourceError``: no
  such folder, not a video) fails at once.
- A live source that **worked and was lost** is reopened with exponential back-off (``reconnect.*``) for
  as long as ``reconnect.max_attempts`` allows (0: forever). Each loss and each failed reopen is a
  ``status`` event in state ``reconnecting``; ``reconnects`` in status events counts the successful
  reopenings, and ``attempt N`` in the log is the Nth reopening tried.
- Frames are converted to the model's float input here (``stages.pretensor``) and queued under the
  source's overflow policy; the source stays open until every frame it gave out is published (a folder
  source's ledger records each file as its event goes out); the daemon closes it after the last one.
"""

from __future__ import annotations

import logging
import time

from steel_edge.config import ReconnectConfig
from steel_edge.queues import Closed
from steel_edge.sources import EndOfStream, FrameError, Source, SourceError, SourceLost
from steel_edge.stages import POLL_S, Eos, EosReason, ErrorItem, Queued, Shared, StateItem, pretensor

log = logging.getLogger("steel_edge.daemon")


class CaptureSupervisor:
    def __init__(self, source: Source, shared: Shared, reconnect: ReconnectConfig, open_timeout_s: float) -> None:
        self.source = source
        self.shared = shared
        self.cfg = reconnect
        self.open_timeout_s = open_timeout_s

    def message(self, err: Exception) -> str:
        """The error, led by the source's spec once (sources' own errors already start with it)."""
        text = str(err)
        return text if text.startswith(self.source.spec) else f"{self.source.spec}: {text}"

    def _fail(self, err: Exception) -> EosReason:
        self.shared.fatal = True
        self.shared.post(ErrorItem("source", self.message(err), fatal=True))
        return "source_failed"

    def open_first(self) -> EosReason | None:
        """Open the source for the first time: None when open, else why the run ends."""
        deadline = time.monotonic() + self.open_timeout_s
        backoff = self.cfg.initial_s
        tries = 0
        while not self.shared.stop_event.is_set():
            tries += 1
            try:
                self.source.open()
                return None
            except SourceLost as err:
                left = deadline - time.monotonic()
                if not self.source.live or left <= 0:
                    return self._fail(SourceLost(f"{self.message(err)}; gave up after {tries} "
                                                 f"attempt(s) in {self.open_timeout_s:g} s (live.open_timeout_s)"))
                log.warning("%s: not open yet (%s); trying again in %.1f s", self.source.spec, err, min(backoff, left))
                if self.shared.stop_event.wait(min(backoff, left)):
                    break
                backoff = min(2 * backoff, self.cfg.max_s)
            except (SourceError, OSError) as err:
                return self._fail(err)
        return "interrupted"

    def reopen(self, err: Exception) -> EosReason | None:
        """A lost live source: announce, reopen with back-off; None once open again, else why the run ends."""
        if not self.source.live:
            return self._fail(err)
        self.close()
        backoff = self.cfg.initial_s
        attempt = 0
        while True:
            attempt += 1
            limit = self.cfg.max_attempts
            if limit and attempt > limit:
                return self._fail(SourceLost(f"{self.message(err)}; gave up after {limit} reconnect attempt(s) "
                                             "(reconnect.max_attempts)"))
            log.warning("%s: source lost (%s); reconnect attempt %d in %.1f s", self.source.spec, err, attempt,
                        backoff)
            self.shared.state = "reconnecting"
            self.shared.post(StateItem("reconnecting"))
            if self.shared.stop_event.wait(backoff):
                return "interrupted"
            backoff = min(2 * backoff, self.cfg.max_s)
            try:
                self.source.open()
            except SourceLost as again:
                err = again
                continue
            except (SourceError, OSError) as fatal:
                return self._fail(fatal)
            self.shared.stats.reconnect()
            log.info("%s: reconnected at attempt %d", self.source.spec, attempt)
            self.shared.post(StateItem("running"))
            return None

    def run(self) -> None:
        reason: EosReason = "interrupted"
        try:
            failed = self.open_first()
            if failed is not None:
                reason = failed
                return
            while not self.shared.stop_event.is_set():
                try:
                    frame = self.source.read(POLL_S)
                except EndOfStream:
                    reason = "complete"
                    return
                except FrameError as err:
                    self.shared.post(ErrorItem(err.kind, str(err), err.frame_id, err.file, err.quarantined_to,
                                               done=err.done))
                    continue
                except SourceLost as err:
                    failed = self.reopen(err)
                    if failed is not None:
                        reason = failed
                        return
                    continue
                if frame is None:
                    continue
                self.shared.stats.frame_in()
                if not self._queue(pretensor(self.shared.model, frame)):
                    return
        except Exception as err:  # a bug in a source: report it rather than die silently
            log.exception("capture failed")
            self.shared.fatal = True
            self.shared.post(ErrorItem("internal", f"capture: {type(err).__name__}: {err}", fatal=True))
            reason = "source_failed"
        finally:
            self.shared.frames.put(Eos(reason), force=True)

    def _queue(self, frame: Queued) -> bool:
        frames = self.shared.frames
        while True:
            try:
                frames.put(frame, timeout=POLL_S)
                self.shared.stats.drops(frames.drops)
                return True
            except TimeoutError:
                if self.shared.stop_event.is_set():
                    # shutting down: this frame was read but will not be processed; it is not acked,
                    # so a folder source hands it out again after a restart
                    return False
            except Closed:
                return False

    def close(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken camera may fail; there is nothing left to do with it
            log.debug("closing the source failed", exc_info=True)
