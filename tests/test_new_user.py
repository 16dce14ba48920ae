"""What a new user tripped on (issue 23, item 6), each as the user met it: folder reruns and the ledger,
a missing camera, a refused stream, a corrupt JPEG, folder:FILE, subscribe --resume and SIGTERM, saved
frames, and two daemons side by side."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon_helpers import free_endpoint, make_config, running
from steel_edge.config import EdgeConfig, LiveConfig
from steel_edge.daemon import build_daemon
from steel_edge.data.synth import write_dataset
from steel_edge.endpoints import replay_endpoint_for
from steel_edge.events import DefectEvent, EndOfStreamEvent, ErrorEvent, decode
from steel_edge.journal import default_path
from steel_edge.sources import SourceError, SourceLost, open_source

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "steel_edge.cli", *args]


def _batch(folder: Path, state: Path, *extra: str, camera: str = "nu") -> subprocess.CompletedProcess[str]:
    """The daemon on ``folder`` in batch mode, as a user runs it, with its own ports and state."""
    return subprocess.run(
        _cli("--source", f"folder:{folder}", "--once", "--camera", camera, "--publish", free_endpoint(),
             "--set", f"folder.state_dir={state}", "--set", f"journal.path={state / 'j.journal'}",
             "--set", "reload.enabled=false", "--set", f"jsonl.path={state / 'events.jsonl'}", *extra),
        capture_output=True, text=True, timeout=240, cwd=REPO)


def _results(state: Path) -> list[str]:
    out = []
    for line in (state / "events.jsonl").read_text().splitlines():
        event = decode(line)
        if isinstance(event, DefectEvent):
            out.append(event.frame_id)
    return out


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nu")
    write_dataset(root, images=3, seed=21)
    return root / "train_images"


@pytest.mark.timeout(600)
def test_a_rerun_says_what_the_ledger_skipped_reprocess_does_them_again_and_a_new_camera_is_not_skipped(
        frames: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _batch(frames, state)
    assert first.returncode == 0, first.stderr
    assert len(_results(state)) == 3
    again = _batch(frames, state)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 files already processed by camera nu with this model are skipped" in again.stderr
    assert "--reprocess" in again.stderr and len(_results(state)) == 3  # nothing new
    redo = _batch(frames, state, "--reprocess")
    assert redo.returncode == 0, redo.stderr
    assert len(_results(state)) == 6
    other_camera = _batch(frames, state, camera="nu2")
    assert other_camera.returncode == 0, other_camera.stderr
    assert "processed before by another model or camera id are processed again" in other_camera.stderr
    assert len(_results(state)) == 9


@pytest.mark.timeout(120)
def test_a_camera_that_never_opens_is_fatal_after_its_open_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    r = subprocess.run(
        _cli("--source", "/dev/video99", "--publish", free_endpoint(), "--set", "live.open_timeout_s=1.5",
             "--set", f"journal.path={tmp_path / 'j.journal'}", "--set", "reload.enabled=false",
             "--set", f"jsonl.path={tmp_path / 'ev.jsonl'}", "--set", "jsonl.kinds=[error,eos]"),
        capture_output=True, text=True, timeout=90, cwd=REPO)
    took = time.monotonic() - start
    assert r.returncode == 1, r.stderr
    assert took < 60
    assert "gave up after" in r.stderr and "live.open_timeout_s" in r.stderr
    events = [decode(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert isinstance(events[0], ErrorEvent) and events[0].fatal and "/dev/video99" in events[0].message
    assert isinstance(events[-1], EndOfStreamEvent) and events[-1].reason == "source_failed"


@pytest.mark.timeout(60)
def test_a_refused_stream_says_refused_not_timed_out() -> None:
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = open_source(f"rtsp://127.0.0.1:{port}/x", EdgeConfig(live=LiveConfig(open_timeout_s=10)), (256, 1600))
    start = time.monotonic()
    with pytest.raises(SourceLost) as err:
        source.open()
    assert time.monotonic() - start < 9
    assert "within 10 s" not in str(err.value) and "refused, unreachable or not a video stream" in str(err.value)
    source.close()


def _corrupt_keeping_the_end_marker(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 64):
        data[i] ^= 0x5A
    assert data[-2:] == b"\xff\xd9"
    path.write_bytes(bytes(data))


@pytest.mark.timeout(120)
def test_a_corrupt_jpeg_with_its_end_marker_is_an_error_event_naming_the_file(frames: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(frames.glob("*.jpg")):
        (folder / f.name).write_bytes(f.read_bytes())
    victim = sorted(folder.glob("*.jpg"))[1]
    _corrupt_keeping_the_end_marker(victim)
    decoded = cv2.imdecode(np.frombuffer(victim.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None  # OpenCV takes it, garbage and all
    cfg = make_config(f"folder:{folder}", tmp_path / "state")
    with running(cfg) as run:
        run.until_eos()
    (error,) = run.errors()
    assert error.error == "decode" and victim.name in error.message and "corrupt JPEG data" in error.message
    assert error.file is not None and error.file.endswith(victim.name) and error.quarantined_to
    assert sorted(e.frame_id for e in run.results()) == sorted(p.name for p in folder.glob("*.jpg"))


def test_folder_of_a_file_says_it_is_a_file(frames: Path) -> None:
    one = sorted(frames.glob("*.jpg"))[0]
    source = open_source(f"folder:{one}", EdgeConfig(), (256, 1600))
    with pytest.raises(SourceError, match=r"is a file, not a folder"):
        source.open()


@pytest.mark.timeout(120)
def test_subscribe_resume_exits_0_with_its_summary_on_sigterm_and_needs_no_replay_flag(tmp_path: Path) -> None:
    endpoint = free_endpoint()
    help_text = subprocess.run(_cli("subscribe", "--help"), capture_output=True, text=True, timeout=60).stdout
    assert "needs --replay" not in help_text and "port + 3" in help_text
    cfg = make_config("synth:1", tmp_path / "state", once=False, live={"fps": 20},
                      publish={"endpoints": [endpoint], "wait_subscribers": 0},
                      journal={"replay_endpoint": "auto"})
    with running(cfg) as run:
        assert run.daemon.replay is not None and run.daemon.replay.endpoint == replay_endpoint_for(endpoint)
        proc = subprocess.Popen(_cli("subscribe", endpoint, "--resume"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # it is receiving
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "from the journal" in err  # the summary line


def test_saved_frames_are_named_after_camera_and_frame_and_carry_a_legend(tmp_path: Path) -> None:
    from steel_edge.config import SaveConfig
    from steel_edge.outputs import FrameSaver
    from steel_edge.postprocess import Defect
    from steel_edge.sources import Frame

    image = np.full((256, 1600), 120, np.uint8)
    masks = np.zeros((4, 256, 1600), np.uint8)
    masks[2, 100:150, 300:500] = 1
    defect = Defect(class_id=3, score=0.9, bbox=(300, 100, 200, 50), area_px=10000)
    frame = Frame(image=image, frame_id="coil12/f-0034.png", t_mono=0.0)
    saver = FrameSaver(SaveConfig(dir=tmp_path / "ann"))
    path = saver.save("cam0", frame, masks, (defect,), ("pits", "scratch", "streak", "patch"))
    assert path is not None and path.name == "cam0_coil12-f-0034.jpg"  # no .png.jpg
    saved = cv2.imread(str(path))
    corner = saved[4:20, -300:]
    assert (np.abs(corner.astype(int) - 120).sum(axis=2) > 60).any()  # the legend is drawn top right
    crops = FrameSaver(SaveConfig(dir=tmp_path / "crops", what="crops"))
    crop = crops.save("cam0", frame, masks, (defect,))
    assert crop is not None and crop.name == "cam0_coil12-f-0034_crop.jpg"


@pytest.mark.timeout(120)
def test_two_daemons_on_different_publish_ports_do_not_collide_on_replay(tmp_path: Path) -> None:
    daemons = []
    try:
        for name in ("a", "b"):
            cfg = make_config("synth:1:1", tmp_path / name, publish={"endpoints": [free_endpoint()]},
                              journal={"replay_endpoint": "auto"})
            daemons.append(build_daemon(cfg))
        bound = [d.publisher.bound[0] for d in daemons]
        replays = [d.replay.endpoint for d in daemons if d.replay is not None]
        assert replays == [replay_endpoint_for(b) for b in bound] and len(set(replays)) == 2
    finally:
        for d in daemons:
            d.close()


def test_replay_endpoint_derivation() -> None:
    assert replay_endpoint_for("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5558"
    assert replay_endpoint_for("@tcp://0.0.0.0:6000") == "tcp://0.0.0.0:6003"
    assert replay_endpoint_for(">tcp://10.0.0.2:5556") == "tcp://127.0.0.1:5559"
    assert replay_endpoint_for("tcp://127.0.0.1:*") == "tcp://127.0.0.1:*"
    assert replay_endpoint_for("ipc:///run/steel/cam0") == "ipc:///run/steel/cam0-replay"


def test_the_suite_never_writes_the_users_state_folder() -> None:
    """conftest.py points XDG_STATE_HOME into the session's temporary folder (and holds the default ports)."""
    assert not str(default_path("x")).startswith(str(Path.home() / ".local"))
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("127.0.0.1", 5558))  # held for the session, as a running daemon would hold it
