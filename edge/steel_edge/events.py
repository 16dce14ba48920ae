"""The event contract the edge daemon publishes on ZeroMQ: versioned JSON payloads, topics, encode/decode.

One module holds both sides (publisher and subscriber), so they cannot disagree about a field, and
``schemas/event.schema.json`` is generated from it (``python -m steel_edge.events``; a test keeps the
committed file equal to ``json_schema()``) for subscribers written in other languages.

Wire format: a ZeroMQ multipart message ``[topic, JSON payload, optional JPEG crop]``. Every payload
carries ``schema`` = ``steel-edge.event/1`` and a ``kind``: ``result`` (one per processed frame or
tile), ``status`` (periodic heartbeat and health), ``error`` (a file or frame that could not be
processed) and ``eos`` (end of stream in batch mode). A payload this runtime cannot read is refused by
``decode`` with an ``EventError`` that says what is wrong, checked in the order that gives the most
useful message: size, JSON, object, ``schema``, ``kind``, then the fields.

Decisions:

- **Topics** are ``f"{kind}.{camera}."`` as bytes, e.g. ``b"result.cam0."``. Kind first, so one
  subscription ``b"result."`` takes every camera's results; the trailing dot terminates the camera id,
  because ZeroMQ filters by byte prefix and ``b"result.cam1"`` would also match camera ``cam10``.
  Subscribe to ``topic("result", "cam1")`` for one camera exactly, ``b""`` for everything.
- **seq** counts every message of one publisher run from 0, whatever its kind, so a gap in ``seq`` is a
  lost message. ``publisher`` names the run (``new_publisher_id()``, random per process start): a
  subscriber keys its gap detection on it, so a restarted daemon whose ``seq`` starts again at 0 reads
  as a restart, not as a huge gap; and with a proxy fanning in many daemons, seqs of different runs never mix.
- **event_id** of a result is a hash of the *input's* identity (camera, source, frame_id, tile), never
  of the run or the clock: a daemon that crashes and processes the same file again publishes the same
  event_id, and a subscriber drops the duplicate. It does not include the model: a duplicate is the same
  frame reported twice, whichever model judged it. Sources must therefore name frames stably (folder
  mode: the file's path relative to the folder; a live camera's counter never repeats a frame anyway).
- **Timestamps** are ISO-8601 strings in UTC with a ``Z`` suffix, e.g. ``2026-11-24T13:48:28.123456Z``
  (the fraction is omitted when zero): unambiguous in every language and readable in ``steel-edge
  subscribe`` output, where float epochs lose the zone and read badly. Durations come precomputed by
  the daemon on its monotonic clock (``latency_ms``, ``uptime_s``), so nobody subtracts wall-clock times.
- **Size**: payloads are capped at ``MAX_EVENT_BYTES`` (1 MiB) on both sides; ``encode`` refuses to
  send what ``decode`` would refuse to read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:  # only for types: a subscriber needs neither OpenCV nor onnxruntime
    from steel_edge.contract import ModelContract
    from steel_edge.postprocess import TileResult

EVENT_SCHEMA: Final = "steel-edge.event/1"
# A result of a frame full of defects with RLEs stays far below this; a payload above it is a bug or an attack.
MAX_EVENT_BYTES: Final = 1 << 20
SCHEMA_PATH: Final = Path(__file__).parent / "schemas" / "event.schema.json"
Kind = Literal["result", "status", "error", "eos"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)

Count = Annotated[int, Field(ge=0)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
# what went wrong, in an ``error`` event; sources raise FrameError with one of these
ErrorKind = Literal["read", "decode", "frame_size", "source", "inference", "internal"]
CameraId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="camera id; safe inside a topic")]


class EventError(ValueError):
    """A payload that is not a steel-edge event this runtime understands, or one too large to send."""


class _Frozen(BaseModel):
    # The schema file describes what ``encode`` emits, which is every field: defaults are required there.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              json_schema_serialization_defaults_required=True)


class ModelInfo(_Frozen):
    """Which model produced a result: enough to tie every event to one exact ONNX file."""

    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX file's bytes")
    kind: Literal["seg", "cls"] = Field(..., description="seg: masks and defects; cls: one label per image")
    code_version: str = Field(..., description="code version that trained the model (from its contract)")

    @classmethod
    def of(cls, model: _ModelLike) -> ModelInfo:
        """From a loaded ``steel_edge.model.EdgeModel`` (or anything with ``sha256`` and ``contract``)."""
        return cls(sha256=model.sha256, kind=model.contract.kind, code_version=model.contract.code_version)


class _ModelLike(Protocol):
    """What events read from a ``steel_edge.model.EdgeModel``; a protocol so tests need no onnxruntime."""

    @property
    def sha256(self) -> str: ...

    @property
    def contract(self) -> ModelContract: ...


class FrameSize(_Frozen):
    width: int = Field(..., ge=1, description="frame width in pixels")
    height: int = Field(..., ge=1, description="frame height in pixels")


class ClassScore(_Frozen):
    class_id: int = Field(..., ge=0)
    class_name: str
    score: Score


class DefectItem(_Frozen):
    """One connected defect region, in frame pixels (``steel_edge.postprocess.Defect`` plus its class name)."""

    class_id: int = Field(..., ge=0, description="class id from the model contract")
    class_name: str = Field(..., description="human name of the class")
    score: Score = Field(..., description="mean (gated) probability over the region")
    bbox: tuple[Count, Count, Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        ..., description="[x, y, w, h] in frame pixels")
    area_px: int = Field(..., ge=1, description="pixels in the region")
    rle: str | None = Field(None, description="Kaggle RLE of the region in the frame (column-major, 1-based)")

    @model_validator(mode="after")
    def _area_fits_box(self) -> DefectItem:
        if self.area_px > self.bbox[2] * self.bbox[3]:
            raise ValueError(f"area_px {self.area_px} exceeds its bbox {self.bbox[2]}x{self.bbox[3]}")
        return self


class _Event(_Frozen):
    schema_version: Literal["steel-edge.event/1"] = Field(EVENT_SCHEMA, alias="schema",
                                                          description="payload format version")
    kind: Kind = Field(..., description="which event; each subclass fixes it")
    seq: Count = Field(..., description="per-publisher-run counter over all kinds; a gap is a lost message")
    publisher: str = Field(..., min_length=1, max_length=64, description="id of the publisher run (seq's scope)")
    camera: CameraId
    source: str = Field(..., min_length=1, description="the source string, e.g. camera0, folder:/data/in")
    published_at: AwareDatetime = Field(..., description="when the message was sent, ISO-8601 UTC")

    @field_validator("published_at", "captured_at", mode="after", check_fields=False)
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """One zone on the wire, so strings sort and compare as times."""
        return value.astimezone(timezone.utc)


class DefectEvent(_Event):
    """``result``: what the model found in one frame (or one tile of a line-scan strip)."""

    kind: Literal["result"] = "result"
    event_id: str = Field(..., pattern=r"^[0-9a-f]{32}$",
                          description="event_id_for(camera, source, frame_id, tile): same input, same id")
    frame_id: str = Field(..., min_length=1, description="frame name within the source, stable across restarts")
    tile: Count | None = Field(None, description="tile index along the strip, line-scan sources")
    strip_offset_px: Count | None = Field(None, description="strip position of the tile's first row or column")
    captured_at: AwareDatetime = Field(..., description="when the frame was captured or read, ISO-8601 UTC")
    latency_ms: float | None = Field(None, ge=0, description="capture to publish, on the daemon's monotonic clock")
    model: ModelInfo
    frame: FrameSize
    defects: tuple[DefectItem, ...] = Field(..., description="by class, then raster order")
    presence: tuple[ClassScore, ...] | None = Field(None, description="seg: presence score of every class")
    has_crop: bool = Field(False, description="the multipart message carries a third frame, a JPEG crop")

    @model_validator(mode="after")
    def _consistent(self) -> DefectEvent:
        expected = event_id_for(self.camera, self.source, self.frame_id, self.tile)
        if self.event_id != expected:
            raise ValueError(f"event_id {self.event_id!r} is not event_id_for(camera, source, frame_id, tile) "
                             f"= {expected!r}")
        for i, d in enumerate(self.defects):
            x, y, w, h = d.bbox
            if x + w > self.frame.width or y + h > self.frame.height:
                raise ValueError(f"defects.{i}: bbox {list(d.bbox)} leaves the {self.frame.width}x"
                                 f"{self.frame.height} frame")
        return self


class Latency(_Frozen):
    p50_ms: float = Field(..., ge=0)
    p99_ms: float = Field(..., ge=0)


class SinkStatus(_Frozen):
    """One output's health (``steel_edge.sinks``): can it deliver, and what it delivered and failed."""

    connected: bool = Field(..., description="able to deliver now (bound socket, open file, connected client)")
    sent: Count = Field(0, description="events delivered since start")
    errors: Count = Field(0, description="events this sink failed to deliver since start")
    queued: Count = Field(0, description="events accepted but not yet delivered")


