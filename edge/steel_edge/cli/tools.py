"""The small tools' command lines: ``steel-edge proxy``, ``steel-edge keys`` and ``steel-edge demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from steel_edge.demo import run_demo
from steel_edge.endpoints import DEFAULT_ENDPOINT
from steel_edge.proxy import DEFAULT_BACKEND, DEFAULT_FRONTEND, DEFAULT_HWM, Proxy
from steel_edge.security import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    SecurityError,
    _check_name,
    _require_curve,
    _write_pair,
    generate_keypair,
    permission_warnings,
)

# --- steel-edge proxy ---------------------------------------------------------------------------------
PROXY_PROG = "steel-edge proxy"

def proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROXY_PROG,
        description="Fan many steel-edge daemons into many subscribers (ZeroMQ XSUB/XPUB proxy).",
        epilog="Daemons connect to the frontend (--publish '>ENDPOINT'), subscribers to the backend. "
               "Exit status: 0 after SIGINT/SIGTERM, 2 if an endpoint cannot be bound.")
    parser.add_argument("--frontend", default=DEFAULT_FRONTEND, metavar="ENDPOINT",
                        help=f"where daemons connect (default {DEFAULT_FRONTEND})")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, metavar="ENDPOINT",
                        help=f"where subscribers connect (default {DEFAULT_BACKEND})")
    parser.add_argument("--hwm", type=int, default=DEFAULT_HWM, metavar="N",
                        help=f"high-water mark per connection, messages (default {DEFAULT_HWM})")
    return parser


def proxy_main(argv: list[str] | None = None) -> int:
    """``steel-edge proxy``; returns the exit status."""
    args = proxy_parser().parse_args(argv)
    try:
        proxy = Proxy(args.frontend, args.backend, hwm=args.hwm)
    except OSError as err:
        print(f"{PROXY_PROG}: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    print(f"{PROXY_PROG}: daemons connect to {proxy.frontend}, subscribers to {proxy.backend}", file=sys.stderr,
          flush=True)
    worker = threading.Thread(target=proxy.run, args=(stop,), name="steel-edge-proxy")
    try:
        worker.start()
        # Waiting here in slices keeps the main thread in Python, where signal handlers run.
        while worker.is_alive() and not stop.wait(0.2):
            pass
        stop.set()
        worker.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        proxy.close()
    print(f"{PROXY_PROG}: stopped", file=sys.stderr)
    return 0



# --- steel-edge keys ----------------------------------------------------------------------------------
def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steel-edge keys",
        description="Generate CURVE keys: DIR/NAME.key(+_secret) for the daemon, DIR/clients/C.key (the "
                    "allow-list, public keys only) and DIR/private/C.key_secret for each --client C.")
    parser.add_argument("dir", type=Path, help="key folder (created with mode 0700)")
    parser.add_argument("--name", default="daemon", help="daemon (or proxy) key name (default: daemon)")
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="subscriber key to create and allow; repeat for several")
    parser.add_argument("--force", action="store_true", help="replace existing keys (locks out old peers)")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                        help="the daemon's publish endpoint, for the subscribe command printed (default %(default)s)")
    return parser


def keys_main(argv: list[str] | None = None) -> int:
    """``steel-edge keys DIR [--name daemon] [--client NAME ...] [--force]``; returns the exit code.

    An existing server keypair is kept when only new clients are asked for, so clients can be added
    later without rotating the key every subscriber pinned. Everything is checked before anything is
    written, so a refused run leaves the folder unchanged.
    """
    args = _keys_parser().parse_args(argv)
    root: Path = args.dir
    clients_dir, private_dir = root / "clients", root / "private"
    server_pub, server_sec = root / f"{args.name}{PUBLIC_SUFFIX}", root / f"{args.name}{SECRET_SUFFIX}"
    try:
        _require_curve()
        for name in [args.name, *args.client]:
            _check_name(name)
        if len(set(args.client)) != len(args.client):
            raise SecurityError("a --client name is given twice")
        server_present = [p.exists() for p in (server_pub, server_sec)]
        make_server = args.force or not all(server_present)
        if not args.force:
            if any(server_present) and not all(server_present):
                have = server_pub if server_present[0] else server_sec
                raise SecurityError(f"{have} exists without its pair; use --force to regenerate both")
            if all(server_present) and not args.client:
                raise SecurityError(f"{server_sec} exists; use --force to replace it (every subscriber "
                                    "pinned to the old public key will be refused)")
            for client in args.client:
                for path in (clients_dir / f"{client}{PUBLIC_SUFFIX}", private_dir / f"{client}{SECRET_SUFFIX}"):
                    if path.exists():
                        raise SecurityError(f"{path} exists; use --force to replace it")

        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if make_server:
            generate_keypair(root, args.name, force=args.force)
            print(f"wrote {server_pub}  (public: copy to every subscriber host)")
            print(f"wrote {server_sec}  (secret, 0600: stays on this host)")
        else:
            print(f"kept  {server_pub} / {server_sec}  (existing daemon keypair)")
        for client in args.client:
            # The allow-list folder gets the public file only; the secret goes to private/.
            allowed, sec = clients_dir / f"{client}{PUBLIC_SUFFIX}", private_dir / f"{client}{SECRET_SUFFIX}"
            clients_dir.mkdir(mode=0o700, exist_ok=True)
            private_dir.mkdir(mode=0o700, exist_ok=True)
            _write_pair(allowed, sec, args.force)
            print(f"wrote {allowed}  (public: allow-list entry)")
            print(f"wrote {sec}  (secret, 0600: copy to the '{client}' host only)")
    except (SecurityError, OSError) as exc:
        print(f"steel-edge keys: error: {exc}", file=sys.stderr)
        return 2

    absolute = root.resolve()
    print("\ndaemon config (YAML):")
    print("  security:")
    print(f"    curve_secret_key: {absolute / server_sec.name}")
    print(f"    curve_allowed_clients: {absolute / 'clients'}")
    for client in args.client or ["NAME"]:
        print(f"subscriber '{client}': steel-edge subscribe {args.endpoint} --curve-server-key "
              f"{absolute / server_pub.name} --curve-secret-key {absolute / 'private' / (client + SECRET_SUFFIX)}")
    for warning in permission_warnings(root, clients_dir, server_sec):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


# --- steel-edge demo ----------------------------------------------------------------------------------
DEMO_DESCRIPTION = "``steel-edge demo``: the whole product on one machine, with no camera and no training."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steel-edge demo", description=DEMO_DESCRIPTION)
    p.add_argument("--frames", type=int, default=24, help="generated frames (default 24)")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--data", help="a Severstal-layout folder (train.csv + train_images/) instead of generated frames")
    p.add_argument("--model", help="ONNX model (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print each event's JSON payload instead of a summary line")
    p.add_argument("--keep", help="write the generated frames here and keep them")
    return p


def demo_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="steel-edge: %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="steel-edge-demo-") as tmp:
        root = Path(args.data) if args.data else Path(args.keep or tmp) / "frames"
        if not args.data:
            from steel_edge.data.synth import write_dataset

            print(f"generating {args.frames} strip frames (seed {args.seed}) in {root}", file=sys.stderr)
            write_dataset(root, images=args.frames, seed=args.seed)
        return run_demo(root, Path(tmp) / "state", args.model, args.json)
