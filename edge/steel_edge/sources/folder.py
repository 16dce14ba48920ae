"""``folder:DIR``: image files in a folder, processed once each, in batch or watch mode, restart-safe.

Batch (``--once``): the files present at open, in name order, then ``EndOfStream``. Watch: the same,
then every new file once it is completely written, until the daemon stops.

**Complete files.** A file is taken once its size and modification time have held still for
``settle_s`` (a copy in progress keeps growing). Names a writer uses while writing (``.*``, ``*.part``,
``*.tmp``, ``*.partial``, ``*.crdownload``, ``*~``) are never taken, so the safest upload is: write
``x.jpg.part``, then rename it to ``x.jpg`` (rename is atomic). If a taken file fails to decode but its
size or time changed since it was judged complete, it is put back to wait instead of quarantined.

**Restart-safe.** A ledger (``STATE_DIR/processed.log``, one JSON line per handled file: relative
path, size, mtime, outcome, and the camera id and model sha256 that handled it) is appended when the
file's event has been *published* (``Frame.done``), not when it is read. A restarted daemon loads the
ledger and skips exactly the files handled by the same camera id and model: none is skipped that was
not published, and after a clean stop (SIGTERM drains the pipeline) none is repeated. Another model or
camera id processes the folder again (a ledger line written before these keys existed counts for any),
``folder.reprocess`` (``--reprocess``) processes every file again, and the number of files skipped is
said at start, so "0 frames" is never a mystery.
After a crash (kill -9) the files that were in flight are processed again and their events carry the
same ``event_id`` (it hashes the file's relative path), so subscribers can drop the duplicates. A file
is identified by (path, size, mtime): a file replaced under the same name is a new file. A torn last
ledger line (crash mid-append) is ignored.

**Unreadable files** (empty, truncated, not an image, wrong size) are moved to ``quarantine_dir``
(``STATE_DIR/quarantine`` by default, relative path kept, a numeric suffix when the name is taken) and
reported as a ``FrameError``; the daemon publishes an ``error`` event naming the file and goes on.
With ``quarantine: false`` they are only recorded in the ledger. Every file is read once, through one
descriptor, and checked from memory (``steel_edge.data.imageio``): the error kinds are

- ``read``: the file could not be read: deleted between listing and reading (reported, not skipped
  silently: it was seen, so someone should hear it went), a symbolic link, not a regular file, too big;
- ``decode``: empty, truncated (a JPEG without its end-of-image marker, a PNG without ``IEND``: a
  partly decoded frame is never passed on), not a JPEG/PNG/BMP/TIFF whatever its name says, corrupt;
- ``frame_size``: a size the model cannot take (``expect_size``), or a header declaring more than
  ``MAX_IMAGE_PIXELS`` (a decompression bomb), refused from the header without decoding.

Colour, RGBA and 16-bit images are converted to 8-bit gray, not refused (``imageio``'s docstring).

**Symbolic links are never followed**, wherever they point (out of the folder, into it, nowhere): a
link whose name matches the patterns is refused as a ``read`` error and the *link* is moved to
quarantine; its target is not opened, not moved, not touched. A link inside the folder would otherwise
process one file twice, and one pointing out of it would let whoever can write the folder make the
daemon read (and quarantine) any file it can. Files are opened with ``O_NOFOLLOW``, so a file swapped
for a link after the listing is refused too. Directories (also one named ``x.jpg``), FIFOs, sockets
and devices are not files to process and are ignored; with ``recursive`` sub-folders are entered, but
never through a link.

**File names that are not UTF-8** (a Linux name is bytes) are opened and moved by their real name,
but reported (``frame_id``, ``file``, messages) with the odd bytes as ``\\xff`` escapes
(``imageio.display_path``), since JSON carries only Unicode text; the ledger keeps the exact name
(JSON ``\\udcff`` escapes), so a restart skips the file.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from steel_edge.config import FolderConfig
from steel_edge.data.imageio import (
    ImageFileError,
    ImageReadError,
    ImageTooLarge,
    checked_size,
    decode_gray,
    display_path,
    read_bytes,
)
from steel_edge.sources.base import EndOfStream, ErrorKind, Frame, FrameError, SourceError

log = logging.getLogger("steel_edge.sources")
LEDGER_NAME = "processed.log"
_TEMP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", "~")


class _WrongSize(ImageReadError):
    """A readable image of a size the model cannot take."""


@dataclass(frozen=True)
class _FileKey:
    rel: str
    size: int
    mtime_ns: int


class Ledger:
    """The append-only record of handled files (module docstring). Thread-safe appends."""

    def __init__(self, path: Path, camera: str = "", model_sha256: str = "") -> None:
        self.path = path
        self.camera = camera
        self.model = model_sha256
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self.done: set[_FileKey] = set()
        self.other: set[_FileKey] = set()  # handled, but by another camera id or model
        self.torn_lines = 0

    def _ours(self, rec: dict[str, Any]) -> bool:
        """Handled by this camera and model (a line from before these keys existed counts for any)."""
        return (rec.get("camera") in (None, self.camera) or not self.camera) and \
            (rec.get("model") in (None, self.model) or not self.model)

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                    key = _FileKey(rec["file"], int(rec["size"]), int(rec["mtime_ns"]))
                except (ValueError, KeyError, TypeError):
                    self.torn_lines += 1
                    continue
                (self.done if self._ours(rec) else self.other).add(key)
        self.other -= self.done
        self._fh = self.path.open("a", encoding="utf-8")

    def record(self, key: _FileKey, outcome: str, **extra: Any) -> None:
        rec = {"file": key.rel, "size": key.size, "mtime_ns": key.mtime_ns, "outcome": outcome,
               "at": time.time(), "camera": self.camera, "model": self.model, **extra}
        line = json.dumps(rec, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a non-UTF-8 file name (lone surrogates): escape it, exactly reversibly
            line = json.dumps(rec, ensure_ascii=True)
        with self._lock:
            self.done.add(key)
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()  # in the OS's hands: survives a killed process

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class FolderSource:
    """Image files of one folder (module docstring). Not live: frames wait for the pipeline."""

    live = False

    def __init__(self, spec: str, root: Path, cfg: FolderConfig, *, batch: bool,
                 expect_size: tuple[int, int] | None = None, camera: str = "", model_sha256: str = "") -> None:
        self.spec = spec
        self.root = root
        self.cfg = cfg
        self.batch = batch
        # (height, width) every frame must have (seg models do not resize); checked from the header
        self.expect_size = expect_size
        self.state_dir = cfg.state_dir or root / ".steel-edge"
        self.quarantine_dir = cfg.quarantine_dir or self.state_dir / "quarantine"
        self.ledger = Ledger(self.state_dir / LEDGER_NAME, camera, model_sha256)
        self.skipped = 0  # files at open that the ledger says are done
        self._queue: list[_FileKey] = []
        self._taken: set[_FileKey] = set()  # handed out, not yet recorded
        self._seen: dict[str, tuple[int, int, float]] = {}  # rel -> (size, mtime_ns, stable since)
        self._next_scan = 0.0
        self._opened = False

    # -- protocol ------------------------------------------------------------------------------
    def open(self) -> None:
        if self.root.is_file():
            raise SourceError(f"{self.spec}: {self.root} is a file, not a folder; folder: takes a folder of images "
                              f"(to process one file, put it in a folder of its own)")
        if not self.root.is_dir():
            raise SourceError(f"{self.spec}: folder {self.root} does not exist")
        try:
            self.ledger.load()
        except OSError as err:  # e.g. a read-only archive: the ledger's default home is inside it
            raise SourceError(f"{self.spec}: cannot keep the processed-file ledger at {self.ledger.path} "
                              f"({err.strerror or err}); set folder.state_dir to a writable folder") from err
        self._opened = True
        if self.cfg.reprocess:
            self.ledger.done.clear()
        present = self._scan_keys()
        self.skipped = sum(k in self.ledger.done for k in present)
        again = sum(k in self.ledger.other for k in present)
        if self.skipped:
            log.warning("%s: %d of %d files already processed by camera %s with this model are skipped (ledger %s; "
                        "--reprocess processes them again)", self.spec, self.skipped, len(present),
                        self.ledger.camera or "?", self.ledger.path)
        if again:
            log.info("%s: %d files processed before by another model or camera id are processed again", self.spec,
                     again)
        if self.batch:
            self._queue = [k for k in present if k not in self.ledger.done]

    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._queue:
                frame = self._take(self._queue.pop(0))
                if frame is not None:
                    return frame
                continue
            if self.batch:
                raise EndOfStream(f"{self.spec}: every file processed")
            now = time.monotonic()
            if now >= self._next_scan:
                self._next_scan = now + self.cfg.poll_s
                self._queue = self._ready_files(now)
                if self._queue:
                    continue
            wait = min(self._next_scan, deadline) - time.monotonic()
            if wait <= 0 and time.monotonic() >= deadline:
                return None
            time.sleep(max(0.0, wait))

    def close(self) -> None:
        self.ledger.close()

    # -- files ---------------------------------------------------------------------------------
    def _candidates(self) -> list[Path]:
        """Regular files and symbolic links whose names match, in name order (links to be refused).

        ``os.scandir`` with ``follow_symlinks=False`` throughout: a link is never entered or followed,
        and a directory named like an image is not a file.
        """
        out: list[Path] = []
        self._walk(self.root, out)
        return sorted(out)

    def _walk(self, folder: Path, out: list[Path]) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return  # a sub-folder removed or made unreadable meanwhile: nothing to take from it
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.endswith(_TEMP_SUFFIXES):
                continue  # hidden (our own state folder too) and being-written names
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self.cfg.recursive:
                        self._walk(folder / name, out)
                    continue
                if not (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                    continue  # FIFO, socket, device
            except OSError:
                continue  # vanished between listing and stat
            lower = name.lower()
            if any(fnmatch.fnmatch(lower, p.lower()) for p in self.cfg.patterns):
                out.append(folder / name)

    def _key(self, path: Path) -> _FileKey | None:
        try:
            st = os.lstat(path)  # a link's own identity: its target is never looked at
        except OSError:
            return None  # vanished between listing and stat
        return _FileKey(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns)

    def _scan_keys(self) -> list[_FileKey]:
        return [k for k in (self._key(p) for p in self._candidates()) if k is not None]

    def _ready_files(self, now: float) -> list[_FileKey]:
        """Watch mode: unhandled files whose size and mtime held still for ``settle_s``."""
        ready = []
        present = set()
        for key in self._scan_keys():
            present.add(key.rel)
            if key in self.ledger.done or key in self._taken:
                continue
            size_time = (key.size, key.mtime_ns)
            seen = self._seen.get(key.rel)
            if seen is None or seen[:2] != size_time:
                self._seen[key.rel] = (*size_time, now)
                if self.cfg.settle_s > 0:
                    continue
            elif now - seen[2] < self.cfg.settle_s:
                continue
            ready.append(key)
        for rel in list(self._seen):
            if rel not in present:
                del self._seen[rel]
        return ready

    def _take(self, key: _FileKey) -> Frame | None:
        """The file's frame; None if it turned out to be still changing; ``FrameError`` if unusable.

        The bytes are read once and every check runs on them (size from the header before decoding,
        so a bomb or a wrong-size file is never decoded); the file is not opened a second time.
        """
        path = self.root / key.rel
        self._taken.add(key)
        t0 = time.monotonic()
        try:
            self._refuse_link(path)
            data = read_bytes(path, follow_symlinks=False)
            width, height = checked_size(data, path)
            if width:
                self._check_size(path, (height, width))
            image = decode_gray(data, path, strict_jpeg=True)
            self._check_size(path, image.shape[:2])  # formats without a size in their header
        except (ImageReadError, OSError) as err:
            if not self.batch and self._changed(path, key):
                self._taken.discard(key)  # still being written after all: wait for it to settle again
                self._seen.pop(key.rel, None)
                return None
            raise self._reject(path, key, err) from None
        return Frame(image=image, frame_id=display_path(key.rel), t_mono=t0, file=display_path(path),
                     done=lambda: self._done(key, "ok"))

    def _check_size(self, path: Path, size: tuple[int, ...]) -> None:
        if self.expect_size is not None and tuple(size) != self.expect_size:
            raise _WrongSize(path, f"image is {size[1]}x{size[0]}, the model needs "
                                   f"{self.expect_size[1]}x{self.expect_size[0]} (width x height)")

    def _refuse_link(self, path: Path) -> None:
        """``ImageFileError`` for a symbolic link, saying where it points; the target is never opened."""
        if not path.is_symlink():
            return
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        resolved = Path(os.path.realpath(path))  # resolves names only; opens nothing
        if not os.path.exists(path):
            where = "a dangling link"
        elif resolved.is_relative_to(self.root.resolve()):
            where = "inside the folder"
        else:
            where = "outside the folder"
        raise ImageFileError(path, f"is a symbolic link to {display_path(target)!r} ({where}); links are "
                                   "never followed, the link is refused and its target left alone")

    def _changed(self, path: Path, key: _FileKey) -> bool:
        now = self._key(path)
        return now is not None and now != key

    def _reject(self, path: Path, key: _FileKey, err: Exception) -> FrameError:
        message = str(err) if isinstance(err, ImageReadError) else f"{display_path(path)}: {err}"
        kind: ErrorKind = "decode"
        if isinstance(err, _WrongSize | ImageTooLarge):
            kind = "frame_size"
        elif isinstance(err, ImageFileError | OSError) or not os.path.lexists(path):
            kind = "read"
        moved: Path | None = None
        if self.cfg.quarantine and os.path.lexists(path):  # a file deleted meanwhile has nothing to move
            try:
                moved = self._quarantine(path, key.rel)
            except OSError as move_err:
                message += f" (could not quarantine: {move_err})"
        message = _text(message)
        return FrameError(message, kind=kind, frame_id=display_path(key.rel), file=display_path(path),
                          quarantined_to=display_path(moved) if moved else None,
                          done=lambda: self._done(key, "error", error=message))

    def _quarantine(self, path: Path, rel: str) -> Path:
        """Move ``path`` (a link itself, never its target: ``rename`` does not follow) into quarantine."""
        target = self.quarantine_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while os.path.lexists(target):  # lexists: a dangling link already there still takes the name
            target = target.with_name(f"{Path(rel).stem}.{n}{Path(rel).suffix}")
            n += 1
        shutil.move(os.fspath(path), os.fspath(target))
        return target

    def _done(self, key: _FileKey, outcome: str, **extra: Any) -> None:
        self.ledger.record(key, outcome, **extra)
        self._taken.discard(key)


def _text(message: str) -> str:
    """``message`` as valid UTF-8 text: an ``OSError`` may carry a non-UTF-8 name as lone surrogates."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
