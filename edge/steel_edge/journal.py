"""The durable event journal: every event is appended here (SQLite, WAL) before it is sent.

Why: a ZeroMQ PUB socket forgets a message once sent, drops it for a subscriber whose queue is full, and
never had it for one that was not connected yet. The journal keeps every event, with its ``seq``, so the
replay endpoint (``steel_edge.replay``) can hand a subscriber everything it missed: at-least-once
delivery, duplicates removable by ``seq`` (and results by ``event_id``).

**Identity.** A journal has one publisher id, created with it and kept in its ``meta`` table. A daemon
with a journal publishes under that id and continues its ``seq`` after a restart, so a subscriber's gap
detection and replay requests span restarts: "seq 41 to 57 of publisher X" means the same events
forever. (Without a journal every run gets a fresh id and starts at 0.)

**Durability.** WAL mode with ``synchronous=NORMAL`` (``journal.sync: normal``): a committed event
survives the process being killed at any instant (kill -9); a power loss may lose the last
transactions. ``sync: full`` fsyncs each commit and also survives a power loss, at a few ms per event on
ordinary disks. Each append is its own transaction, committed before the message is sent: an event a
subscriber received is always in the journal.

**Retention**, checked every 256 appends: events beyond ``max_events``, older than ``max_age_s``, or,
when the file grows past ``max_bytes``, the oldest tenth, are deleted. A replay request for a seq older
than the oldest retained event gets what is left and says where it starts (``oldest_seq``).

**Failures.** When an append fails (disk full, read-only file system) the daemon still sends the event
(live subscribers get it), counts the failure (``journal_errors`` in status events) and retries the
journal with the next event; nothing already in the journal is touched.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from steel_edge.config import JournalConfig
from steel_edge.events import new_publisher_id

SCHEMA_VERSION = "1"
_PRUNE_EVERY = 256
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    topic BLOB NOT NULL,
    payload BLOB NOT NULL,
    crop BLOB,
    at REAL NOT NULL
);
"""


class JournalError(RuntimeError):
    """The journal file cannot be opened or is not a steel-edge journal."""


@dataclass(frozen=True)
class Stored:
    seq: int
    topic: bytes
    payload: bytes
    crop: bytes | None


def default_path(camera: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "steel-edge" / f"{camera}.journal"


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class Journal:
    """Append side (the publishing thread) and read side (``reader()`` connections for other threads)."""

    def __init__(self, path: Path, cfg: JournalConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.errors = 0
        self.last_error: str | None = None
        self._appends = 0
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(path)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if cfg.sync == 'full' else 'NORMAL'}")
            self._db.executescript(_DDL)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.Error, OSError) as err:
            raise JournalError(f"{path}: cannot open the journal ({err})") from err
        if not meta:
            meta = {"schema": SCHEMA_VERSION, "publisher": new_publisher_id(), "created": str(time.time())}
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        if meta.get("schema") != SCHEMA_VERSION:
            raise JournalError(f"{path}: journal schema {meta.get('schema')!r}, this runtime writes {SCHEMA_VERSION!r}")
        self.publisher_id: str = meta["publisher"]
        row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        # seq goes on after the last journaled event, even after pruning removed every row
        last_meta = int(meta.get("last_seq", "-1"))
        self.next_seq: int = max(row[0] if row[0] is not None else -1, last_meta) + 1

    def append(self, seq: int, topic: bytes, payload: bytes, crop: bytes | None) -> bool:
        """Store one event (its own transaction); False, counted, if the disk refused it."""
        try:
            with self._lock:
                self._db.execute("INSERT INTO events (seq, topic, payload, crop, at) VALUES (?, ?, ?, ?, ?)",
                                 (seq, topic, payload, crop, time.time()))
                self._appends += 1
                if self._appends % _PRUNE_EVERY == 0:
                    self._prune(seq)
        except sqlite3.Error as err:
            self.errors += 1
            self.last_error = f"{self.path}: {err}"
            return False
        return True

    def _prune(self, last_seq: int) -> None:
        db = self._db
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (str(last_seq),))
        db.execute("DELETE FROM events WHERE seq <= ?", (last_seq - self.cfg.max_events,))
        db.execute("DELETE FROM events WHERE at < ?", (time.time() - self.cfg.max_age_s,))
        size = self.size_bytes()
        if size > self.cfg.max_bytes:
            lo, hi = db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
            if lo is not None:
                db.execute("DELETE FROM events WHERE seq < ?", (lo + max(1, (hi - lo + 1) // 10),))
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        with self._lock:
            try:  # remember the last seq even if retention later deletes every row
                row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
                if row[0] is not None:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (str(row[0]),))
            except sqlite3.Error:
                pass
            self._db.close()

    def reader(self) -> JournalReader:
        return JournalReader(self.path)


class JournalReader:
    """A read-only connection for another thread (the replay server, tests, ``steel-edge journal``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = _connect(path, readonly=True)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as err:
            raise JournalError(f"{path}: cannot read the journal ({err})") from err
        self.publisher_id: str = meta.get("publisher", "")

    def bounds(self) -> tuple[int | None, int | None]:
        """(oldest, newest) retained seq, or (None, None) when empty."""
        lo, hi = self._db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
        return lo, hi

    def read(self, from_seq: int, limit: int, to_seq: int | None = None) -> list[Stored]:
        hi = to_seq if to_seq is not None else (1 << 62)
        rows = self._db.execute("SELECT seq, topic, payload, crop FROM events WHERE seq >= ? AND seq <= ? "
                                "ORDER BY seq LIMIT ?", (from_seq, hi, limit)).fetchall()
        return [Stored(int(s), bytes(t), bytes(p), None if c is None else bytes(c)) for s, t, p, c in rows]

    def close(self) -> None:
        self._db.close()
