"""Running the real daemon in tests: a config for loopback and a temporary state folder, a daemon on a
thread with a SUB socket reading it, and the stream checks every end-to-end test makes.

Imported by the test modules beside it (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from steel_edge.config import EdgeConfig
from steel_edge.daemon import build_daemon
from steel_edge.events import AnyEvent, DefectEvent, EndOfStreamEvent, ErrorEvent, decode_message


def make_config(source: str, state: Path, **sections: object) -> EdgeConfig:
    """Batch mode on loopback, one subscriber awaited, journal and ledger under ``state``; ``sections``
    override (a dict merges into the section of that name)."""
    data: dict[str, object] = {
        "camera": "t1", "source": source, "once": True,
        "publish": {"endpoints": ["tcp://127.0.0.1:*"], "wait_subscribers": 1, "rle": True},
        "folder": {"state_dir": str(state), "settle_s": 0.3, "poll_s": 0.05},
        "status": {"interval_s": 0.5}, "reload": {"enabled": False},
        "journal": {"path": str(state / "events.journal"), "replay_endpoint": "tcp://127.0.0.1:*"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # type: ignore[dict-item]
        else:
            data[key] = value
    return EdgeConfig.model_validate(data)


class Run:
    """A daemon on a thread plus a SUB socket on its endpoint; ``events`` (and ``crops``) collect what arrived."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.daemon = build_daemon(cfg)
        self.endpoint = self.daemon.publisher.bound[0]
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.endpoint)
        self.events: list[AnyEvent] = []
        self.crops: list[bytes | None] = []
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.daemon.run()

    def start(self) -> Run:
        self.thread.start()
        return self

    def recv(self, timeout: float = 30.0) -> AnyEvent:
        if not self.sub.poll(int(timeout * 1000)):
            raise TimeoutError(f"no event within {timeout} s; got {len(self.events)} so far")
        event, crop = decode_message(self.sub.recv_multipart())
        self.events.append(event)
        self.crops.append(crop)
        return event

    def until(self, pred: Callable[[AnyEvent], bool], timeout: float = 60.0) -> AnyEvent:
        end = time.monotonic() + timeout
        while True:
            event = self.recv(max(0.1, end - time.monotonic()))
            if pred(event):
                return event

    def until_eos(self, timeout: float = 90.0) -> EndOfStreamEvent:
        event = self.until(lambda e: isinstance(e, EndOfStreamEvent), timeout)
        assert isinstance(event, EndOfStreamEvent)
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        return event

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]

    def results(self) -> list[DefectEvent]:
        return self.of(DefectEvent)

    def errors(self) -> list[ErrorEvent]:
        return self.of(ErrorEvent)

    def close(self) -> None:
        self.daemon.stop()
        self.thread.join(timeout=20)
        self.sub.close(linger=0)
        self.ctx.term()


@contextmanager
def running(cfg: EdgeConfig) -> Iterator[Run]:
    run = Run(cfg).start()
    try:
        yield run
    finally:
        run.close()


def check_stream(run: Run) -> None:
    """seq runs on without a gap (the journal carries it across restarts), from one publisher; eos is last
    and names the seq before it."""
    seqs = [e.seq for e in run.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len({e.publisher for e in run.events}) == 1
    eos = run.events[-1]
    assert isinstance(eos, EndOfStreamEvent) and eos.last_seq == seqs[-2]


def free_endpoint() -> str:
    """A loopback TCP endpoint nobody listens on right now (for a daemon started as a subprocess)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(0)
    ctx.term()
    return endpoint


def daemon_events(endpoint: str, args: list[str], on_event: Callable[[AnyEvent, list[AnyEvent], subprocess.Popen[str]],
                                                                     None] | None = None,
                  cwd: Path | None = None) -> list[AnyEvent]:
    """Run ``python -m steel_edge.cli ARGS`` (publishing on ``endpoint``), subscribed to everything from
    before it starts; every event until its eos, after which it must exit 0. ``on_event(event, so_far,
    process)`` sees each event as it arrives (to signal the daemon, or sample its memory)."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "steel_edge.cli", *args], stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
    events: list[AnyEvent] = []
    try:
        while True:
            assert sub.poll(60_000), "daemon went silent"
            event, _ = decode_message(sub.recv_multipart())
            events.append(event)
            if on_event is not None:
                on_event(event, events, proc)
            if isinstance(event, EndOfStreamEvent):
                break
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        sub.close(0)
        ctx.term()
    return events
