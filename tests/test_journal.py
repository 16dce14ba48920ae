"""The durable journal, the replay endpoint and at-least-once subscribers (issue #6, part 1)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import zmq

from steel_edge.config import EdgeConfig, JournalConfig
from steel_edge.daemon import build_daemon
from steel_edge.events import ModelInfo, StatusEvent, encode, topic_of, utcnow
from steel_edge.journal import Journal, JournalReader
from steel_edge.replay import REPLAY_SCHEMA, ReplayServer
from steel_edge.resume import ReplayClient, ResumingSubscriber


def _journal(tmp_path: Path, **cfg: object) -> Journal:
    return Journal(tmp_path / "j.journal", JournalConfig(**cfg))  # type: ignore[arg-type]


def test_seq_and_publisher_survive_a_reopen_and_retention_keeps_the_newest(tmp_path: Path) -> None:
    j = _journal(tmp_path, max_events=300)
    pub = j.publisher_id
    for seq in range(j.next_seq, 1000):
        assert j.append(seq, b"t.", f'{{"seq": {seq}}}'.encode(), None)
    j.close()
    again = _journal(tmp_path, max_events=300)
    assert again.publisher_id == pub and again.next_seq == 1000
    lo, hi = again.reader().bounds()
    assert hi == 999 and lo is not None and 999 - lo < 300 + 256  # pruned every 256 appends
    again.close()


def test_a_failing_disk_is_counted_and_nothing_already_stored_is_touched(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert j.append(0, b"t.", b"{}", None)
    j._db.execute("PRAGMA query_only = ON")  # the same refusal a read-only or full disk gives
    assert not j.append(1, b"t.", b"{}", b"crop")
    assert j.errors == 1 and "readonly" in (j.last_error or "").lower().replace("-", "")
    j._db.execute("PRAGMA query_only = OFF")
    assert j.append(2, b"t.", b"{}", None)
    assert [r.seq for r in j.reader().read(0, 10)] == [0, 2]
    j.close()


def _status(seq: int, publisher: str) -> StatusEvent:
    return StatusEvent(seq=seq, publisher=publisher, camera="c", source="synth:0", published_at=utcnow(),
                       interval_s=1.0, uptime_s=0.0, fps=0.0, frames_in=0, frames_out=0, drops=0,
                       model=ModelInfo(sha256="0" * 64, kind="seg", code_version="test"))


def _server(tmp_path: Path, n: int) -> tuple[Journal, ReplayServer, zmq.Context]:  # type: ignore[type-arg]
    j = _journal(tmp_path)
    for seq in range(n):
        event = _status(seq, j.publisher_id)
        j.append(seq, topic_of(event), encode(event), None)
    ctx = zmq.Context()
    server = ReplayServer(ctx, "tcp://127.0.0.1:*", j.path, max_batch=50)
    server.start()
    return j, server, ctx


@pytest.mark.timeout(30)
def test_replay_protocol_refuses_bad_requests_and_keeps_serving(tmp_path: Path) -> None:
    j, server, ctx = _server(tmp_path, 5)
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    try:
        bad = [b"not json", b"[1]", json.dumps({"schema": REPLAY_SCHEMA}).encode(),
               json.dumps({"schema": REPLAY_SCHEMA, "from_seq": -1}).encode(),
               json.dumps({"schema": REPLAY_SCHEMA, "from_seq": 0, "evil": 1}).encode(),
               json.dumps({"schema": REPLAY_SCHEMA, "from_seq": 0, "publisher": "someone-else"}).encode(),
               b"{" + b" " * 3000 + b"}"]
        for body in bad:
            sock.send(body)
            assert sock.poll(5000)
            reply = sock.recv_multipart()
            assert reply[0] == b"error", (body[:40], reply)
        sock.send(b"x" * 100_000)  # over MAXMSGSIZE: libzmq drops the connection, the server lives on
        time.sleep(0.2)
        client = ReplayClient(server.endpoint, timeout=5)
        got = client.fetch(1, j.publisher_id, max_events=3)
        rest = client.fetch(got.next_seq, None)
        client.close()
        assert [m.event.seq for m in got.events] == [1, 2, 3] and not got.caught_up
        assert [m.event.seq for m in rest.events] == [4] and rest.caught_up and rest.publisher == j.publisher_id
    finally:
        sock.close(0)
        server.close()
        ctx.term()
        j.close()
    assert server.refused == len(bad)


@pytest.mark.timeout(120)
def test_a_slow_subscriber_loses_live_messages_and_replay_recovers_every_one(tmp_path: Path) -> None:
    """A subscriber that stops reading: the publisher never blocks, ZeroMQ drops for it past the HWM,
    and the resuming subscriber fills every hole from the journal."""
    state = tmp_path / "state"
    cfg = EdgeConfig.model_validate({
        "camera": "slow", "source": "synth:4", "live": {"fps": None},
        "publish": {"endpoints": ["tcp://127.0.0.1:*"], "sndhwm": 20, "wait_subscribers": 1, "rle": True,
                    "crop": "defects"},
        "pipeline": {"overflow": "wait"}, "status": {"interval_s": 0.2}, "reload": {"enabled": False},
        "journal": {"path": str(state / "events.journal"), "replay_endpoint": "tcp://127.0.0.1:*"},
    })
    daemon = build_daemon(cfg)
    assert daemon.replay is not None
    endpoint, replay = daemon.publisher.bound[0], daemon.replay.endpoint

    def small_buffers(sock: zmq.Socket[bytes]) -> None:  # so that TCP cannot absorb the backlog either
        sock.setsockopt(zmq.RCVHWM, 20)
        sock.setsockopt(zmq.RCVBUF, 4096)

    t = threading.Thread(target=daemon.run, daemon=True)
    try:
        with ResumingSubscriber(endpoint, replay, secure=small_buffers) as sub:
            t.start()
            first = sub.recv(30)  # subscribed; now stop reading while the daemon publishes 1000 results
            assert first is not None
            deadline = time.monotonic() + 60
            while daemon.stats.frames_out < 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
            target = daemon.sequencer.last_seq
            assert target is not None and target > 1000
            seqs = [first.event.seq]
            while seqs[-1] < target + 20:
                msg = sub.recv(10)
                assert msg is not None, f"stalled after seq {seqs[-1]}"
                seqs.append(msg.event.seq)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every event once, in order
    assert sub.recovered > 0, "the slow subscriber should have lost live messages"
    print(f"slow subscriber: {len(seqs)} events, {sub.recovered} recovered from the journal, "
          f"{sub.duplicates} duplicates dropped")


@pytest.mark.timeout(60)
def test_a_late_subscriber_recovers_everything_retained_and_resumes_after_its_state(tmp_path: Path) -> None:
    j, server, ctx = _server(tmp_path, 120)
    # a live PUB with nothing on it: everything comes from the journal
    pub = ctx.socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    live = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        with ResumingSubscriber(live, server.endpoint) as sub:
            got = [m.event.seq for m in iter(lambda: sub.recv(0.5), None)]
        assert got == list(range(120)) and sub.recovered == 120
        with ResumingSubscriber(live, server.endpoint, resume_from=(j.publisher_id, 99)) as sub:
            got = [m.event.seq for m in iter(lambda: sub.recv(0.5), None)]
        assert got == list(range(100, 120))
        with ResumingSubscriber(live, server.endpoint, resume_from=("another-journal", 99)) as sub:
            got = [m.event.seq for m in iter(lambda: sub.recv(0.5), None)]
        assert got == list(range(120))  # a state from another journal: start from the oldest retained
    finally:
        pub.close(0)
        server.close()
        ctx.term()
        j.close()


def test_journal_file_is_plain_sqlite_without_pickle(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append(0, b"t.", b'{"a": 1}', None)
    j.close()
    db = sqlite3.connect(tmp_path / "j.journal")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT payload FROM events").fetchone()[0] == b'{"a": 1}'
    reader = JournalReader(tmp_path / "j.journal")
    assert reader.bounds() == (0, 0)
