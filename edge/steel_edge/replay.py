"""The replay endpoint: a ZeroMQ ROUTER beside the PUB socket that serves events from the journal.

A subscriber that saw a gap in ``seq``, or started late, asks for what it missed and gets the very
bytes that were published (topic, payload, crop), so it can treat them exactly like live messages.

Protocol (``steel-edge.replay/1``), client socket DEALER (or REQ for one-shot tools):

- request: one frame, a JSON object ``{"schema": "steel-edge.replay/1", "publisher": ID, "from_seq": N,
  "max": K}`` (``to_seq`` optional; ``max`` at most ``journal.replay_max_batch``; at most 4 KiB).
  ``publisher`` may be left out by a client that starts late and does not know it yet: the reply names it.
- reply: ONE multipart message: for each event, in seq order, four frames ``b"event", topic, payload,
  crop`` (an empty crop frame means none), then ``b"end", JSON`` with ``publisher``, ``from_seq``,
  ``count``, ``next_seq`` (ask from here next), ``oldest_seq`` and ``last_seq`` (what the journal
  holds now). The client is caught up when ``next_seq`` is past ``last_seq``. A reply stops early at
  ``max`` events or about 8 MiB, whichever comes first, so memory stays bounded on both sides.
- a request that is too large, not JSON, has unknown keys or bad values, or names another publisher gets
  ``[b"error", JSON {"error": message, "publisher": ID}]``; the server goes on serving.

A REQ client's reply starts with the empty delimiter frame REQ/REP adds; a DEALER client's does not.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Final

import zmq

from steel_edge.journal import JournalReader

log = logging.getLogger("steel_edge.replay")
REPLAY_SCHEMA: Final = "steel-edge.replay/1"
MAX_REQUEST_BYTES: Final = 4096
MAX_REPLY_BYTES: Final = 8 << 20
_KEYS = {"schema", "publisher", "from_seq", "to_seq", "max"}


class ReplayRequestError(ValueError):
    pass


def parse_request(raw: bytes, max_batch: int) -> dict[str, Any]:
    if len(raw) > MAX_REQUEST_BYTES:
        raise ReplayRequestError(f"request is {len(raw)} bytes, over the {MAX_REQUEST_BYTES}-byte limit")
    try:
        req = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReplayRequestError(f"request is not UTF-8 JSON ({err})") from None
    if not isinstance(req, dict):
        raise ReplayRequestError("request must be a JSON object")
    unknown = set(req) - _KEYS
    if unknown:
        raise ReplayRequestError(f"unknown request keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    if req.get("schema") != REPLAY_SCHEMA:
        raise ReplayRequestError(f"request schema must be {REPLAY_SCHEMA!r}, got {req.get('schema')!r}")
    for key in ("from_seq", "to_seq", "max"):
        value = req.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ReplayRequestError(f"{key} must be a non-negative integer, got {value!r}")
    if not isinstance(req.get("from_seq"), int):
        raise ReplayRequestError("from_seq is required")
    if req.get("publisher") is not None and not isinstance(req["publisher"], str):
        raise ReplayRequestError("publisher must be the id in the events' 'publisher' field")
    req["max"] = min(int(req.get("max") or max_batch), max_batch)
    return req


class ReplayServer:
    """Serves replay requests on its own thread with its own read-only journal connection."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, journal_path: Any, max_batch: int,
                 secure: Any = None) -> None:
        self._sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES + 1024)  # a huge request never reaches us
        if secure is not None:
            secure.apply(self._sock)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as err:
            self._sock.close(0)
            raise OSError(f"cannot open replay endpoint {endpoint!r}: {err}") from err
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._path = journal_path
        self._max = max_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="steel-edge-replay", daemon=True)
        self.served = 0
        self.refused = 0

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        reader = JournalReader(self._path)
        try:
            while not self._stop.is_set():
                if not self._sock.poll(100, zmq.POLLIN):
                    continue
                frames = self._sock.recv_multipart()
                body = frames[-1]
                envelope = frames[:-1]  # identity (+ empty delimiter from a REQ client)
                try:
                    reply = self._answer(reader, body)
                    self.served += 1
                except ReplayRequestError as err:
                    self.refused += 1
                    reply = [b"error", json.dumps({"error": str(err), "publisher": reader.publisher_id}).encode()]
                except Exception as err:  # a journal read error must not kill the server
                    log.exception("replay failed")
                    reply = [b"error", json.dumps({"error": f"internal: {err}"}).encode()]
                self._sock.send_multipart([*envelope, *reply])
        finally:
            reader.close()

    def _answer(self, reader: JournalReader, body: bytes) -> list[bytes]:
        req = parse_request(body, self._max)
        if req.get("publisher") is not None and req["publisher"] != reader.publisher_id:
            raise ReplayRequestError(f"this journal holds publisher {reader.publisher_id}, not {req['publisher']}")
        rows = reader.read(req["from_seq"], req["max"], req.get("to_seq"))
        oldest, last = reader.bounds()
        parts: list[bytes] = []
        size = sent = 0
        for row in rows:
            parts += [b"event", row.topic, row.payload, row.crop or b""]
            sent += 1
            size += len(row.payload) + len(row.crop or b"")
            if size > MAX_REPLY_BYTES:
                break
        rows = rows[:sent]
        next_seq = rows[-1].seq + 1 if rows else max(req["from_seq"], (last + 1) if last is not None else 0)
        end = {"publisher": reader.publisher_id, "from_seq": req["from_seq"], "count": len(rows),
               "next_seq": next_seq, "oldest_seq": oldest, "last_seq": last}
        return [*parts, b"end", json.dumps(end).encode()]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close(0)