class StatusEvent(_Event):
    """``status``: health, sent every ``interval_s``; also the heartbeat (silence for ~3 intervals = dead)."""

    kind: Literal["status"] = "status"
    interval_s: float = Field(..., gt=0, description="period of status messages")
    state: Literal["running", "reconnecting", "draining"] = Field(
        "running", description="reconnecting: the source was lost; draining: shutting down")
    uptime_s: float = Field(..., ge=0)
    fps: float = Field(..., ge=0, description="frames published per second over the last interval")
    latency: Latency | None = Field(None, description="capture-to-publish over the last interval; none if idle")
    queues: dict[str, Count] = Field(default_factory=dict, description="current depth of each stage's queue")
    frames_in: Count = Field(..., description="frames read from the source since start")
    frames_out: Count = Field(..., description="results published since start")
    drops: Count = Field(..., description="frames dropped by back-pressure since start (live sources only)")
    errors: Count = Field(0, description="error events since start")
    reconnects: Count = Field(0, description="source reconnects since start")
    journal_errors: Count = Field(0, description="events the journal failed to store since start (disk full, "
                                                 "read-only); they were still sent")
    sinks: dict[str, SinkStatus] = Field(default_factory=dict, description="each configured output's health")
    run_start_seq: Count | None = Field(
        None, description="seq of this daemon run's first message: a subscriber whose first seq from this "
                          "publisher is higher missed the start of the run")
    model: ModelInfo


