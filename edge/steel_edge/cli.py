"""``steel-edge``: the daemon (frames -> ONNX inference -> defect events on ZeroMQ) and its tools."""

from __future__ import annotations

import argparse
import sys

NOT_BUILT = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steel-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="camera0, /dev/video0, a video file, rtsp://..., folder:DIR")
    parser.add_argument("--model", help="ONNX model file (default: the bundled model)")
    parser.add_argument("--publish", help="ZeroMQ endpoint to bind (default tcp://127.0.0.1:5555)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--once", action="store_true", help="folder sources: process what is there, then exit")
    parser.add_argument("command", nargs="?", choices=["demo", "subscribe", "proxy", "bench", "validate-config"],
                        help="a tool instead of the daemon")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    what = args.command or "daemon"
    print(f"steel-edge {what}: not built yet (arrives with issues #5-#7)", file=sys.stderr)
    return NOT_BUILT


if __name__ == "__main__":
    sys.exit(main())
