"""Frame sources with fakes only: a generated video file, dead devices and ports, the synthetic camera,
and the line-scan assembler fed a known gradient so tile contents can be checked exactly."""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from steel_edge.config import EdgeConfig, LineScanConfig, LiveConfig
from steel_edge.sources import EndOfStream, Frame, FrameError, SourceError, SourceLost, open_source
from steel_edge.sources.genicam import GenICamSource, to_gray_genicam
from steel_edge.sources.linescan import LineScanSource, split_positions
from steel_edge.sources.opencv import VideoFileSource, to_gray
from steel_edge.sources.synthetic import SynthSource

TILE = (256, 1600)
FAST = EdgeConfig(live=LiveConfig(open_timeout_s=2, read_timeout_s=2))


def drain(source: object, limit: int = 10_000) -> list[Frame]:
    """Every frame until EndOfStream (the source must end)."""
    frames: list[Frame] = []
    for _ in range(limit):
        try:
            frame = source.read(1.0)  # type: ignore[attr-defined]
        except EndOfStream:
            return frames
        if frame is not None:
            frames.append(frame)
    raise AssertionError("source did not end")


# --- OpenCV --------------------------------------------------------------------------------------------------


def test_video_file_frames_ids_and_end(tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 64))
    assert writer.isOpened()
    for i in range(7):
        writer.write(np.full((64, 320, 3), 30 * i, np.uint8))
    writer.release()
    source = open_source(str(path), EdgeConfig(), TILE)
    assert isinstance(source, VideoFileSource) and source.live is False and source.spec == str(path)
    source.open()
    frames = drain(source)
    source.close()
    assert [f.frame_id for f in frames] == [f"{i:09d}" for i in range(7)]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (64, 320) for f in frames)
    assert abs(float(frames[3].image.mean()) - 90) < 4  # gray level survives MJPG


def test_unreadable_video_file_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.avi"
    path.write_text("not a video")
    source = open_source(str(path), EdgeConfig(), TILE)
    with pytest.raises(SourceError):
        source.open()
        source.read(1.0)


def test_missing_camera_is_lost_on_open() -> None:
    source = open_source("camera99", FAST, TILE)
    assert source.live
    with pytest.raises(SourceLost, match="camera 99 could not be opened"):
        source.open()
    source.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:9/x", "http://127.0.0.1:9/x"])