class ErrorEvent(_Event):
    """``error``: one file or frame could not be processed; processing goes on unless ``fatal``."""

    kind: Literal["error"] = "error"
    error: ErrorKind = Field(
        ..., description="read: unreadable file or stream; decode: not an image; frame_size: wrong size; "
                         "source: camera lost; inference: the model failed; internal: a bug")
    message: str = Field(..., min_length=1)
    frame_id: str | None = None
    file: str | None = Field(None, description="the offending file, folder sources")
    quarantined_to: str | None = Field(None, description="where the file was moved, if it was")
    fatal: bool = Field(False, description="the daemon stops after this")


class EndOfStreamEvent(_Event):
    """``eos``: the last message of a batch run; a subscriber that saw every seq below it saw everything."""

    kind: Literal["eos"] = "eos"
    reason: Literal["complete", "interrupted", "source_failed"] = Field(
        ..., description="complete: the source ended; interrupted: SIGINT/SIGTERM; source_failed: the source could "
                         "not be opened or was given up (the error event before this one says why)")
    frames_processed: Count
    errors: Count
    last_seq: Count | None = Field(..., description="seq of the message before this one; none if it is the first")
    run_start_seq: Count | None = Field(
        None, description="seq of this run's first message: every seq from it to this one belongs to the run")

    @model_validator(mode="after")
    def _last_before(self) -> EndOfStreamEvent:
        if self.last_seq is not None and self.last_seq >= self.seq:
            raise ValueError(f"last_seq {self.last_seq} must be below this message's seq {self.seq}")
        return self


AnyEvent = DefectEvent | StatusEvent | ErrorEvent | EndOfStreamEvent
# The union as pydantic dispatches it: on ``kind``, so a validation error names one kind's fields only.
Event = Annotated[AnyEvent, Field(discriminator="kind")]
_BY_KIND: Final[dict[str, type[_Event]]] = {
    "result": DefectEvent, "status": StatusEvent, "error": ErrorEvent, "eos": EndOfStreamEvent}


def new_publisher_id() -> str:
    """A fresh id for one publisher run."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def event_id_for(camera: str, source: str, frame_id: str, tile: int | None = None) -> str:
    """128-bit hex id of one input frame (or tile). A JSON list is hashed so no separator can collide."""
    key = json.dumps([camera, source, frame_id, tile], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def topic(kind: str, camera: str | None = None) -> bytes:
    """The topic a message is published under, or with ``camera=None`` the prefix for all cameras."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; kinds: {', '.join(KINDS)}")
    return f"{kind}.{camera}.".encode() if camera is not None else f"{kind}.".encode()


