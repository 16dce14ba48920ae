"""The bad-input corpus: every kind of broken or hostile file a camera folder can hold.

The daemon must survive each with an ``error`` event of the right kind naming the file, quarantine it
(a link is quarantined itself; its target is never touched), publish a result for every good file
around it exactly once and in order, and repeat nothing after a restart. The daemon tests run the real
daemon on a thread with a real SUB socket (helpers copied from ``test_daemon.py``: tests is no package);
the focused tests exercise ``steel_edge.data.imageio`` and ``FolderSource`` directly.
"""

from __future__ import annotations

import os
import resource
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon_helpers import check_stream, make_config, running
from steel_edge.config import FolderConfig
from steel_edge.data import imageio
from steel_edge.data.imageio import ImageReadError, ImageTooLarge, decode_gray, display_path, read_gray
from steel_edge.data.synth import generate
from steel_edge.events import DefectEvent, ErrorEvent, StatusEvent
from steel_edge.sources.base import EndOfStream, FrameError, SourceError
from steel_edge.sources.folder import FolderSource

H, W = 256, 1600


# -- the corpus ----------------------------------------------------------------------------------------
def _frame(i: int) -> np.ndarray:
    return generate(11, i).image


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A structurally valid PNG of a few hundred bytes whose header declares ``width`` x ``height``."""
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def jpeg_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A complete small JPEG whose frame header (SOF0) is patched to declare ``width`` x ``height``."""
    data = bytearray(_encode(".jpg", _frame(0)[:64, :64]))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _fs(name: str | bytes) -> str:
    """A file name as Python's os functions spell it (non-UTF-8 bytes become lone surrogates)."""
    return os.fsdecode(name)


