"""The JSON Lines sink: every event as one JSON object a line in a file, rotated by size.

Useful on its own as the report of a batch run (``--once`` on a folder: one line per file, then the
``eos``) and for plants that ingest files instead of subscribing to a socket. The line is the event's
payload byte for byte, the same JSON ZeroMQ sends and the journal stores, so ``seq``, ``publisher`` and
``event_id`` match every other sink's. Crops are not written (they travel on ZeroMQ and in the journal).

Each line is written through to the operating system at once (a killed daemon loses no line the OS
has); ``jsonl.fsync`` says when the file is also forced to disk: ``rotate`` (when a file is rotated or
closed, the default), ``every`` (each event, power-loss safe) or ``never``. Rotation: when the next line
would take the file past ``max_bytes``, ``events.jsonl`` becomes ``events.jsonl.1`` (``.1`` becomes
``.2`` ...; beyond ``keep`` the oldest is deleted) and a new file starts, so no line is ever split across
files. A write that fails (disk full) is counted and reported in ``health``; the next event tries again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from steel_edge.config import JsonlConfig
from steel_edge.sinks.base import Outgoing, SinkHealth

log = logging.getLogger("steel_edge.sinks.jsonl")


class JsonlSink:
    name = "jsonl"

    def __init__(self, cfg: JsonlConfig) -> None:
        assert cfg.path is not None
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.kinds = {k.encode() for k in cfg.kinds}
        self.sent = 0
        self.errors = 0
        self.rotations = 0
        self.last_error = ""
        self._file: BinaryIO | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as err:
            raise OSError(f"jsonl.path {self.path}: cannot open for appending: {err}") from err

    def _open(self) -> None:
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (held open for the daemon's life)
        self._size = self._file.seek(0, os.SEEK_END)

    def start(self) -> None:
        """Nothing to start: the file opened with the sink."""

    def send(self, out: Outgoing) -> None:
        if out.topic.split(b".", 1)[0] not in self.kinds:
            return
        line = out.payload + b"\n"
        try:
            if self._file is None:
                self._open()
            elif self._size and self._size + len(line) > self.cfg.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(line)
            self._size += len(line)
            if self.cfg.fsync == "every":
                os.fsync(self._file.fileno())
            self.sent += 1
        except (OSError, ValueError) as err:  # ValueError: the file was closed under us
            self.errors += 1
            self.last_error = f"{self.path}: {err}"
            log.warning("jsonl sink: seq %d not written: %s", out.event.seq, self.last_error)
            self._drop_file()

    def _rotate(self) -> None:
        self._close_file()
        for n in range(self.cfg.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self.cfg.keep:
                older.unlink(missing_ok=True)
            elif older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.cfg.keep:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.rotations += 1
        self._open()

    def flush(self) -> None:
        if self._file is not None and self.cfg.fsync != "never":
            try:
                os.fsync(self._file.fileno())
            except OSError as err:
                self.errors += 1
                self.last_error = f"{self.path}: {err}"

    def _close_file(self) -> None:
        if self._file is not None:
            if self.cfg.fsync != "never":
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def _drop_file(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None

    def close(self) -> None:
        try:
            self._close_file()
        except OSError as err:
            self.errors += 1
            log.warning("jsonl sink: closing %s failed: %s", self.path, err)
            self._drop_file()

    def health(self) -> SinkHealth:
        detail: dict[str, int | str] = {"path": str(self.path), "rotations": self.rotations}
        if self.last_error:
            detail["last_error"] = self.last_error[:300]
        return SinkHealth(self.name, connected=self._file is not None, sent=self.sent, errors=self.errors,
                          detail=detail)