def topic_of(event: AnyEvent) -> bytes:
    return topic(event.kind, event.camera)


def result_event(
    result: TileResult, *, model: _ModelLike, seq: int, publisher: str, camera: str, source: str, frame_id: str,
    captured_at: datetime, published_at: datetime | None = None, tile: int | None = None,
    strip_offset_px: int | None = None, latency_ms: float | None = None, has_crop: bool = False,
) -> DefectEvent:
    """The ``result`` event for one post-processed tile; class names and model identity from ``model``.

    The frame size is the masks' size, which post-processing produced in frame pixels.
    """
    names = dict(zip(model.contract.class_ids, model.contract.class_names, strict=True))
    height, width = result.masks.shape[-2:]
    presence = None
    if result.presence is not None:
        presence = tuple(ClassScore(class_id=c, class_name=names[c], score=float(p))
                         for c, p in zip(model.contract.class_ids, result.presence, strict=True))
    defects = tuple(DefectItem(class_id=d.class_id, class_name=names[d.class_id], score=float(d.score),
                               bbox=d.bbox, area_px=d.area_px, rle=d.rle) for d in result.defects)
    return DefectEvent(
        seq=seq, publisher=publisher, camera=camera, source=source, published_at=published_at or utcnow(),
        event_id=event_id_for(camera, source, frame_id, tile), frame_id=frame_id, tile=tile,
        strip_offset_px=strip_offset_px, captured_at=captured_at, latency_ms=latency_ms, model=ModelInfo.of(model),
        frame=FrameSize(width=int(width), height=int(height)), defects=defects, presence=presence, has_crop=has_crop)


def encode(event: AnyEvent) -> bytes:
    """Compact UTF-8 JSON; ``EventError`` if over ``MAX_EVENT_BYTES``, which no subscriber would accept."""
    data = event.model_dump_json(by_alias=True).encode("utf-8")
    if len(data) > MAX_EVENT_BYTES:
        raise EventError(f"{event.kind} event is {len(data)} bytes, over the {MAX_EVENT_BYTES}-byte "
                         "limit (drop the RLEs, or report fewer defects)")
    return data


def decode(data: bytes | str) -> AnyEvent:
    """Validate a payload and return the event of its kind; ``EventError`` naming the problem otherwise."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"payload is {len(raw)} bytes, over the {MAX_EVENT_BYTES}-byte limit")
    try:
        obj: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EventError(f"payload is not UTF-8 JSON ({err})") from err
    if not isinstance(obj, dict):
        raise EventError(f"payload must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if schema != EVENT_SCHEMA:
        what = "has no 'schema' field" if schema is None else f"has schema {schema!r}"
        raise EventError(f"payload {what}; this runtime understands {EVENT_SCHEMA!r} only")
    kind = obj.get("kind")
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"unknown event kind {kind!r}; kinds: {', '.join(KINDS)}")
    try:
        event = cls.model_validate(obj)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}" for e in err.errors())
        raise EventError(f"invalid {kind} event: {problems}") from err
    assert isinstance(event, AnyEvent)
    return event


def decode_message(frames: Sequence[bytes]) -> tuple[AnyEvent, bytes | None]:
    """A whole multipart message ``[topic, payload, crop?]`` -> (event, crop), checking the parts agree."""
    if len(frames) not in (2, 3):
        raise EventError(f"a message has 2 or 3 parts (topic, payload, optional crop), got {len(frames)}")
    event = decode(frames[1])
    if bytes(frames[0]) != topic_of(event):
        raise EventError(f"topic {bytes(frames[0])!r} does not match the payload's {topic_of(event)!r}")
    crop = bytes(frames[2]) if len(frames) == 3 else None
    if (crop is not None) != (isinstance(event, DefectEvent) and event.has_crop):
        raise EventError("a crop part is present exactly when a result says has_crop")
    return event, crop


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of every payload, for subscribers in other languages."""
    schema = TypeAdapter(Event).json_schema(by_alias=True, mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "steel-edge event",
            "description": f"One payload published by the steel-edge daemon, schema {EVENT_SCHEMA}. "
                           "Generated from steel_edge/events.py; do not edit.", **schema}


def write_json_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_json_schema()
    print(f"wrote {SCHEMA_PATH}")