def build_corpus(folder: Path, outside: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """Write good frames and every bad input into ``folder``.

    Returns (good file names in processing order, {bad file name: error kind}, ignored entry names);
    names are as ``os.listdir`` gives them (``_fs``). ``outside`` receives the symlink targets.
    """
    folder.mkdir()
    outside.mkdir()
    good_jpg, good_png = _encode(".jpg", _frame(0)), _encode(".png", _frame(1))
    good: dict[str | bytes, bytes] = {
        "a_good0.jpg": good_jpg,
        "c_good1.png": good_png,
        "m_good2.jpg": _encode(".jpg", _frame(2)),
        "z_good3.jpg": _encode(".jpg", _frame(3)),
        # converted, not refused: RGBA PNG, 16-bit PNG, colour JPEG with R != G != B
        "g_rgba.png": _encode(".png", cv2.cvtColor(_frame(4), cv2.COLOR_GRAY2BGRA)),
        "g_deep16.png": _encode(".png", _frame(5).astype(np.uint16) * 257),
        "g_colour.jpg": _encode(".jpg", np.dstack([_frame(6), _frame(6) // 2, 255 - _frame(6)])),
        b"g_name\xff.jpg": _encode(".jpg", _frame(7)),  # a good file with a non-UTF-8 name
    }
    bad: dict[str | bytes, tuple[bytes, str]] = {
        "b_empty.jpg": (b"", "decode"),
        "b_empty.png": (b"", "decode"),
        "b_trunc_head.jpg": (good_jpg[:20], "decode"),
        "b_trunc_head2.jpg": (good_jpg[:300], "decode"),
        "b_trunc_scan.jpg": (good_jpg[:len(good_jpg) // 2], "decode"),
        "b_trunc_eoi.jpg": (good_jpg[:-2], "decode"),
        "b_trunc_head.png": (good_png[:20], "decode"),
        "b_trunc_mid.png": (good_png[:len(good_png) // 2], "decode"),
        "b_trunc_iend.png": (good_png[:-12], "decode"),
        "b_text.jpg": (b"this is not an image\n", "decode"),
        "b_random.png": (np.random.default_rng(3).bytes(5000), "decode"),
        "b_page.jpg": (b"<!DOCTYPE html><html><body><img src='x.jpg'></body></html>\n", "decode"),
        "b_bomb.png": (png_bomb(), "frame_size"),
        "b_bomb.jpg": (jpeg_bomb(), "frame_size"),
        "b_small.png": (_encode(".png", np.full((100, 200), 128, np.uint8)), "frame_size"),
        b"b_bad\xff\xfe.jpg": (b"not an image either", "decode"),
    }
    for name, data in good.items():
        _write(folder, name, data)
    for name, (data, _kind) in bad.items():
        _write(folder, name, data)
    kinds = {_fs(n): k for n, (_d, k) in bad.items()}
    # symbolic links: out of the folder (a valid image; a system file), into it, nowhere
    (outside / "target.jpg").write_bytes(good_jpg)
    os.symlink(outside / "target.jpg", folder / "l_out.jpg")
    os.symlink("/etc/passwd", folder / "l_passwd.jpg")
    os.symlink(folder / "a_good0.jpg", folder / "l_in.jpg")
    os.symlink(outside / "nothing.jpg", folder / "l_dangling.jpg")
    kinds |= {"l_out.jpg": "read", "l_passwd.jpg": "read", "l_in.jpg": "read", "l_dangling.jpg": "read"}
    # not files: ignored without an event
    (folder / "d_dir.jpg").mkdir()
    _write(folder / "d_dir.jpg", "inner.jpg", good_jpg)
    os.mkfifo(folder / "f_fifo.jpg")
    return sorted(_fs(n) for n in good), kinds, ["d_dir.jpg", "f_fifo.jpg"]


def _write(folder: Path, name: str | bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(folder), os.fsencode(name))  # bytes path: any name Linux allows
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# -- the daemon over the whole corpus --------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_batch_daemon_survives_the_whole_bad_input_corpus(tmp_path: Path) -> None:
    folder, outside, state = tmp_path / "in", tmp_path / "outside", tmp_path / "state"
    good, bad, ignored = build_corpus(folder, outside)
    target_before = (outside / "target.jpg").read_bytes()
    with running(make_config(f"folder:{folder}", state)) as run:
        eos = run.until_eos()
    assert run.code == 0 and eos.reason == "complete"
    check_stream(run)

    # every good file once, in name order; frame_id is JSON-safe text even for a non-UTF-8 name
    assert [r.frame_id for r in run.results()] == [display_path(n) for n in good]
    assert "g_name\\xff.jpg" in [r.frame_id for r in run.results()]
    assert eos.frames_processed == len(good)

    # one error per bad file, of the right kind, naming it, not fatal
    errors = {e.frame_id: e for e in run.errors()}
    assert len(run.errors()) == len(bad) == eos.errors
    assert set(errors) == {display_path(n) for n in bad}
    for name, kind in bad.items():
        err = errors[display_path(name)]
        assert err.error == kind, err
        assert display_path(name) in err.message and err.file and display_path(name) in err.file, err
        assert not err.fatal and err.quarantined_to, err
    assert "dangling" in errors["l_dangling.jpg"].message
    assert "outside the folder" in errors["l_out.jpg"].message
    assert "megapixels" in errors["b_bomb.png"].message and "megapixels" in errors["b_bomb.jpg"].message
    assert "truncated" in errors["b_trunc_scan.jpg"].message and "truncated" in errors["b_trunc_iend.png"].message

    # quarantine holds exactly the bad entries (links as links); the folder keeps the good and the ignored
    quarantine = state / "quarantine"
    assert sorted(os.listdir(quarantine)) == sorted(bad)
    for link in ("l_out.jpg", "l_passwd.jpg", "l_in.jpg", "l_dangling.jpg"):
        assert (quarantine / link).is_symlink()
    assert sorted(os.listdir(folder)) == sorted(good + ignored)
    assert (outside / "target.jpg").read_bytes() == target_before  # the link's target untouched
    assert not (outside / "nothing.jpg").exists() and Path("/etc/passwd").exists()

    # a restart over the same folder repeats nothing: no result, no error (non-UTF-8 name included)
    with running(make_config(f"folder:{folder}", state)) as again:
        eos = again.until_eos()
    assert again.code == 0 and eos.frames_processed == 0 and eos.errors == 0
    assert not again.results() and not again.errors()
    check_stream(again)


@pytest.mark.timeout(120)
def test_watch_mode_reports_bad_files_as_they_arrive_and_goes_on(tmp_path: Path) -> None:
    folder, outside = tmp_path / "watch", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "target.jpg").write_bytes(_encode(".jpg", _frame(0)))
    cfg = make_config(f"folder:{folder}", tmp_path / "state", once=False)
    with running(cfg) as run:
        run.until(lambda e: isinstance(e, StatusEvent))
        good_jpg = _encode(".jpg", _frame(1))
        _write(folder, "w_trunc.jpg.part", good_jpg[: len(good_jpg) // 2])
        os.replace(folder / "w_trunc.jpg.part", folder / "w_trunc.jpg")
        _write(folder, "w_bomb.png", png_bomb())
        _write(folder, b"w_bad\xff.png", b"\x89PNG\r\n\x1a\n garbage")
        os.symlink(outside / "target.jpg", folder / "w_link.jpg")
        (folder / "w_dir.jpg").mkdir()
        _write(folder, "w_good.jpg.part", good_jpg)
        os.replace(folder / "w_good.jpg.part", folder / "w_good.jpg")
        expected = {"w_trunc.jpg": "decode", "w_bomb.png": "frame_size", "w_bad\\xff.png": "decode",
                    "w_link.jpg": "read"}
        got: dict[str, str] = {}
        results: list[str] = []
        while len(got) < len(expected) or not results:
            event = run.until(lambda e: isinstance(e, DefectEvent | ErrorEvent), timeout=20)
            if isinstance(event, DefectEvent):
                results.append(event.frame_id)
            else:
                assert isinstance(event, ErrorEvent) and event.frame_id and not event.fatal
                assert event.frame_id not in got and event.frame_id in event.message
                got[event.frame_id] = event.error
        time.sleep(1.0)  # nothing more comes: each file once, the directory never
        while run.sub.poll(0):
            run.recv(0.1)
    assert got == expected and results == ["w_good.jpg"]
    assert len([e for e in run.events if isinstance(e, DefectEvent | ErrorEvent)]) == len(expected) + 1
    assert (outside / "target.jpg").is_file() and run.code == 0


# -- FolderSource directly ----------------------------------------------------------------------------
def _source(folder: Path, state: Path, *, batch: bool = True,
            expect_size: tuple[int, int] | None = None) -> FolderSource:
    cfg = FolderConfig(state_dir=state, settle_s=0.0, poll_s=0.05)
    return FolderSource(f"folder:{folder}", folder, cfg, batch=batch, expect_size=expect_size)


@pytest.mark.parametrize("expect_size", [None, (H, W)])
def test_bomb_is_a_frame_size_error_with_and_without_an_expected_size(tmp_path: Path,
                                                                      expect_size: tuple[int, int] | None) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "bomb.jpg").write_bytes(jpeg_bomb())
    src = _source(folder, tmp_path / "state", expect_size=expect_size)
    src.open()
    kinds = []
    for _ in range(2):
        with pytest.raises(FrameError) as info:
            src.read(1.0)
        kinds.append(info.value.kind)
        assert "60000x60000" in str(info.value)
    assert kinds == ["frame_size", "frame_size"]
    with pytest.raises(EndOfStream):
        src.read(1.0)
    src.close()


@pytest.mark.parametrize("batch", [True, False])
def test_a_file_deleted_between_listing_and_reading_is_a_read_error(tmp_path: Path, batch: bool) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "gone.jpg").write_bytes(_encode(".jpg", _frame(0)))
    src = _source(folder, tmp_path / "state", batch=batch)
    src.open()
    key = src._scan_keys()[0]  # listed ...
    (folder / "gone.jpg").unlink()  # ... then deleted before it is read
    with pytest.raises(FrameError) as info:
        src._take(key)
    err = info.value
    assert err.kind == "read" and "gone.jpg" in str(err) and "not found" in str(err)
    assert err.quarantined_to is None and err.done is not None
    err.done()  # recorded: the ledger does not choke on it
    assert key in src.ledger.done
    src.close()


def test_ledger_keeps_a_non_utf8_name_exactly(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder, b"x\xff\xfe.jpg", _encode(".jpg", _frame(0)))
    src = _source(folder, tmp_path / "state")
    src.open()
    frame = src.read(1.0)
    assert frame is not None and frame.frame_id == "x\\xff\\xfe.jpg"
    frame.done()
    src.close()
    (tmp_path / "state" / "processed.log").read_text(encoding="utf-8")  # valid UTF-8 (escaped)
    again = _source(folder, tmp_path / "state")
    again.open()
    with pytest.raises(EndOfStream):
        again.read(0.5)
    again.close()


def test_an_unwritable_ledger_place_is_a_source_error_that_names_it_and_the_fix(tmp_path: Path) -> None:
    """A read-only archive keeps the ledger's default home (DIR/.steel-edge) unwritable; the user learns where
    and what to set, not a bare errno. A file in the way fails the same mkdir, also for root."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder, "a.png", _encode(".png", _frame(0)))
    (tmp_path / "blocked").write_text("not a folder")
    src = _source(folder, tmp_path / "blocked" / "state")
    with pytest.raises(SourceError, match=r"blocked/state/processed\.log.*set folder\.state_dir to a writable"):
        src.open()


# -- imageio -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb])
def test_a_bomb_is_refused_from_its_header_without_decoding(tmp_path: Path, make: Callable[[], bytes],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.img"
    path.write_bytes(make())
    assert len(make()) < 10_000

    def no_decoding(*_args: object) -> None:
        raise AssertionError("the decoder was called")

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with monkeypatch.context() as m:
        m.setattr(imageio.cv2, "imdecode", no_decoding)
        with pytest.raises(ImageTooLarge, match="60000x60000"):
            read_gray(path)
    # and with the real decoder in place it is refused all the same, and memory never spikes
    with pytest.raises(ImageTooLarge):
        read_gray(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50, grown_mib
    assert int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) <= imageio.MAX_IMAGE_PIXELS


def test_just_under_the_pixel_limit_is_not_a_bomb() -> None:
    with pytest.raises(ImageTooLarge):
        imageio.checked_size(png_bomb(8193, 8192))
    assert imageio.checked_size(png_bomb(8192, 8192)) == (8192, 8192)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncation_anywhere_is_detected_before_decoding(ext: str) -> None:
    data = _encode(ext, _frame(0))
    cuts = [0, 1, 2, 8, 20, 100, 300, len(data) // 3, len(data) // 2, len(data) - 12, len(data) - 3,
            len(data) - 2, len(data) - 1]
    for cut in cuts:
        with pytest.raises(ImageReadError) as info:
            decode_gray(data[:cut], f"cut{cut}{ext}")
        assert f"cut{cut}{ext}" in str(info.value)
    with pytest.raises(ImageReadError, match="truncated"):
        decode_gray(data[: len(data) // 2])  # cut inside the scan data: refused, never partly decoded
    # complete files with trailing padding (or appended bytes) still decode
    for tail in (b"", b"\x00" * 100, b"\xff\xff", b"trailer"):
        assert np.array_equal(decode_gray(data + tail), decode_gray(data))


def test_non_images_with_image_names_are_refused_without_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *_a: pytest.fail("the decoder was called"))
    for data in (b"", b"hello\n", b"<html><body>404</body></html>", np.random.default_rng(0).bytes(4096)):
        with pytest.raises(ImageReadError):
            decode_gray(data, "x.jpg")


def test_colour_alpha_and_16_bit_images_are_converted_to_8_bit_gray() -> None:
    gray = _frame(0)
    rgba = decode_gray(_encode(".png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)))
    deep = decode_gray(_encode(".png", gray.astype(np.uint16) * 256 + 100))  # high byte: the gray value
    bgr = np.dstack([gray, gray // 2, 255 - gray])
    colour = decode_gray(_encode(".png", bgr))
    for image in (rgba, deep, colour):
        assert image.dtype == np.uint8 and image.shape == (H, W)
    assert np.array_equal(rgba, gray) and np.array_equal(deep, gray)
    assert np.abs(colour.astype(int) - cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(int)).max() <= 1


def test_read_gray_keeps_its_behaviour_for_valid_files(tmp_path: Path) -> None:
    gray = _frame(0)
    (tmp_path / "a.png").write_bytes(_encode(".png", gray))
    assert np.array_equal(read_gray(tmp_path / "a.png", expect=(H, W)), gray)
    assert imageio.image_size(tmp_path / "a.png") == (W, H)
    with pytest.raises(ImageReadError, match="expected 10x10"):
        read_gray(tmp_path / "a.png", expect=(10, 10))
    with pytest.raises(ImageReadError, match="not found"):
        read_gray(tmp_path / "missing.png")


def test_strict_jpeg_decoding_gives_opencvs_pixels(severstal_dir: Path) -> None:
    """The folder source decodes JPEGs once, strictly (simplejpeg); the pixels must be exactly those OpenCV
    gives, which training read, or the line would see other frames than the model learnt on."""
    from steel_edge.data.synth import SynthConfig, _render

    frames = [_render(0, i, SynthConfig())[1] for i in range(6)]
    frames += [p.read_bytes() for p in sorted((severstal_dir / "train_images").glob("*.jpg"))[:6]]
    for data in frames:
        strict = decode_gray(data, "f.jpg", strict_jpeg=True)
        assert np.array_equal(strict, decode_gray(data, "f.jpg")) and strict.flags["C_CONTIGUOUS"]
