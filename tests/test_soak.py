"""Soak and journal-fault tests: bounded in time and count, loopback only (issue #6, part 5)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon_helpers import daemon_events, free_endpoint
from steel_edge.config import EdgeConfig
from steel_edge.daemon import build_daemon
from steel_edge.events import DefectEvent, StatusEvent
from steel_edge.subscriber import Subscriber

REPO = Path(__file__).resolve().parent.parent
SOAK_FRAMES = 10_000


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_10000_frames_resident_memory_grows_under_5_percent(tmp_path: Path) -> None:
    endpoint = free_endpoint()
    results = 0
    rss_start = rss_end = 0

    def sample(event: object, _so_far: object, proc: subprocess.Popen[str]) -> None:
        nonlocal results, rss_start, rss_end
        if isinstance(event, DefectEvent):
            results += 1
            if results == 1000:  # after warm-up: model, pools, journal and queues at their working size
                rss_start = _rss_kb(proc.pid)
            if results == SOAK_FRAMES - 50:
                rss_end = _rss_kb(proc.pid)

    t0 = time.monotonic()
    daemon_events(endpoint, [
        "--source", f"synth:8:{SOAK_FRAMES}", "--camera", "soak",
        "--publish", endpoint, "--log-level", "WARNING", "--set", "publish.wait_subscribers=1",
        "--set", "pipeline.overflow=wait", "--set", "reload.enabled=false", "--set", "publish.rle=true",
        "--set", f"journal.path={tmp_path / 'soak.journal'}", "--set", "journal.replay_endpoint=tcp://127.0.0.1:*",
        "--set", "journal.max_events=5000", "--set", "status.interval_s=1"], sample, cwd=REPO)
    elapsed = time.monotonic() - t0
    growth = (rss_end - rss_start) / rss_start
    print(f"soak: {results} frames in {elapsed:.0f} s ({results / elapsed:.0f}/s); RSS {rss_start / 1024:.1f} MB at "
          f"frame 1000, {rss_end / 1024:.1f} MB at frame {SOAK_FRAMES - 50} ({growth:+.1%})")
    assert results == SOAK_FRAMES
    assert growth < 0.05


@pytest.mark.timeout(60)
def test_a_refusing_journal_is_counted_and_events_still_go_out(tmp_path: Path) -> None:
    cfg = EdgeConfig.model_validate({
        "camera": "jfault", "source": "synth:9", "live": {"fps": 100}, "reload": {"enabled": False},
        "publish": {"endpoints": ["tcp://127.0.0.1:*"]}, "status": {"interval_s": 0.2},
        "journal": {"path": str(tmp_path / "j.journal"), "replay_endpoint": None},
    })
    daemon = build_daemon(cfg)
    assert daemon.journal is not None
    t = threading.Thread(target=daemon.run, daemon=True)
    with Subscriber(daemon.publisher.bound[0]) as sub:
        t.start()
        try:
            assert sub.recv(10) is not None
            daemon.journal._db.execute("PRAGMA query_only = ON")  # what a full or read-only disk answers
            status = None
            while status is None or status.journal_errors < 5:
                msg = sub.recv(10)
                assert msg is not None, "events stopped while the journal refused them"
                status = msg.event if isinstance(msg.event, StatusEvent) else status
            daemon.journal._db.execute("PRAGMA query_only = OFF")
            stored_before = daemon.journal.reader().bounds()[1]
            while daemon.journal.reader().bounds()[1] == stored_before:
                assert sub.recv(10) is not None
        finally:
            daemon.stop()
            t.join(timeout=20)
    assert sub.gaps == 0  # live subscribers lost nothing while the journal was down


def test_a_journal_that_cannot_be_opened_refuses_to_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "steel_edge.cli", "--source", "synth:0:1", "--publish",
                        "tcp://127.0.0.1:*", "--set", f"journal.path={blocker / 'sub' / 'j.journal'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1 and "cannot open the journal" in r.stderr and "j.journal" in r.stderr