def test_dead_stream_fails_within_open_timeout(url: str) -> None:
    source = open_source(url, FAST, TILE)
    assert source.live
    start = time.monotonic()
    with pytest.raises(SourceLost, match="could not be opened"):
        source.open()
    assert time.monotonic() - start < 10
    source.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_silent_stream_server_times_out(scheme: str) -> None:
    """A server that accepts and never answers: without the timeouts FFmpeg would wait about 30 s."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        source = open_source(f"{scheme}://127.0.0.1:{server.getsockname()[1]}/x", FAST, TILE)
        start = time.monotonic()
        with pytest.raises(SourceLost, match="within 2 s"):
            source.open()
        assert time.monotonic() - start < 10


def test_to_gray_handles_color_alpha_and_16_bit() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 1] = 200
    assert to_gray(bgr).shape == (4, 5) and to_gray(bgr).dtype == np.uint8
    assert to_gray(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5)
    assert int(to_gray(np.full((2, 2), 0x1234, np.uint16))[0, 0]) == 0x12


def test_unknown_spec_and_bare_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown source"):
        open_source("webcam-please", EdgeConfig(), TILE)
    with pytest.raises(SourceError, match="folder:"):
        open_source(str(tmp_path), EdgeConfig(), TILE)


# --- synthetic ----------------------------------------------------------------------------------------------


def test_synth_count_ids_truth_and_end() -> None:
    source = open_source("synth:3:5", EdgeConfig(), TILE)
    assert isinstance(source, SynthSource) and source.live
    source.open()
    frames = drain(source)
    assert [f.frame_id for f in frames] == [f"{i:09d}" for i in range(5)]
    assert all(f.image.shape == TILE and f.image.dtype == np.uint8 for f in frames)
    for f in frames:
        truth = source.truth(f.frame_id)
        assert all(1 <= c <= 4 for c in truth)
        assert np.array_equal(source.sample(f.frame_id).image, f.image)


@pytest.mark.timeout(30)
def test_synth_pacing_follows_fps() -> None:
    """The schedule, not the wall clock, is checked: a loaded machine may read late (then frames are skipped,
    as a real camera overwrites its buffer), but frames never come faster than ``fps``."""
    fps = 50
    source = SynthSource("synth:0", 0, LiveConfig(fps=fps), ring=2)
    source.open()
    start = time.monotonic()
    stamps = []
    while time.monotonic() - start < 1.0:
        frame = source.read(0.05)
        if frame is not None:
            stamps.append(frame.t_mono)
    elapsed = time.monotonic() - start
    assert 1 <= len(stamps) <= fps * elapsed + 1, (len(stamps), elapsed)
    # frame k is due one period after frame k-1 was due, and never before it was delivered: so any k
    # consecutive frames span at least k - 2 periods, however late (and in whatever rhythm) the reader came
    period = 1 / fps
    for i in range(len(stamps)):
        for j in range(i + 2, len(stamps)):
            assert stamps[j] - stamps[i] >= (j - i - 1) * period - 1e-6, (i, j, stamps[j] - stamps[i])


def test_synth_unpaced_is_fast() -> None:
    source = SynthSource("synth:0", 0, LiveConfig(), ring=2)
    source.open()
    start = time.monotonic()
    assert all(source.read(0.1) is not None for _ in range(500))
    assert time.monotonic() - start < 1.0


def test_synth_loss_and_reopen() -> None:
    source = SynthSource("synth:0", 0, LiveConfig(), ring=2, fail_after=3)
    source.open()
    ids = [source.read(0.1).frame_id for _ in range(3)]  # type: ignore[union-attr]
    with pytest.raises(SourceLost):
        source.read(0.1)
    with pytest.raises(SourceLost):
        source.read(0.1)  # stays lost until reopened
    source.close()
    source.lose(after=None, failed_opens=2)
    for _ in range(2):
        with pytest.raises(SourceLost):
            source.open()
    source.open()
    frame = source.read(0.1)
    assert frame is not None and ids == ["000000000", "000000001", "000000002"] and frame.frame_id == "000000003"
    assert source.opens == 2


# --- line scan ----------------------------------------------------------------------------------------------


class Rows:
    """A fake line camera: row r of the strip is ``(r + column) % 251``, delivered in chunks of given heights."""

    live = True

    def __init__(self, chunks: list[int], width: int = 40, lose_at: int | None = None) -> None:
        self.spec = "rows"
        self.chunks = chunks
        self.width = width
        self.lose_at = lose_at
        self.i = 0
        self.row = 0
        self.opens = 0
        self.done: list[int] = []

    def open(self) -> None:
        self.opens += 1

    def read(self, timeout: float) -> Frame | None:
        if self.lose_at is not None and self.i == self.lose_at:
            self.lose_at = None
            raise SourceLost("rows: unplugged")
        if self.i >= len(self.chunks):
            raise EndOfStream("rows")
        h = self.chunks[self.i]
        image = ((np.arange(self.row, self.row + h)[:, None] + np.arange(self.width)[None, :]) % 251).astype(np.uint8)
        i = self.i
        frame = Frame(image, f"c{i}", float(i), done=lambda: self.done.append(i))
        self.i += 1
        self.row += h
        return frame

    def close(self) -> None:
        pass


def strip(rows: int, width: int) -> np.ndarray:
    return ((np.arange(rows)[:, None] + np.arange(width)[None, :]) % 251).astype(np.uint8)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_linescan_tiles_overlap_exactly(chunk: int) -> None:
    total = 300
    inner = Rows([chunk] * (total // chunk) + ([total % chunk] if total % chunk else []))
    source = LineScanSource("linescan:rows", inner, LineScanConfig(tile_height=64, overlap_px=16), (64, 40))
    source.open()
    tiles = drain(source)
    step = 48
    assert [t.strip_offset_px for t in tiles] == [k * step for k in range(len(tiles))]
    assert len(tiles) == (total - 64) // step + 1 == 5
    assert [t.tile for t in tiles] == list(range(5))
    assert [t.frame_id for t in tiles] == [f"r{k * step:010d}" for k in range(5)]
    full = strip(total, 40)
    for t in tiles:
        assert t.strip_offset_px is not None
        assert np.array_equal(t.image, full[t.strip_offset_px: t.strip_offset_px + 64])
    for a, b in itertools.pairwise(tiles):
        assert np.array_equal(a.image[-16:], b.image[:16])
    # newest line's time: the chunk holding the tile's last row
    assert tiles[0].t_mono == float(63 // chunk)
    assert source.partial_rows_dropped == total - (4 * step + 64)
    for t in tiles:
        t.done()
    covered = 4 * step + 64
    assert inner.done == [i for i in range(len(inner.chunks)) if (i + 1) * chunk <= covered]


def test_linescan_resize_across() -> None:
    inner = Rows([32] * 4, width=80)
    source = LineScanSource("linescan:rows", inner, LineScanConfig(overlap_px=0), (64, 40))
    source.open()
    tiles = drain(source)
    assert len(tiles) == 2 and all(t.image.shape == (64, 40) for t in tiles)
    expected = cv2.resize(strip(64, 80), (40, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(tiles[0].image, expected)


def test_linescan_split_across() -> None:
    assert split_positions(100, 40) == [0, 30, 60]
    assert split_positions(80, 40) == [0, 40]
    inner = Rows([10] * 13, width=100)
    source = LineScanSource("linescan:rows", inner, LineScanConfig(overlap_px=8, across="split"), (32, 40))
    source.open()
    tiles = drain(source)
    assert [t.tile for t in tiles] == list(range(len(tiles)))
    assert [t.frame_id for t in tiles[:4]] == ["r0000000000-x00000", "r0000000000-x00030", "r0000000000-x00060",
                                              "r0000000024-x00000"]
    full = strip(130, 100)
    for t in tiles:
        x = int(t.frame_id.split("-x")[1])
        assert t.strip_offset_px is not None
        assert np.array_equal(t.image, full[t.strip_offset_px: t.strip_offset_px + 32, x: x + 40])


def test_linescan_split_narrower_than_tile_says_resize() -> None:
    config = LineScanConfig(across="split", overlap_px=0)
    source = LineScanSource("linescan:rows", Rows([8], width=20), config, (32, 40))
    source.open()
    with pytest.raises(SourceError, match="resize"):
        source.read(0.1)


def test_linescan_overlap_must_leave_a_step() -> None:
    with pytest.raises(SourceError, match="overlap_px"):
        LineScanSource("linescan:rows", Rows([]), LineScanConfig(tile_height=32, overlap_px=32), (32, 40))


def test_linescan_loss_resets_partial_tile_but_strip_rows_continue() -> None:
    inner = Rows([20, 20, 20, 40, 40], lose_at=2)
    source = LineScanSource("linescan:rows", inner, LineScanConfig(tile_height=32, overlap_px=0), (32, 40))
    source.open()
    first = source.read(0.1)
    assert first is not None and first.strip_offset_px == 0
    with pytest.raises(SourceLost):
        source.read(0.1)  # 8 rows (32..39) are waiting in the partial tile
    source.close()
    source.open()
    tiles = drain(source)
    assert source.partial_rows_dropped == 8 + (140 - 40 - 96)
    assert [t.strip_offset_px for t in tiles] == [40, 72, 104]
    assert [t.tile for t in tiles] == [1, 2, 3]


def test_linescan_frame_error_passes_through() -> None:
    class Bad(Rows):
        def read(self, timeout: float) -> Frame | None:
            raise FrameError("bad line", kind="decode")

    source = LineScanSource("linescan:bad", Bad([]), LineScanConfig(), (64, 40))
    source.open()
    with pytest.raises(FrameError):
        source.read(0.1)


def test_linescan_over_synth_through_open_source() -> None:
    config = EdgeConfig(linescan=LineScanConfig(overlap_px=32))
    source = open_source("linescan:synth:0:3", config, TILE)
    assert isinstance(source, LineScanSource) and source.live
    source.open()
    tiles = drain(source)
    source.close()
    # 3 frames of 256 rows = 768 rows; tiles every 224 rows
    assert [t.strip_offset_px for t in tiles] == [0, 224, 448]
    assert all(t.image.shape == TILE for t in tiles)
    assert source.partial_rows_dropped == 768 - 448 - 256


# --- GenICam ------------------------------------------------------------------------------------------------


def test_genicam_without_harvesters_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "harvesters.core", None)  # as if not installed
    source = open_source(f"genicam:{tmp_path / 'x.cti'}#123", EdgeConfig(), TILE)
    assert isinstance(source, GenICamSource) and source.ident == "123"
    with pytest.raises(SourceError, match="pip install harvesters"):
        source.open()


def test_genicam_pixel_conversion() -> None:
    mono8 = np.arange(12, dtype=np.uint8)
    assert np.array_equal(to_gray_genicam(mono8, 4, 3, "Mono8"), mono8.reshape(3, 4))
    mono12 = np.full(6, 0xABC, np.uint16)
    assert np.all(to_gray_genicam(mono12, 3, 2, "Mono12") == 0xAB)
    assert np.all(to_gray_genicam(np.full(6, 0xFF00, np.uint16), 3, 2, "Mono16") == 0xFF)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255  # red
    gray_rgb = to_gray_genicam(rgb.ravel(), 3, 2, "RGB8")
    gray_bgr = to_gray_genicam(rgb.ravel(), 3, 2, "BGR8")
    assert gray_rgb.shape == (2, 3) and int(gray_rgb[0, 0]) == 76 and int(gray_bgr[0, 0]) == 29
    with pytest.raises(FrameError, match="Mono8"):
        to_gray_genicam(mono8, 4, 3, "BayerRG8")
