"""``steel-edge`` (the daemon) and ``steel-edge validate-config``: command line, config, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from steel_edge.configfile import ConfigError, load_config, parse_set_flags

if TYPE_CHECKING:  # the daemon and its config load only when the daemon runs, not for `subscribe`
    from steel_edge.config import EdgeConfig
    from steel_edge.daemon import Daemon

TOOLS = ("demo", "subscribe", "proxy", "validate-config", "bench", "keys")  # steel-edge TOOL ...
BAD_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steel-edge", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the defect-detection daemon on one source, publishing events on ZeroMQ.",
        epilog="tools: steel-edge {" + ",".join(TOOLS) + "} --help")
    parser.add_argument("--source", help="camera0, /dev/video0, a video file, rtsp://..., folder:DIR, "
                                         "synth:SEED, linescan:SOURCE, genicam:CTI")
    parser.add_argument("--model", help="ONNX model file (default: the bundled model)")
    parser.add_argument("--publish", action="append", metavar="ENDPOINT",
                        help="ZeroMQ endpoint to bind (default tcp://127.0.0.1:5555); '>tcp://...' connects to "
                             "a steel-edge proxy instead (repeatable)")
    parser.add_argument("--config", help="YAML config file (see configs/edge.yaml)")
    parser.add_argument("--camera", help="camera id in events and topics (default cam0)")
    parser.add_argument("--once", action="store_true", default=None,
                        help="folder sources: process what is there, publish end-of-stream, exit")
    parser.add_argument("--reprocess", action="store_true", default=None,
                        help="folder sources: process every file again, whatever the ledger says "
                             "(folder.reprocess)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any config key, e.g. --set pipeline.batch_size=8 (repeatable)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def edge_config(args: argparse.Namespace) -> EdgeConfig:
    from steel_edge.config import EdgeConfig

    overrides = parse_set_flags(args.set)
    overrides.update({"source": args.source, "model": args.model, "camera": args.camera, "once": args.once,
                      "publish.endpoints": args.publish, "folder.reprocess": args.reprocess})
    return load_config(EdgeConfig, args.config, overrides)


def run_daemon(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="steel-edge: %(message)s", stream=sys.stderr)
    from steel_edge.daemon import build_daemon
    from steel_edge.journal import JournalError
    from steel_edge.model import ModelContractError
    from steel_edge.security import SecurityError
    from steel_edge.sources import SourceError

    try:
        cfg = edge_config(args)
        daemon = build_daemon(cfg)
    except ConfigError as err:
        print(f"steel-edge: {err}", file=sys.stderr)
        return BAD_USAGE
    except (ModelContractError, SourceError, SecurityError, JournalError, OSError) as err:
        print(f"steel-edge: {err}", file=sys.stderr)
        return 1
    _warn_permissions(args.config, cfg, daemon)
    daemon.install_signal_handlers()
    return daemon.run()


def _warn_permissions(config_path: str | None, cfg: EdgeConfig, daemon: Daemon) -> None:
    """Config and key files others can read or write: warned at start, not refused (operators decide)."""
    from steel_edge.security import permission_warnings

    paths = [Path(p) for p in (config_path, cfg.security.curve_secret_key, cfg.security.curve_allowed_clients) if p]
    problems = permission_warnings(*paths)
    if daemon.curve is not None:
        problems += [w for w in daemon.curve.warnings() if w not in problems]
    for problem in problems:
        logging.getLogger("steel_edge.security").warning(problem)


def validate_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="steel-edge validate-config",
                                     description="Check an edge config file; print the failing key and line.")
    parser.add_argument("file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, as the daemon would")
    args = parser.parse_args(argv)
    from steel_edge.config import EdgeConfig
    from steel_edge.model import ModelContractError, load_model

    try:
        cfg = load_config(EdgeConfig, args.file, parse_set_flags(args.set))
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return BAD_USAGE
    if cfg.model is not None:
        try:
            model = load_model(cfg.model)
        except ModelContractError as err:
            print(f"{args.file}: model: {err}", file=sys.stderr)
            return BAD_USAGE
        print(f"{args.file}: model {cfg.model}: {model.contract.kind}, sha256 {model.sha256}")
    print(f"{args.file}: ok (camera {cfg.camera}, source {cfg.source or '(from --source)'}, "
          f"publish {', '.join(cfg.publish.endpoints)})")
    return 0
