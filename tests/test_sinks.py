"""The sink seam: numbering once before every sink, the JSON Lines sink, sink health, /healthz and /readyz."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon_helpers import make_config, running
from steel_edge.config import JsonlConfig
from steel_edge.data.synth import write_dataset
from steel_edge.events import (
    DefectEvent,
    EndOfStreamEvent,
    ModelInfo,
    StatusEvent,
    decode,
    utcnow,
)
from steel_edge.sinks import FanOut, JsonlSink, Outgoing, Sequencer, SinkHealth


def _status(seq: int, publisher: str = "p" * 16) -> StatusEvent:
    info = ModelInfo(sha256="0" * 64, kind="seg", code_version="test")
    return StatusEvent(seq=seq, publisher=publisher, camera="c0", source="synth:0", published_at=utcnow(),
                       interval_s=1.0, uptime_s=1.0, fps=0.0, frames_in=0, frames_out=0, drops=0, model=info)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_jsonl_sink_beside_zeromq_gets_every_event_with_the_same_numbering(tmp_path: Path) -> None:
    """The issue's acceptance: a 500-frame batch run, ZeroMQ subscriber and JSON Lines file agree event for event."""
    data = tmp_path / "data"
    write_dataset(data, images=500, seed=11)
    out = tmp_path / "report" / "events.jsonl"
    cfg = make_config(f"folder:{data / 'train_images'}", tmp_path / "state",
                      jsonl={"path": str(out), "kinds": ["result", "status", "error", "eos"]})
    with running(cfg) as run:
        eos = run.until_eos(timeout=500)
    assert eos.frames_processed == 500 and eos.reason == "complete"
    zmq_events = run.events
    file_events = [decode(line) for line in out.read_text().splitlines()]
    assert len(file_events) == len(zmq_events)
    assert [(e.seq, e.publisher, e.kind) for e in file_events] == [(e.seq, e.publisher, e.kind) for e in zmq_events]
    zmq_ids = [e.event_id for e in zmq_events if isinstance(e, DefectEvent)]
    file_ids = [e.event_id for e in file_events if isinstance(e, DefectEvent)]
    assert len(zmq_ids) == 500 and file_ids == zmq_ids
    # byte for byte the payload ZeroMQ carried, so no sink can disagree about a field
    assert [e.model_dump() for e in file_events] == [e.model_dump() for e in zmq_events]
    statuses = [e for e in file_events if isinstance(e, StatusEvent)]
    assert statuses and {"zeromq", "jsonl"} <= set(statuses[-1].sinks)
    assert statuses[-1].sinks["jsonl"].connected and statuses[-1].sinks["jsonl"].errors == 0


def test_jsonl_default_kinds_make_a_batch_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, images=4, seed=3)
    out = tmp_path / "events.jsonl"
    cfg = make_config(f"folder:{data / 'train_images'}", tmp_path / "state", jsonl={"path": str(out)})
    with running(cfg) as run:
        run.until_eos()
    kinds = [line["kind"] for line in _lines(out)]
    assert kinds == ["result"] * 4 + ["eos"]  # results and the end of the batch; no heartbeats


