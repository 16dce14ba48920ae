"""``folder:DIR``: image files in a folder, processed once each, in batch or watch mode, restart-safe.

Batch (``--once``): the files present at open, in name order, then ``EndOfStream``. Watch: the same,
then every new file once it is completely written, until the daemon stops.

**Complete files.** A file is taken once its size and modification time have held still for
``settle_s`` (a copy in progress keeps growing). Names a writer uses while writing (``.*``, ``*.part``,
``*.tmp``, ``*.partial``, ``*.crdownload``, ``*~``) are never taken, so the safest upload is: write
``x.jpg.part``, then rename it to ``x.jpg`` (rename is atomic). If a taken file fails to decode but its
size or time changed since it was judged complete, it is put back to wait instead of quarantined.

**Restart-safe.** A ledger (``STATE_DIR/processed.log``, one JSON line per handled file: relative
path, size, mtime and outcome) is appended when the file's event has been *published* (``Frame.done``),
not when it is read. A restarted daemon loads the ledger and skips exactly those files: none is
skipped that was not published, and after a clean stop (SIGTERM drains the pipeline) none is repeated.
After a crash (kill -9) the files that were in flight are processed again and their events carry the
same ``event_id`` (it hashes the file's relative path), so subscribers can drop the duplicates. A file
is identified by (path, size, mtime): a file replaced under the same name is a new file. A torn last
ledger line (crash mid-append) is ignored.

**Unreadable files** (empty, truncated, not an image, wrong size) are moved to ``quarantine_dir``
(``STATE_DIR/quarantine`` by default, relative path kept, a numeric suffix when the name is taken) and
reported as a ``FrameError``; the daemon publishes an ``error`` event naming the file and goes on.
With ``quarantine: false`` they are only recorded in the ledger.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from steel_edge.config import FolderConfig
from steel_edge.data.imageio import ImageReadError, image_size, read_gray
from steel_edge.sources.base import EndOfStream, ErrorKind, Frame, FrameError, SourceError

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

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self.done: set[_FileKey] = set()
        self.torn_lines = 0

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                    self.done.add(_FileKey(rec["file"], int(rec["size"]), int(rec["mtime_ns"])))
                except (ValueError, KeyError, TypeError):
                    self.torn_lines += 1
        self._fh = self.path.open("a", encoding="utf-8")

    def record(self, key: _FileKey, outcome: str, **extra: Any) -> None:
        line = json.dumps({"file": key.rel, "size": key.size, "mtime_ns": key.mtime_ns, "outcome": outcome,
                           "at": time.time(), **extra}, ensure_ascii=False)
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
                 expect_size: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.root = root
        self.cfg = cfg
        self.batch = batch
        # (height, width) every frame must have (seg models do not resize); checked from the header
        self.expect_size = expect_size
        self.state_dir = cfg.state_dir or root / ".steel-edge"
        self.quarantine_dir = cfg.quarantine_dir or self.state_dir / "quarantine"
        self.ledger = Ledger(self.state_dir / LEDGER_NAME)
        self._queue: list[_FileKey] = []
        self._taken: set[_FileKey] = set()  # handed out, not yet recorded
        self._seen: dict[str, tuple[int, int, float]] = {}  # rel -> (size, mtime_ns, stable since)
        self._next_scan = 0.0
        self._opened = False

    # -- protocol ------------------------------------------------------------------------------
    def open(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"{self.spec}: folder {self.root} does not exist")
        self.ledger.load()
        self._opened = True
        if self.batch:
            self._queue = [k for k in self._scan_keys() if k not in self.ledger.done]

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
        walker = self.root.rglob("*") if self.cfg.recursive else self.root.iterdir()
        out = []
        for path in walker:
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or path.name.endswith(_TEMP_SUFFIXES):
                continue  # hidden (our own state folder too) and being-written names
            name = path.name.lower()
            if any(fnmatch.fnmatch(name, p.lower()) for p in self.cfg.patterns) and path.is_file():
                out.append(path)
        return sorted(out)

    def _key(self, path: Path) -> _FileKey | None:
        try:
            st = path.stat()
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
        """The file's frame; None if it turned out to be still changing; ``FrameError`` if unusable."""
        path = self.root / key.rel
        self._taken.add(key)
        t0 = time.monotonic()
        try:
            if self.expect_size is not None:
                width, height = image_size(path)
                if (height, width) != self.expect_size:
                    raise _WrongSize(path, f"image is {width}x{height}, the model needs "
                                           f"{self.expect_size[1]}x{self.expect_size[0]} (width x height)")
            image = read_gray(path)
        except (ImageReadError, OSError) as err:
            if not self.batch and self._changed(path, key):
                self._taken.discard(key)  # still being written after all: wait for it to settle again
                self._seen.pop(key.rel, None)
                return None
            raise self._reject(path, key, err) from None
        return Frame(image=image, frame_id=key.rel, t_mono=t0, file=str(path), done=lambda: self._done(key, "ok"))

    def _changed(self, path: Path, key: _FileKey) -> bool:
        now = self._key(path)
        return now is not None and now != key

    def _reject(self, path: Path, key: _FileKey, err: Exception) -> FrameError:
        message = str(err) if isinstance(err, ImageReadError) else f"{path}: {err}"
        kind: ErrorKind = "frame_size" if isinstance(err, _WrongSize) else "decode"
        if isinstance(err, OSError) or not path.exists():
            kind = "read"
        moved: Path | None = None
        if self.cfg.quarantine:
            try:
                moved = self._quarantine(path, key.rel)
            except OSError as move_err:
                message += f" (could not quarantine: {move_err})"
        return FrameError(message, kind=kind, frame_id=key.rel, file=str(path),
                          quarantined_to=str(moved) if moved else None,
                          done=lambda: self._done(key, "error", error=message))

    def _quarantine(self, path: Path, rel: str) -> Path:
        target = self.quarantine_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():
            target = target.with_name(f"{Path(rel).stem}.{n}{Path(rel).suffix}")
            n += 1
        shutil.move(os.fspath(path), os.fspath(target))
        return target

    def _done(self, key: _FileKey, outcome: str, **extra: Any) -> None:
        self.ledger.record(key, outcome, **extra)
        self._taken.discard(key)
