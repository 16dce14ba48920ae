"""``steel-edge subscribe``: print events as JSON lines; gaps, a missed start and a summary on stderr."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import zmq

from steel_edge.endpoints import replay_endpoint_for
from steel_edge.events import DefectEvent, EndOfStreamEvent, encode
from steel_edge.names import frame_file_name
from steel_edge.resume import ReplayError, ResumingSubscriber
from steel_edge.subscriber import Subscriber

PROG: Final = "steel-edge subscribe"


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
                             "from it; duplicates are dropped by seq (takes every kind)")
    parser.add_argument("--replay", metavar="ENDPOINT",
                        help="with --resume: the daemon's replay endpoint (journal.replay_endpoint); default: the "
                             "first ENDPOINT's port + 3, as the daemon derives it (5555 -> 5558)")
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
    # camera, frame and tile say what it shows; the event id's head keeps names unique and duplicates equal
    final = folder / frame_file_name(event.camera, event.frame_id, event.tile, event.event_id[:12])
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
            replay = args.replay or replay_endpoint_for(args.endpoints[0])
            resuming = ResumingSubscriber(args.endpoints, replay, resume_from=_load_state(args.state), secure=secure)
        else:
            sub = Subscriber(args.endpoints, topics, on_invalid=lambda err, _frames: say(f"invalid message: {err}"),
                             secure=secure)
    except ValueError as err:  # also steel_edge.security.SecurityError: a bad key file
        say(str(err))
        return 2
    with _sigterm_unwinds():
        if args.resume:
            return _resume_loop(resuming, args, say)
        return _plain_loop(sub, args, say)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises ``_Terminated`` in the main thread, so both loops end as on Ctrl-C: summary, exit 0."""
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _plain_loop(sub: Subscriber, args: argparse.Namespace, say: Callable[[str], None]) -> int:
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
                if msg.missed_start is not None:
                    g = msg.missed_start
                    say(f"missed the start: publisher {_short(g.publisher)}: seq {g.first_missing}..{g.last_missing} "
                        f"({_plural(g.count, 'message')}) went out before this subscriber's first; use --resume "
                        "to fetch them from the journal")
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
    gaps = f"{_plural(sub.gaps, 'gap')} ({_plural(sub.missing, 'message')} missing)" if sub.detect_gaps \
        else "gaps not checked (filtered topics)"
    start = f", start missed ({_plural(sub.missed_start, 'message')})" if sub.missed_start else ""
    say(f"{_plural(sub.received, 'event')}, {gaps}{start}, {sub.invalid} invalid, {sub.replays} replayed")
    return status


def _resume_loop(sub: Any, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """``subscribe --resume``: every retained event once, in seq order; state saved after each line."""

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
    except (KeyboardInterrupt, _Terminated):
        status = 0
    say(f"{_plural(received, 'event')}, {sub.recovered} from the journal, {sub.duplicates} duplicates dropped, "
        f"{sub.lost} lost past retention")
    return status