def test_jsonl_rotation_keeps_lines_whole_and_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    sink = JsonlSink(JsonlConfig(path=path, max_bytes=4096, keep=2, fsync="every", kinds=("status",)))
    seq = Sequencer()
    for _ in range(60):
        sink.send(seq.commit(_status(seq.next_seq())))
    sink.close()
    files = sorted(tmp_path.glob("ev.jsonl*"))
    assert [f.name for f in files] == ["ev.jsonl", "ev.jsonl.1", "ev.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    seqs = [int(line["seq"]) for f in (files[2], files[1], files[0]) for line in _lines(f)]  # type: ignore[call-overload]
    assert seqs == list(range(seqs[0], 60))  # contiguous, whole lines, the oldest rotated away
    assert sink.health().detail["rotations"] >= 3 and sink.health().errors == 0


def test_jsonl_write_failure_is_counted_and_the_next_event_tries_again(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    sink = JsonlSink(JsonlConfig(path=path, kinds=("status",)))
    seq = Sequencer()
    sink.send(seq.commit(_status(seq.next_seq())))
    assert sink._file is not None
    sink._file.close()  # what a vanished disk looks like to the writer
    sink.send(seq.commit(_status(seq.next_seq())))
    assert sink.health().errors == 1 and not sink.health().connected
    sink.send(seq.commit(_status(seq.next_seq())))  # reopened
    sink.close()
    assert [line["seq"] for line in _lines(path)] == [0, 2]
    assert "ev.jsonl" in str(sink.health().detail["last_error"])


def test_jsonl_refuses_an_unwritable_path_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=r"jsonl.path .*file/ev.jsonl"):
        JsonlSink(JsonlConfig(path=blocker / "ev.jsonl"))


class _Broken:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def start(self) -> None: ...

    def send(self, out: Outgoing) -> None:
        self.calls += 1
        raise ConnectionError("peer went away")

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def health(self) -> SinkHealth:
        return SinkHealth(self.name, connected=False)


def test_one_failing_sink_does_not_cost_the_others_an_event(tmp_path: Path) -> None:
    good = JsonlSink(JsonlConfig(path=tmp_path / "ok.jsonl", kinds=("status",)))
    broken = _Broken()
    fan = FanOut([broken, good])
    seq = Sequencer()
    for _ in range(3):
        fan.send(seq.commit(_status(seq.next_seq())))
    fan.close()
    assert broken.calls == 3 and len(_lines(tmp_path / "ok.jsonl")) == 3
    health = {h.name: h for h in fan.health()}
    assert health["broken"].errors == 3 and health["jsonl"].errors == 0 and health["jsonl"].sent == 3


def test_sequencer_numbers_once_and_refuses_out_of_order(tmp_path: Path) -> None:
    seq = Sequencer()
    out = seq.commit(_status(0, seq.publisher_id))
    assert isinstance(out, Outgoing) and out.topic == b"status.c0." and seq.next_seq() == 1
    with pytest.raises(ValueError, match="not the next seq 1"):
        seq.commit(_status(5, seq.publisher_id))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.timeout(120)
def test_metrics_port_answers_healthz_and_readyz_and_counts_drops_as_a_counter(tmp_path: Path) -> None:
    cfg = make_config("synth:1", tmp_path / "state", once=False, live={"fps": 400}, metrics={"port": 0},
                      jsonl={"path": str(tmp_path / "ev.jsonl")}, pipeline={"queue_size": 1})
    with running(cfg) as run:
        run.until(lambda e: isinstance(e, StatusEvent) and e.frames_out > 0)
        run.until(lambda e: isinstance(e, StatusEvent))  # sink health as of a status event
        server = run.daemon.stats.prom._server  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{server.server_address[1]}"
        deadline = time.monotonic() + 30
        while True:
            code, body = _get(f"{base}/readyz")
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 200 and json.loads(body) == {"ready": True, "not_ready": []}
        code, body = _get(f"{base}/healthz")
        assert code == 200 and json.loads(body)["alive"] is True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, metrics = _get(f"{base}/metrics")
            if 'steel_edge_sink_events_total{sink="jsonl"}' in metrics and "steel_edge_drops_total" in metrics:
                break
            time.sleep(0.3)
        assert code == 200
        assert "# TYPE steel_edge_drops_total counter" in metrics and "steel_edge_drops_total" in metrics
        assert 'steel_edge_sink_up{sink="zeromq"} 1.0' in metrics and 'steel_edge_sink_up{sink="jsonl"} 1.0' in metrics
        assert _get(f"{base}/nothing")[0] == 404
        run.daemon.shared.state = "reconnecting"  # what a lost camera looks like to the probe
        code, body = _get(f"{base}/readyz")
        assert code == 503 and "reconnecting" in body


@pytest.mark.timeout(120)
def test_a_subscriber_started_before_a_batch_run_gets_every_event(tmp_path: Path) -> None:
    """With default publish settings (no wait_subscribers), a subscriber that was already waiting receives
    the whole run: its first event is the run's first, and the eos arrives."""
    import subprocess
    import sys

    from daemon_helpers import free_endpoint
    from steel_edge.subscriber import Subscriber

    data = tmp_path / "data"
    write_dataset(data, images=6, seed=5)
    endpoint = free_endpoint()
    with Subscriber(endpoint) as sub:  # connects and retries until the daemon binds
        proc = subprocess.Popen(
            [sys.executable, "-m", "steel_edge.cli", "--source", f"folder:{data / 'train_images'}", "--once",
             "--camera", "first", "--publish", endpoint, "--set", f"journal.path={tmp_path / 'j.journal'}",
             "--set", f"folder.state_dir={tmp_path / 'state'}", "--set", "reload.enabled=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        events = []
        while True:
            msg = sub.recv(60)
            assert msg is not None, "the eos never arrived"
            events.append(msg.event)
            if isinstance(msg.event, EndOfStreamEvent):
                break
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    eos = events[-1]
    assert isinstance(eos, EndOfStreamEvent) and eos.run_start_seq is not None
    assert events[0].seq == eos.run_start_seq  # nothing of the run was missed
    assert [e.seq for e in events] == list(range(eos.run_start_seq, eos.seq + 1))
    assert sum(isinstance(e, DefectEvent) for e in events) == 6 and sub.missed_start == 0


def test_a_subscriber_that_missed_the_start_says_so() -> None:
    from steel_edge.subscriber import GapDetector

    gaps = GapDetector()
    assert gaps.observe("run-a", 7) == (None, False)  # first message seen: seq 7
    assert gaps.start("run-a", 3) is not None
    missed = GapDetector()
    missed.observe("run-a", 7)
    gap = missed.start("run-a", 3)
    assert gap is not None and (gap.first_missing, gap.last_missing, gap.count) == (3, 6, 4)
    assert missed.start("run-a", 3) is None  # said once per run
    whole = GapDetector()
    whole.observe("run-b", 0)
    assert whole.start("run-b", 0) is None


def test_fsync_policy_never_still_writes_each_line_through(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    sink = JsonlSink(JsonlConfig(path=path, fsync="never", kinds=("status",)))
    seq = Sequencer()
    sink.send(seq.commit(_status(seq.next_seq())))
    # visible to another reader before close: nothing is held in a userspace buffer
    assert os.path.getsize(path) > 0 and len(_lines(path)) == 1
    sink.close()
