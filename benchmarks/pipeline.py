"""Raw onnxruntime vs the whole daemon on the same frames: a thin wrapper over ``steel-edge bench``.

    python benchmarks/pipeline.py [--frames 400] [any steel-edge bench flag]

Prints one JSON object (``--json`` is added): raw and end-to-end frames/s, ``pipeline_efficiency``,
latency p50/p99, peak RSS of the bench and of a daemon process, process start -> first result, the
Keras ratio where TensorFlow is installed, and the machine. What each figure means, exactly, is in
``steel_edge.bench``'s docstring; results are recorded in ``benchmarks/README.md``.
"""

from __future__ import annotations

import sys

from steel_edge.cli.bench import bench_main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(bench_main(argv if "--json" in argv else [*argv, "--json"]))
