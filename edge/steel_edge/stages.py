"""What the daemon's stages hand each other (docs/design.md, "The daemon as it is built"), the state they
share, and the inference stage.

capture -> ``Queued`` -> infer -> ``Result`` / ``ErrorItem`` / ``StateItem`` / ``Eos`` -> publish. Queues are
``steel_edge.queues.BoundedQueue``: the frame queue follows the source's overflow policy (live sources drop
the oldest, files wait), the output queue always waits (the publishing loop always drains it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from steel_edge.heads import Raw
from steel_edge.model import EdgeModel
from steel_edge.postprocess import PostprocessParams
from steel_edge.queues import BoundedQueue, Closed
from steel_edge.sources import Frame
from steel_edge.sources.base import ErrorKind
from steel_edge.telemetry import Stats

log = logging.getLogger("steel_edge.daemon")
POLL_S = 0.1
EosReason = Literal["complete", "interrupted", "source_failed"]
DaemonState = Literal["running", "reconnecting", "draining"]


@dataclass(frozen=True)
class Queued:
    """A frame on its way to inference, with its input tensor when the capture thread could make it."""

    frame: Frame
    model: EdgeModel | None = None  # the model the tensor was made for (a reload may swap it meanwhile)
    tensor: np.ndarray | None = None


@dataclass(frozen=True)
class Result:
    """A frame's raw model outputs; post-processed by its model's head on the publishing thread."""

    frame: Frame
    model: EdgeModel
    raw: Raw
    params: PostprocessParams | None


@dataclass(frozen=True)
class ErrorItem:
    kind: ErrorKind
    message: str
    frame_id: str | None = None
    file: str | None = None
    quarantined_to: str | None = None
    fatal: bool = False
    done: Callable[[], None] | None = None  # run once the error event is out


@dataclass(frozen=True)
class StateItem:
    state: DaemonState


@dataclass(frozen=True)
class Eos:
    reason: EosReason


Item = Result | ErrorItem | StateItem | Eos


@dataclass
class Shared:
    """What the stages share: the running model (swapped by a reload), stop, counters, the output queue."""

    model: EdgeModel
    params_override: PostprocessParams | None
    frames: BoundedQueue[Queued | Eos]
    out: BoundedQueue[Item]
    stats: Stats = field(default_factory=Stats)
    stop_event: threading.Event = field(default_factory=threading.Event)
    state: DaemonState = "running"
    fatal: bool = False

    @property
    def params(self) -> PostprocessParams | None:
        return self.params_override or self.model.contract.postprocess

    def post(self, item: Item) -> None:
        """Hand an item to the publishing loop; it always drains, so waiting here is bounded."""
        with contextlib.suppress(Closed):
            self.out.put(item)


class InferStage:
    """Takes up to ``batch_size`` frames (waiting at most ``max_batch_wait_ms`` for a batch to fill) and runs
    the model once on the batch. It does nothing else: on a small box it is the bottleneck."""

    def __init__(self, shared: Shared, batch_size: int, max_batch_wait_ms: float) -> None:
        self.shared = shared
        self.batch_size = batch_size
        self.wait = max_batch_wait_ms / 1000

    def run(self) -> None:
        frames = self.shared.frames
        while True:
            first = frames.get(timeout=POLL_S)
            if first is None:
                continue
            if isinstance(first, Eos):
                self.shared.post(first)
                return
            batch = [first]
            eos = None
            end = time.monotonic() + self.wait
            while len(batch) < self.batch_size:
                item = frames.get(timeout=max(0.0, end - time.monotonic()))
                if item is None:
                    break
                if isinstance(item, Eos):
                    eos = item
                    break
                batch.append(item)
            try:
                self.infer(batch)
            except Exception as err:
                log.exception("inference failed")
                for q in batch:
                    self.shared.post(ErrorItem("inference", f"{type(err).__name__}: {err}", q.frame.frame_id,
                                               q.frame.file))
            if eos is not None:
                self.shared.post(eos)
                return

    def infer(self, batch: list[Queued]) -> None:
        model, params = self.shared.model, self.shared.params  # one consistent pair per batch, whatever a reload does
        ok: list[Frame] = []
        tensors = []
        for q in batch:
            f = q.frame
            try:
                tensors.append(q.tensor if q.model is model and q.tensor is not None
                               else model.to_tensor(model.fit_input(f.image)[None]))
                ok.append(f)
            except ValueError as err:
                self.shared.post(ErrorItem("frame_size", str(err), f.frame_id, f.file, done=f.done))
        if not ok:
            return
        x = tensors[0] if len(tensors) == 1 else np.concatenate(tensors)
        for f, raw in zip(ok, model.head.split(model.run_tensor(x, params)), strict=True):
            self.shared.post(Result(f, model, raw, params))


def pretensor(model: EdgeModel, frame: Frame) -> Queued:
    """Convert the frame to the model's float input on the capture thread: the inference thread is the
    pipeline's bottleneck and should only run the model (a frame of the wrong size is left for the
    inference thread to report)."""
    try:
        return Queued(frame, model, model.to_tensor(model.fit_input(frame.image)[None]))
    except ValueError:
        return Queued(frame)
