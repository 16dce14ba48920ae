"""Start -> first event of the daemon as a child process, for two or more checkouts of this repository, interleaved.

    git worktree add /tmp/before REV
    python benchmarks/first_event.py --tree before=/tmp/before --tree after=. [--runs 8] [--frames 40]

Each run is ``steel_edge.bench.bench_subprocess`` (interpreter start, imports, model load, bind, first status event,
then the first result) with ``PYTHONPATH`` pointing at that checkout's ``edge/``, so only the daemon's code differs:
same interpreter, same installed packages, the bundled model of the checkout running the script. The order of
the checkouts alternates run by run; the medians are the figures (start-up is a few hundred ms, noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from steel_edge import bench
from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.data.synth import write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a checkout of this repository (its edge/ goes on PYTHONPATH)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.tree)
    for name, tree in trees.items():
        if not (Path(tree) / "edge" / "steel_edge").is_dir():
            parser.error(f"--tree {name}={tree}: no edge/steel_edge there")
    # ``python -m`` so PYTHONPATH decides which steel_edge the child imports (the console script would too, but
    # this does not depend on where the venv put it).
    bench._daemon_command = lambda: [sys.executable, "-m", "steel_edge.cli"]  # type: ignore[attr-defined]
    firsts: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "frames", args.frames, 0)
        images = Path(tmp) / "frames" / "train_images"
        for run in range(args.runs):
            order = list(trees.items()) if run % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                os.environ["PYTHONPATH"] = str(Path(tree).resolve() / "edge")
                state = Path(tmp) / f"state_{name}_{run}"
                out = bench.bench_subprocess(images, BUNDLED_MODEL, state, 1, 1, args.frames, Path(tmp) / "log")
                firsts[name].append((out["start_to_first_event_s"], out["start_to_first_result_s"]))

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(json.dumps({name: {"first_event_s_median": round(median([e for e, _ in v]), 3),
                             "first_result_s_median": round(median([r for _, r in v]), 3),
                             "first_event_s": [round(e, 3) for e, _ in v]} for name, v in firsts.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
