"""``steel-edge``: the daemon (frames -> ONNX inference -> defect events on ZeroMQ) and its tools.

    steel-edge --source SOURCE [--model FILE.onnx] [--publish ENDPOINT] [--config FILE] [--once]
    steel-edge demo             the daemon on generated strip images with the bundled model
    steel-edge subscribe ENDPOINT [--topic PREFIX] [--count N] [--timeout S]
    steel-edge proxy            XSUB/XPUB fan-in: many daemons -> many subscribers
    steel-edge validate-config FILE
    steel-edge keys DIR         CurveZMQ key pairs for the daemon and its subscribers
    steel-edge bench            raw onnxruntime vs the whole pipeline, on the same frames

Exit codes: 0 done; 1 the daemon stopped on a fatal error (model refused, source unusable); 2 bad
command line or config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from steel_edge.cli.daemon import TOOLS, run_daemon, validate_config


def _tool(name: str) -> Callable[[list[str]], int]:
    """Each tool's module is imported only when it runs: ``subscribe`` must not load the daemon."""
    if name == "subscribe":
        from steel_edge.cli.subscribe import subscribe_main

        return subscribe_main
    if name == "validate-config":
        return validate_config
    if name == "bench":
        from steel_edge.cli.bench import bench_main

        return bench_main
    from steel_edge.cli import tools

    return {"demo": tools.demo_main, "proxy": tools.proxy_main, "keys": tools.keys_main}[name]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return _tool(argv[0])(argv[1:])
    return run_daemon(argv)


if __name__ == "__main__":
    sys.exit(main())
