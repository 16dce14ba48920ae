"""The ZeroMQ event contract: round trips, the committed JSON Schema, refusals, ids and topics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from steel_edge.contract import InputSpec, ModelContract, OutputSpec
from steel_edge.events import (
    EVENT_SCHEMA,
    MAX_EVENT_BYTES,
    SCHEMA_PATH,
    DefectEvent,
    EndOfStreamEvent,
    ErrorEvent,
    EventError,
    Latency,
    ModelInfo,
    StatusEvent,
    decode,
    decode_message,
    encode,
    event_id_for,
    json_schema,
    result_event,
    topic,
    topic_of,
)
from steel_edge.postprocess import Defect, PostprocessParams, TileResult

T0 = datetime(2026, 11, 24, 13, 48, 28, 123456, tzinfo=timezone.utc)
SHA = "ab" * 32
PUB = "0123456789abcdef0123456789abcdef"
COMMON: dict[str, Any] = {"publisher": PUB, "camera": "cam0", "source": "folder:/data/in", "published_at": T0}
INFO = ModelInfo(sha256=SHA, kind="seg", code_version="0.1.0+gabc")


@dataclass(frozen=True)
class FakeModel:
    """What result_event reads from an EdgeModel, without onnxruntime."""

    sha256: str
    contract: ModelContract


def _contract() -> ModelContract:
    return ModelContract(
        kind="seg", architecture="toy_seg", class_ids=(1, 2, 3, 4), class_names=("pit", "crack", "scratch", "patch"),
        input=InputSpec(height=256, width=1600),
        outputs=(OutputSpec(name="masks", layout="NCHW", activation="sigmoid"),
                 OutputSpec(name="presence", layout="NC", activation="sigmoid")),
        mask_stride=4, postprocess=PostprocessParams(), data_fingerprint="f" * 64, code_version="0.1.0+gabc",
        created_at=T0)


def _result_event(seq: int = 0, frame_id: str = "strip_0001.png", **changes: Any) -> DefectEvent:
    tile = TileResult(
        masks=np.zeros((4, 256, 1600), np.uint8),
        defects=(Defect(class_id=3, score=0.875, bbox=(10, 20, 30, 40), area_px=900, rle="8010 40"),),
        presence=(0.01, 0.02, 0.97, 0.03))
    kwargs: dict[str, Any] = {"model": FakeModel(SHA, _contract()), "seq": seq, "publisher": PUB, "camera": "cam0",
                              "source": "folder:/data/in", "frame_id": frame_id, "captured_at": T0 - timedelta(
                                  milliseconds=42), "published_at": T0, "tile": 3, "strip_offset_px": 4800,
                              "latency_ms": 41.5}
    kwargs.update(changes)
    return result_event(tile, **kwargs)


def _examples() -> list[Any]:
    return [
        _result_event(),
        StatusEvent(seq=1, **COMMON, interval_s=1.0, uptime_s=12.5, fps=23.9, latency=Latency(p50_ms=38.0, p99_ms=61.2),
                    queues={"capture": 1, "infer": 3}, frames_in=300, frames_out=298, drops=2, reconnects=0,
                    model=INFO),
        ErrorEvent(seq=2, **COMMON, error="decode", message="not an image: cv2.imdecode returned None",
                   frame_id="broken.png", file="/data/in/broken.png", quarantined_to="/data/quarantine/broken.png"),
        EndOfStreamEvent(seq=3, **COMMON, reason="complete", frames_processed=1, errors=1, last_seq=2),
    ]


@pytest.mark.parametrize("event", _examples(), ids=lambda e: e.kind)
def test_round_trip(event: Any) -> None:
    data = encode(event)
    assert data == json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode()  # compact
    back = decode(data)
    assert type(back) is type(event) and back == event
    payload = json.loads(data)
    assert payload["schema"] == EVENT_SCHEMA and payload["kind"] == event.kind
    assert payload["published_at"] == "2026-11-24T13:48:28.123456Z"


def test_result_event_from_tile_result() -> None:
    event = _result_event()
    assert event.frame.width == 1600 and event.frame.height == 256
    assert event.model == INFO
    (d,) = event.defects
    assert (d.class_id, d.class_name, d.bbox, d.area_px, d.rle) == (3, "scratch", (10, 20, 30, 40), 900, "8010 40")
    assert event.presence is not None and [p.class_name for p in event.presence] == ["pit", "crack", "scratch", "patch"]
    assert json.loads(encode(event))["captured_at"] == "2026-11-24T13:48:28.081456Z"


def test_timestamps_are_normalised_to_utc_and_naive_ones_refused() -> None:
    east = T0.astimezone(timezone(timedelta(hours=2)))
    event = _result_event(published_at=east, captured_at=east)
    assert event.published_at == event.captured_at == T0 and event.captured_at.tzinfo == timezone.utc
    with pytest.raises(ValueError, match="timezone"):
        _result_event(published_at=T0.replace(tzinfo=None))


def test_committed_schema_file_is_current() -> None:
    committed = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert committed == json_schema(), "schema file is stale: run `python -m steel_edge.events`"
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_payloads_validate_against_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema(), format_checker=jsonschema.FormatChecker())
    for event in _examples():
        validator.validate(json.loads(encode(event)))
    bad = json.loads(encode(_examples()[1]))
    bad["fps"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    del bad["fps"]
    bad["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def _payload(**changes: Any) -> bytes:
    obj = json.loads(encode(_examples()[1]))
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


@pytest.mark.parametrize(("data", "message"), [
    (b'{"schema": "steel-edge.event/1", "kind": ', "not UTF-8 JSON"),
    (b"\xff\xfe{}", "not UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (_payload(schema="steel-edge.event/2"), "has schema 'steel-edge.event/2'; this runtime understands"),
    (_payload(schema=None), "has no 'schema' field"),
    (_payload(kind="alarm"), "unknown event kind 'alarm'; kinds: result, status, error, eos"),
    (_payload(fps=-1.0), "invalid status event: fps: Input should be greater than or equal to 0"),
    (_payload(colour="red"), "invalid status event: colour: Extra inputs are not permitted"),
    (_payload(camera="cam.0"), "invalid status event: camera: String should match pattern"),
])
def test_bad_payloads_are_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message):
        decode(data)


def test_oversized_payloads_are_refused_on_both_sides() -> None:
    with pytest.raises(EventError, match=r"payload is \d+ bytes, over the 1048576-byte limit"):
        decode(b" " * (MAX_EVENT_BYTES + 1))
    huge = _result_event().model_copy(update={"source": "x" * MAX_EVENT_BYTES})
    with pytest.raises(EventError, match="result event is .* over the 1048576-byte limit"):
        encode(huge)


def test_inconsistent_results_are_refused() -> None:
    obj = json.loads(encode(_result_event()))
    with pytest.raises(EventError, match="is not event_id_for"):
        decode(json.dumps({**obj, "frame_id": "another.png"}))
    obj["defects"][0]["bbox"] = [1590, 20, 30, 40]
    with pytest.raises(EventError, match="leaves the 1600x256 frame"):
        decode(json.dumps(obj))
    with pytest.raises(EventError, match="last_seq 5 must be below"):
        decode(json.dumps({**json.loads(encode(_examples()[3])), "last_seq": 5}))


def test_event_id_is_stable_for_the_same_input() -> None:
    first = _result_event(seq=0, published_at=T0)
    again = _result_event(seq=917, published_at=T0 + timedelta(hours=1), publisher="f" * 32)  # after a restart
    assert first.event_id == again.event_id == event_id_for("cam0", "folder:/data/in", "strip_0001.png", 3)
    assert _result_event(frame_id="strip_0002.png").event_id != first.event_id
    assert _result_event(tile=4).event_id != first.event_id
    assert event_id_for("a:b", "c", "d") != event_id_for("a", "b:c", "d")  # no separator collisions


def test_topics_filter_by_kind_then_camera() -> None:
    assert [topic_of(e) for e in _examples()] == [b"result.cam0.", b"status.cam0.", b"error.cam0.", b"eos.cam0."]
    published = [topic(k, c) for k in ("result", "status") for c in ("cam1", "cam10")]

    def received(subscription: bytes) -> list[bytes]:  # ZeroMQ SUB filtering is a byte-prefix match
        return [t for t in published if t.startswith(subscription)]

    assert received(topic("result")) == [b"result.cam1.", b"result.cam10."]
    assert received(topic("result", "cam1")) == [b"result.cam1."]  # not cam10
    assert received(b"") == published
    with pytest.raises(ValueError, match="unknown event kind"):
        topic("alarm")


def test_decode_message_checks_the_parts_agree() -> None:
    event = _result_event()
    assert decode_message([topic_of(event), encode(event)]) == (event, None)
    with_crop = _result_event(has_crop=True)
    assert decode_message([topic_of(with_crop), encode(with_crop), b"\xff\xd8jpeg"]) == (with_crop, b"\xff\xd8jpeg")
    with pytest.raises(EventError, match="does not match"):
        decode_message([b"status.cam0.", encode(event)])
    with pytest.raises(EventError, match="has_crop"):
        decode_message([topic_of(event), encode(event), b"\xff\xd8"])
    with pytest.raises(EventError, match="2 or 3 parts"):
        decode_message([encode(event)])
