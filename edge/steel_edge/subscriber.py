"""The subscriber side of the event contract: a small client for plant integrators, and ``steel-edge subscribe``.

``Subscriber`` wraps one ZeroMQ SUB socket: it connects to one or more daemons (or a ``steel-edge proxy``),
decodes every multipart message with ``events.decode_message`` and hands back a frozen ``Received``. It
adds the two things every integrator otherwise gets wrong:

- **Gap detection.** ``seq`` counts every message of a publisher run, whatever its kind, so a jump in it
  is a lost message (a PUB drops silently once a subscriber's queue is full). It is keyed on
  ``publisher``: the first message of a run only sets the baseline (a subscriber that starts late missed
  nothing it could have had), a new publisher id is a restart, not a gap, and a ``seq`` at or below the
  last one seen is a replay or duplicate, flagged but not a gap. Detection is only exact when the socket
  receives every kind: subscribed to ``b"result."`` only, the status and error messages in between are
  filtered out by ZeroMQ and their ``seq`` values look missing. So ``detect_gaps=None`` (the default)
  enables it only for the catch-all subscription ``b""``; pass ``True`` to force it, ``False`` to skip it.
- **Malformed messages do not kill the client.** A message ``decode_message`` refuses is skipped and
  counted in ``invalid``; ``last_error`` keeps the latest ``EventError`` and an optional ``on_invalid``
  callback sees each one with its raw frames. One bad publisher must not stop a plant's dashboard.

Endpoints are connected (the daemon binds, subscribers connect); a ``@``-prefixed endpoint is bound
instead, for a subscriber that many daemons connect to (the mirror of the daemon's ``>`` prefix).
The socket closes with linger 0 (a subscriber has nothing worth flushing); a context passed in is never
terminated, one the client created is, after the socket is closed (the other order hangs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final

import zmq

from steel_edge.events import AnyEvent, DefectEvent, EndOfStreamEvent, EventError, decode_message, encode

DEFAULT_RCVHWM: Final = 10_000  # ZeroMQ's 1000 is ~40 s of one camera; a slow consumer deserves more slack
_MAX_PUBLISHERS: Final = 1024  # publisher runs remembered for gap detection; the oldest is forgotten first
PROG: Final = "steel-edge subscribe"


@dataclass(frozen=True)
class Gap:
    """Messages ``first_missing..last_missing`` (inclusive) of one publisher run never arrived."""

    publisher: str
    first_missing: int
    last_missing: int

    @property
    def count(self) -> int:
        return self.last_missing - self.first_missing + 1


@dataclass(frozen=True)
class Received:
    """One decoded message: the event, its JPEG crop if any, its topic, and what seq says about it.

    ``gap`` is the run of messages lost just before this one (None if none, or detection is off);
    ``replay`` is True when this seq is at or below the last one seen from the same publisher run.
    """

    event: AnyEvent
    crop: bytes | None
    topic: bytes
    gap: Gap | None = None
    replay: bool = False


class GapDetector:
    """Tracks the highest ``seq`` per publisher run; ``observe`` says whether messages were lost before it."""

    def __init__(self, max_publishers: int = _MAX_PUBLISHERS) -> None:
        # Bounded: a daemon restarted every minute for a year must not grow the subscriber's memory.
        self._last: OrderedDict[str, int] = OrderedDict()
        self._max = max_publishers

    def observe(self, publisher: str, seq: int) -> tuple[Gap | None, bool]:
        """(gap before this message or None, whether it is a replay). A replay leaves the baseline alone."""
        last = self._last.get(publisher)
        if last is None:
            self._last[publisher] = seq
            if len(self._last) > self._max:
                self._last.popitem(last=False)
            return None, False
        self._last.move_to_end(publisher)
        if seq <= last:
            return None, True
        self._last[publisher] = seq
        gap = Gap(publisher, last + 1, seq - 1) if seq > last + 1 else None
        return gap, False


def _as_list(items: str | bytes | Sequence[Any]) -> list[Any]:
    # A lone b"result." would otherwise iterate as integers, a lone "tcp://..." as characters.
    return [items] if isinstance(items, (str, bytes)) else list(items)


class Subscriber:
    """A SUB socket that yields decoded, gap-checked events. Use as a context manager; one thread only.

    ``endpoints``: e.g. ``"tcp://127.0.0.1:5555"`` or several; ``topics``: byte (or str) prefixes,
    ``b""`` for everything, ``events.topic("result", "cam1")`` for one camera's results exactly.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        topics: bytes | str | Sequence[bytes | str] = (b"",),
        *,
        context: zmq.Context[Any] | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        detect_gaps: bool | None = None,
        on_invalid: Callable[[EventError, list[bytes]], None] | None = None,
        secure: Callable[[zmq.Socket[bytes]], None] | None = None,
    ) -> None:
        eps = _as_list(endpoints)
        subs = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in _as_list(topics)]
        if not eps:
            raise ValueError("at least one endpoint is needed")
        if not subs:
            raise ValueError("at least one topic prefix is needed (b'' for everything)")
        if rcvhwm < 0:
            raise ValueError(f"rcvhwm must be >= 0 (0: unlimited), got {rcvhwm}")
        self.endpoints: tuple[str, ...] = tuple(eps)
        self.topics: tuple[bytes, ...] = tuple(subs)
        self.detect_gaps = (b"" in subs) if detect_gaps is None else detect_gaps
        self.on_invalid = on_invalid
        self.received = 0
        self.invalid = 0
        self.last_error: EventError | None = None
        self.gaps = 0
        self.missing = 0
        self.replays = 0
        self._gaps = GapDetector()
        self._own_context = context is None
        self._ctx: zmq.Context[Any] = zmq.Context() if context is None else context
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        for prefix in subs:
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        if secure is not None:  # e.g. steel_edge.security.apply_client_curve, before connecting
            secure(self._sock)
        try:
            for ep in eps:
                if ep.startswith("@"):
                    self._sock.bind(ep[1:])
                else:
                    self._sock.connect(ep.removeprefix(">"))
        except zmq.ZMQError as err:
            self.close()
            raise ValueError(f"cannot open ZeroMQ endpoint {ep!r}: {err}") from err

    def recv(self, timeout: float | None = None) -> Received | None:
        """The next valid event, waiting up to ``timeout`` seconds (None: forever); None if none came.

        Invalid messages are skipped (see ``invalid``) without extending the wait.
        """
        sock = self._socket()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))
            if not sock.poll(wait_ms, zmq.POLLIN):
                return None
            frames = sock.recv_multipart()
            try:
                event, crop = decode_message(frames)
            except EventError as err:
                self.invalid += 1
                self.last_error = err
                if self.on_invalid is not None:
                    self.on_invalid(err, frames)
                continue
            self.received += 1
            gap, replay = (None, False)
            if self.detect_gaps:
                gap, replay = self._gaps.observe(event.publisher, event.seq)
                if gap is not None:
                    self.gaps += 1
                    self.missing += gap.count
                self.replays += replay
            return Received(event=event, crop=crop, topic=frames[0], gap=gap, replay=replay)

    def __iter__(self) -> Iterator[Received]:
        """Every event, forever (until the socket is closed or the loop is left)."""
        while True:
            msg = self.recv(None)
            if msg is not None:
                yield msg

    def close(self) -> None:
        """Close the socket (linger 0) and the context if this client created it. Idempotent."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            if self._own_context:
                self._ctx.term()

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise RuntimeError("subscriber is closed")
        return self._sock

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --- steel-edge subscribe ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print steel-edge events as JSON lines (one payload per line on stdout); gaps, invalid "
                    "messages and a summary go to stderr.",
        epilog="Exit status: 0 when --count was reached, --until-eos saw an eos, on SIGINT/SIGTERM, or on "
               "--timeout when neither --count nor --until-eos was given; 1 on --timeout before --count or "
               "the eos arrived; 2 on bad arguments or an unusable endpoint. Gaps are detected only when "
               "subscribed to everything (no --topic), since filtered kinds leave holes in seq.")
    parser.add_argument("endpoints", nargs="+", metavar="ENDPOINT",
                        help="where to connect, e.g. tcp://127.0.0.1:5555 (a daemon) or a proxy's backend; "
                             "@ENDPOINT binds instead")
    parser.add_argument("--topic", action="append", metavar="PREFIX",
                        help="topic prefix, e.g. result. or result.cam1. (repeatable; default: everything)")
    parser.add_argument("--count", type=_positive_int, metavar="N", help="exit 0 after N events")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="exit when no event arrives for S seconds")
    parser.add_argument("--until-eos", action="store_true", help="exit 0 after the first eos event (batch runs)")
    parser.add_argument("--save-crops", type=Path, metavar="DIR", help="write JPEG crops as DIR/<event_id>.jpg")
    parser.add_argument("--resume", action="store_true",
                        help="at-least-once: catch up from the daemon's journal first, then fill every seq gap "
                             "from it; duplicates are dropped by seq (needs --replay; takes every kind)")
    parser.add_argument("--replay", default="tcp://127.0.0.1:5558", metavar="ENDPOINT",
                        help="the daemon's replay endpoint (journal.replay_endpoint; default %(default)s)")
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="with --resume: remember the last seq handled here, and resume after it next time "
                             "(without it, a start replays everything the journal retains)")
    parser.add_argument("--curve-server-key", type=Path, metavar="FILE",
                        help="the daemon's CURVE public key file (steel-edge keys): encrypt and authenticate")
    parser.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                        help="this subscriber's CURVE secret key file (its public key must be in the daemon's "
                             "allow-list)")
    return parser


def _load_state(path: Path | None) -> tuple[str, int] | None:
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return str(data["publisher"]), int(data["seq"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a subscriber state file ({err}); delete it to start from the oldest "
                         "retained event") from None


def _save_state(path: Path, publisher: str, seq: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"publisher": publisher, "seq": seq}))
    os.replace(tmp, path)  # atomic: a crash leaves the old state or the new one, never half


def _short(publisher: str) -> str:
    return publisher if len(publisher) <= 8 else publisher[:8] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _save_crop(folder: Path, event: DefectEvent, crop: bytes) -> None:
    # Write then rename: a watcher of the folder never reads half a JPEG.
    final = folder / f"{event.event_id}.jpg"
    tmp = final.with_suffix(".jpg.tmp")
    tmp.write_bytes(crop)
    os.replace(tmp, final)


class _Terminated(Exception):
    """SIGTERM, turned into an exception so the blocking poll unwinds like it does for SIGINT."""


def subscribe_main(argv: list[str] | None = None) -> int:
    """``steel-edge subscribe``; returns the exit status (see ``build_parser``'s epilog)."""
    args = build_parser().parse_args(argv)
    topics = [t.encode("utf-8") for t in args.topic] if args.topic else [b""]

    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    if args.save_crops is not None:
        try:
            args.save_crops.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            say(f"cannot create --save-crops folder: {err}")
            return 2
    secure = None
    if args.curve_server_key is not None or args.curve_secret_key is not None:
        from steel_edge.security import apply_client_curve

        if args.curve_server_key is None or args.curve_secret_key is None:
            say("CURVE needs both --curve-server-key and --curve-secret-key")
            return 2
        server_key, secret_key = args.curve_server_key, args.curve_secret_key

        def secure(sock: zmq.Socket[bytes]) -> None:
            apply_client_curve(sock, server_key, secret_key)

    if args.resume and args.topic:
        say("--resume takes every event (seq has to be complete); filter its output instead, e.g. with jq")
        return 2
    try:
        if args.resume:
            from steel_edge.resume import ResumingSubscriber

            resuming = ResumingSubscriber(args.endpoints, args.replay, resume_from=_load_state(args.state),
                                          secure=secure)
            return _resume_loop(resuming, args, say)
        sub = Subscriber(args.endpoints, topics, on_invalid=lambda err, _frames: say(f"invalid message: {err}"),
                         secure=secure)
    except ValueError as err:  # also steel_edge.security.SecurityError: a bad key file
        say(str(err))
        return 2

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    status = 0
    try:
        with sub:
            while args.count is None or sub.received < args.count:
                msg = sub.recv(args.timeout)
                if msg is None:  # idle for --timeout seconds
                    status = 1 if (args.count is not None or args.until_eos) else 0
                    break
                if msg.gap is not None:
                    g = msg.gap
                    say(f"gap: publisher {_short(g.publisher)}: seq {g.first_missing}..{g.last_missing} missing "
                        f"({_plural(g.count, 'message')})")
                if msg.replay:
                    say(f"replay: publisher {_short(msg.event.publisher)}: seq {msg.event.seq} seen again or late")
                sys.stdout.write(encode(msg.event).decode("utf-8") + "\n")
                sys.stdout.flush()
                if args.save_crops is not None and msg.crop is not None and isinstance(msg.event, DefectEvent):
                    _save_crop(args.save_crops, msg.event, msg.crop)
                if args.until_eos and isinstance(msg.event, EndOfStreamEvent):
                    break
    except (KeyboardInterrupt, _Terminated):
        status = 0
    except BrokenPipeError:
        # The reader went away (`| head`): not an error for a pipeline. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    gaps = f"{_plural(sub.gaps, 'gap')} ({_plural(sub.missing, 'message')} missing)" if sub.detect_gaps \
        else "gaps not checked (filtered topics)"
    say(f"{_plural(sub.received, 'event')}, {gaps}, {sub.invalid} invalid, {sub.replays} replayed")
    return status


def _resume_loop(sub: Any, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """``subscribe --resume``: every retained event once, in seq order; state saved after each line."""
    from steel_edge.resume import ReplayError

    received = 0
    status = 0
    try:
        with sub:
            while args.count is None or received < args.count:
                msg = sub.recv(args.timeout)
                if msg is None:
                    status = 1 if (args.count is not None or args.until_eos) else 0
                    break
                sys.stdout.write(encode(msg.event).decode("utf-8") + "\n")
                sys.stdout.flush()
                received += 1
                if args.state is not None:
                    _save_state(args.state, msg.event.publisher, msg.event.seq)
                if args.save_crops is not None and msg.crop is not None and isinstance(msg.event, DefectEvent):
                    _save_crop(args.save_crops, msg.event, msg.crop)
                if args.until_eos and isinstance(msg.event, EndOfStreamEvent):
                    break
    except ReplayError as err:
        say(str(err))
        status = 1
    except KeyboardInterrupt:
        status = 0
    say(f"{_plural(received, 'event')}, {sub.recovered} from the journal, {sub.duplicates} duplicates dropped, "
        f"{sub.lost} lost past retention")
    return status


if __name__ == "__main__":
    sys.exit(subscribe_main())
