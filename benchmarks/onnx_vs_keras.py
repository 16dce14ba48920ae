"""onnxruntime against Keras ``predict`` on the same frames, batch size and thread count, in one run.

    python benchmarks/onnx_vs_keras.py [--frames 100] [--keras RUN_DIR_OR_FILE.keras] [--batch-size 1]

Needs the train extra (TensorFlow). Without ``--keras`` the bundled model's architecture is built with random
weights (speed does not depend on them). Prints one JSON object; ``onnx_vs_keras`` is the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from steel_edge.bench import bench_raw, machine, make_frames
from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.model import available_threads, load_model
from steel_train.keras_bench import bench_keras


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="ONNX model (default: the bundled one)")
    parser.add_argument("--keras", type=Path, help="the same model in Keras (.keras or run folder); default: built")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=max(1, available_threads() - 1))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnx-vs-keras-") as tmp:
        files = make_frames(Path(tmp), args.frames, args.seed)
        model = load_model(args.model, threads=args.threads, spinning=False)
        spec = model.contract.input
        raw = bench_raw(model, files, args.batch_size)
        keras = bench_keras(args.keras, files, (spec.height, spec.width), args.batch_size, args.threads)
    report = {"machine": machine(), "frames": args.frames, "batch_size": args.batch_size, "threads": args.threads,
              "onnxruntime_fps": raw["fps"], "keras": keras, "onnx_vs_keras": raw["fps"] / keras["fps"]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
