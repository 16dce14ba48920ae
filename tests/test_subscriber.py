"""The subscriber side over real ZeroMQ (loopback tcp, ephemeral ports): client, gaps, CLI, proxy.

Publishers here are XPUB sockets so a test can wait until the subscription has reached them instead of
sleeping: ZeroMQ drops whatever a publisher sends before that, which would make these tests flaky.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import zmq

from steel_edge.cli.subscribe import subscribe_main
from steel_edge.cli.tools import proxy_main
from steel_edge.events import (
    DefectEvent,
    DefectItem,
    EndOfStreamEvent,
    ErrorEvent,
    EventError,
    FrameSize,
    ModelInfo,
    StatusEvent,
    decode,
    encode,
    event_id_for,
    topic,
    topic_of,
)
from steel_edge.proxy import Proxy
from steel_edge.subscriber import Gap, GapDetector, Received, Subscriber

T0 = datetime(2026, 11, 24, 13, 48, 28, 123456, tzinfo=timezone.utc)
INFO = ModelInfo(sha256="ab" * 32, kind="seg", code_version="0.1.0+gabc")
RUN_A = "0123456789abcdef0123456789abcdef"
RUN_B = "fedcba9876543210fedcba9876543210"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
Message = tuple[Any, bytes | None]


def _common(seq: int, publisher: str, camera: str) -> dict[str, Any]:
    return {"seq": seq, "publisher": publisher, "camera": camera, "source": "folder:/data/in", "published_at": T0}


def result(seq: int, publisher: str = RUN_A, camera: str = "cam0", has_crop: bool = False) -> DefectEvent:
    frame_id = f"strip_{seq:04d}.png"
    return DefectEvent(
        **_common(seq, publisher, camera), event_id=event_id_for(camera, "folder:/data/in", frame_id),
        frame_id=frame_id, captured_at=T0, model=INFO, frame=FrameSize(width=1600, height=256),
        defects=(DefectItem(class_id=3, class_name="scratch", score=0.875, bbox=(10, 20, 30, 40), area_px=900),),
        has_crop=has_crop)


def status(seq: int, publisher: str = RUN_A, camera: str = "cam0") -> StatusEvent:
    return StatusEvent(**_common(seq, publisher, camera), interval_s=1.0, uptime_s=3.0, fps=20.0, frames_in=60,
                       frames_out=60, drops=0, model=INFO)


def eos(seq: int, publisher: str = RUN_A, camera: str = "cam0") -> EndOfStreamEvent:
    return EndOfStreamEvent(**_common(seq, publisher, camera), reason="complete", frames_processed=seq, errors=0,
                            last_seq=seq - 1 if seq else None)


class Pub:
    """A test publisher: XPUB, bound on an ephemeral port (or connected), that can wait for subscribers."""

    def __init__(self, ctx: zmq.Context[Any], connect: str | None = None) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        if connect is None:
            self.sock.bind("tcp://127.0.0.1:*")
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            self.sock.connect(connect)
            self.endpoint = connect

    def wait_subscribed(self, topics: Sequence[bytes] = (b"",), timeout: float = 10.0) -> None:
        wanted = {b"\x01" + t for t in topics}
        deadline = time.monotonic() + timeout
        while wanted:
            left_ms = int((deadline - time.monotonic()) * 1000)
            assert left_ms > 0 and self.sock.poll(left_ms), f"no subscription for {wanted}"
            wanted.discard(self.sock.recv())

    def send(self, event: Any, crop: bytes | None = None) -> None:
        frames = [topic_of(event), encode(event)] + ([crop] if crop is not None else [])
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close(linger=2000)  # let what was sent leave before the context ends


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def pub(ctx: zmq.Context[Any]) -> Iterator[Pub]:
    p = Pub(ctx)
    yield p
    p.close()


def _recv_all(sub: Subscriber, n: int, timeout: float = 5.0) -> list[Received]:
    got: list[Received] = []
    for _ in range(n):
        msg = sub.recv(timeout)
        assert msg is not None, f"only {len(got)} of {n} messages arrived"
        got.append(msg)
    return got


@pytest.mark.timeout(30)
def test_receives_every_kind_with_its_crop(ctx: zmq.Context[Any], pub: Pub) -> None:
    with Subscriber(pub.endpoint, context=ctx) as sub:
        pub.wait_subscribed()
        sent: list[Message] = [(status(0), None), (result(1, has_crop=True), JPEG), (result(2), None),
                               (ErrorEvent(**_common(3, RUN_A, "cam0"), error="decode", message="not an image"), None),
                               (eos(4), None)]
        for event, crop in sent:
            pub.send(event, crop)
        got = _recv_all(sub, len(sent))
    assert [(m.event, m.crop, m.topic) for m in got] == [(e, c, topic_of(e)) for e, c in sent]
    assert all(m.gap is None and not m.replay for m in got)
    assert (sub.received, sub.invalid, sub.gaps) == (5, 0, 0)
    assert not ctx.closed  # a context passed in is the caller's to terminate


@pytest.mark.timeout(30)
def test_a_jump_in_seq_is_one_gap(ctx: zmq.Context[Any], pub: Pub) -> None:
    with Subscriber(pub.endpoint, context=ctx) as sub:
        pub.wait_subscribed()
        for seq in (0, 1, 2, 5, 6):
            pub.send(result(seq))
        got = _recv_all(sub, 5)
    assert [m.gap for m in got] == [None, None, None, Gap(RUN_A, 3, 4), None]
    assert got[3].gap is not None and got[3].gap.count == 2
    assert (sub.gaps, sub.missing) == (1, 2)


@pytest.mark.timeout(30)
def test_a_restart_is_not_a_gap_and_a_replay_is_flagged(ctx: zmq.Context[Any], pub: Pub) -> None:
    with Subscriber(pub.endpoint, context=ctx) as sub:
        pub.wait_subscribed()
        # A late subscriber's first message (seq 7) is a baseline; a new run starting at 0 is a restart.
        for event in (result(7), result(8), result(0, publisher=RUN_B), result(1, publisher=RUN_B), result(8),
                      result(9)):
            pub.send(event)
        got = _recv_all(sub, 6)
    assert [m.gap for m in got] == [None] * 6
    assert [m.replay for m in got] == [False, False, False, False, True, False]
    assert (sub.gaps, sub.replays) == (0, 1)


def test_gap_detector_forgets_the_oldest_publisher_first() -> None:
    det = GapDetector(max_publishers=2)
    det.observe("a", 0)
    det.observe("b", 0)
    det.observe("a", 1)  # "a" is now the most recent
    det.observe("c", 0)  # evicts "b"
    assert det.observe("a", 3) == (Gap("a", 2, 2), False)
    assert det.observe("b", 9) == (None, False)  # forgotten: a baseline again, not a gap


@pytest.mark.timeout(30)
def test_one_camera_topic_does_not_match_a_longer_camera_id(ctx: zmq.Context[Any], pub: Pub) -> None:
    wanted = topic("result", "cam1")
    with Subscriber(pub.endpoint, [wanted], context=ctx) as sub:
        pub.wait_subscribed([wanted])
        pub.send(result(0, camera="cam10"))
        pub.send(status(1, camera="cam1"))
        pub.send(result(5, camera="cam1"))
        got = _recv_all(sub, 1)
        assert sub.recv(0.3) is None
    assert got[0].event == result(5, camera="cam1")
    # Filtered kinds leave holes in seq, so gap detection is off unless asked for.
    assert not sub.detect_gaps and got[0].gap is None


@pytest.mark.timeout(30)
def test_malformed_messages_are_counted_and_skipped(ctx: zmq.Context[Any], pub: Pub) -> None:
    seen: list[tuple[EventError, list[bytes]]] = []
    with Subscriber(pub.endpoint, context=ctx, on_invalid=lambda err, frames: seen.append((err, frames))) as sub:
        pub.wait_subscribed()
        pub.sock.send_multipart([b"result.cam0.", b"{not json"])
        pub.sock.send_multipart([b"result.cam0."])
        pub.sock.send_multipart([b"status.cam9.", encode(status(0))])  # topic disagrees with payload
        pub.send(result(1, has_crop=True))  # says has_crop, carries none
        pub.send(result(2))
        got = sub.recv(5.0)
    assert got is not None and got.event == result(2)
    assert sub.invalid == 4 and len(seen) == 4
    assert isinstance(sub.last_error, EventError) and "crop" in str(sub.last_error)
    assert seen[0][1] == [b"result.cam0.", b"{not json"]


@pytest.mark.timeout(30)
def test_recv_times_out_and_a_closed_subscriber_refuses(pub: Pub) -> None:
    sub = Subscriber([pub.endpoint], b"")  # a lone bytes topic is one prefix, not a sequence of ints
    assert sub.topics == (b"",)
    t = time.monotonic()
    assert sub.recv(0.2) is None
    assert 0.15 < time.monotonic() - t < 2.0
    sub.close()
    sub.close()
    with pytest.raises(RuntimeError, match="closed"):
        sub.recv(0)


def test_a_bad_endpoint_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot open ZeroMQ endpoint 'nonsense'"):
        Subscriber("nonsense")


# --- steel-edge subscribe ------------------------------------------------------------------------


def _publish_when_subscribed(pub: Pub, messages: Sequence[Message], topics: Sequence[bytes] = (b"",)
                             ) -> threading.Thread:
    def run() -> None:
        pub.wait_subscribed(topics)
        for event, crop in messages:
            pub.send(event, crop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_subscribe_prints_json_lines_and_reports_gaps(pub: Pub, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[Message] = [(status(0), None), (result(1, has_crop=True), JPEG), (result(2), None),
                               (result(5), None), (result(6), None)]
    thread = _publish_when_subscribed(pub, messages)
    rc = subscribe_main([pub.endpoint, "--count", "4", "--timeout", "10", "--save-crops", str(tmp_path / "crops")])
    thread.join(10)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 4
    assert [decode(line) for line in lines] == [e for e, _ in messages[:4]]
    assert lines[1] == encode(messages[1][0]).decode()
    # named after camera and frame (without the .png), with the event id's head: cam0_strip_0001_<id>.jpg
    assert (tmp_path / "crops" / f"cam0_strip_0001_{result(1).event_id[:12]}.jpg").read_bytes() == JPEG
    assert "steel-edge subscribe: gap: publisher 01234567…: seq 3..4 missing (2 messages)\n" in err
    assert "4 events, 1 gap (2 messages missing), 0 invalid" in err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("extra", "expected_rc"), [(["--count", "5"], 1), ([], 0), (["--until-eos"], 1)])
def test_subscribe_timeout_exit_status(pub: Pub, capsys: pytest.CaptureFixture[str], extra: list[str],
                                       expected_rc: int) -> None:
    thread = _publish_when_subscribed(pub, [(result(0), None), (result(1), None)])
    rc = subscribe_main([pub.endpoint, "--timeout", "1.5", *extra])
    thread.join(10)
    out, err = capsys.readouterr()
    assert (rc, len(out.splitlines())) == (expected_rc, 2)
    assert "2 events" in err


@pytest.mark.timeout(30)
def test_subscribe_stops_after_eos_and_honours_topics(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    topics = [b"result.", b"eos."]
    thread = _publish_when_subscribed(pub, [(status(0), None), (result(1), None), (eos(2), None),
                                            (result(3), None)], topics)
    rc = subscribe_main([pub.endpoint, "--topic", "result.", "--topic", "eos.", "--until-eos", "--timeout", "10"])
    thread.join(10)
    out, err = capsys.readouterr()
    assert rc == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["result", "eos"]
    assert "gaps not checked" in err


def _sigint_to_main_thread(after: float) -> threading.Timer:
    """A not-yet-started timer that sends SIGINT to the main thread itself.

    os.kill(getpid()) lets the kernel hand the signal to any thread, and the main thread, blocked in
    zmq_poll, then never wakes (seen once under load: a 30 s timeout).
    """
    return threading.Timer(after, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))


@pytest.mark.timeout(30)
def test_subscribe_exits_0_on_sigint(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    # A shell that starts a job in the background (`cmd &` without job control, as CI runners may) leaves SIGINT
    # ignored, and Python then keeps it ignored: Ctrl-C's own handler is what this test is about, so install it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = _sigint_to_main_thread(0.5)
    timer.start()
    try:
        rc = subscribe_main([pub.endpoint])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert rc == 0
    assert "0 events" in capsys.readouterr().err


def test_subscribe_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        subscribe_main(["tcp://127.0.0.1:1", "--count", "0"])
    assert exc.value.code == 2
    assert subscribe_main(["nonsense"]) == 2


# --- steel-edge proxy ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_proxy_fans_two_publishers_into_one_subscriber(ctx: zmq.Context[Any]) -> None:
    stop = threading.Event()
    proxy = Proxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=ctx)
    worker = threading.Thread(target=proxy.run, args=(stop,), daemon=True)
    worker.start()
    cam0, cam1 = Pub(ctx, connect=proxy.frontend), Pub(ctx, connect=proxy.frontend)
    try:
        with Subscriber(proxy.backend, context=ctx) as sub:
            # The subscription travels subscriber -> proxy backend -> proxy frontend -> each daemon.
            cam0.wait_subscribed()
            cam1.wait_subscribed()
            for seq in range(3):
                cam0.send(result(seq, publisher=RUN_A, camera="cam0"))
                cam1.send(result(seq, publisher=RUN_B, camera="cam1"))
            got = _recv_all(sub, 6)
        by_run: dict[str, list[int]] = {}
        for m in got:
            by_run.setdefault(m.event.publisher, []).append(m.event.seq)
        assert by_run == {RUN_A: [0, 1, 2], RUN_B: [0, 1, 2]}
        assert sub.gaps == 0  # seqs of different runs never mix
    finally:
        stop.set()
        worker.join(5)
        cam0.close()
        cam1.close()
        proxy.close()
    assert not worker.is_alive()


@pytest.mark.timeout(30)
def test_proxy_main_binds_and_stops_on_sigint(capsys: pytest.CaptureFixture[str]) -> None:
    timer = _sigint_to_main_thread(0.5)
    timer.start()
    try:
        rc = proxy_main(["--frontend", "tcp://127.0.0.1:*", "--backend", "tcp://127.0.0.1:*"])
    finally:
        timer.cancel()
    err = capsys.readouterr().err
    assert rc == 0
    assert "steel-edge proxy: daemons connect to tcp://127.0.0.1:" in err and "stopped" in err


@pytest.mark.timeout(30)
def test_proxy_main_reports_a_busy_endpoint(ctx: zmq.Context[Any], pub: Pub,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert proxy_main(["--frontend", pub.endpoint, "--backend", "tcp://127.0.0.1:*"]) == 2
    assert "cannot bind" in capsys.readouterr().err
