"""How far from the hardware is the model? Multiply-adds per tile (encoder + presence, decoder) counted from the
ONNX graph, the rate onnxruntime achieves on this CPU, and that rate against the CPU's fp32 peak.

    python benchmarks/macs.py [--model FILE.onnx] [--threads N ...] [--tiles 40] [--ghz 2.45] [--fma-per-cycle 16]

Peak = cores x fp32 multiply-adds per cycle per core x clock. The defaults fit this box (AMD EPYC family 25, Zen 3:
two 256-bit FMA pipes per core, 2 x 8 = 16 fp32 multiply-adds a cycle; 2.45 GHz as /proc/cpuinfo reports it);
pass other values for another CPU. Convolutions and matrix products are counted; element-wise work (batch norm
folded by onnxruntime, ReLU, adds, resizes) is memory traffic, not multiply-adds, and is left out, so the share
of peak is an upper bound on how well the arithmetic units are used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.data.synth import stream
from steel_edge.model import load_model
from steel_export import cascade


def _dims(info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim]


def node_macs(proto: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds of each Conv, MatMul and Gemm node of a batch-1 graph, by node output name."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: _dims(v) for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    weights = {i.name: numpy_helper.to_array(i).shape for i in inferred.graph.initializer}
    macs: dict[str, int] = {}
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv" and out is not None:
            w = weights.get(node.input[1])
            if w is None:
                raise ValueError(f"conv {node.name}: weights {node.input[1]} are not an initializer")
            macs[node.output[0]] = int(np.prod(out)) * int(np.prod(w[1:]))  # each output: C_in/groups x kH x kW
        elif node.op_type in ("MatMul", "Gemm") and out is not None:
            w = weights.get(node.input[1])
            k = w[0] if w is not None else shapes[node.input[0]][-1]
            macs[node.output[0]] = int(np.prod(out)) * int(k)
    return macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tiles", type=int, default=40, help="generated tiles timed per pass (3 passes, median)")
    parser.add_argument("--ghz", type=float, default=2.45, help="clock the peak is computed at")
    parser.add_argument("--fma-per-cycle", type=int, default=16, help="fp32 multiply-adds per cycle per core")
    args = parser.parse_args(argv)

    proto = onnx.load(str(args.model))
    single = cascade.to_single(proto)
    encoder, decoder = cascade.split_nodes(single.graph)
    macs = node_macs(single)
    enc = sum(macs.get(n.output[0], 0) for n in encoder)
    dec = sum(macs.get(n.output[0], 0) for n in decoder)
    report: dict[str, object] = {
        "model": str(args.model), "macs_per_tile": enc + dec, "encoder_presence_macs": enc, "decoder_macs": dec,
        "peak": {"ghz": args.ghz, "fma_per_cycle_per_core": args.fma_per_cycle},
    }
    tiles = [s.image for s in stream(seed=1, count=args.tiles)]
    for threads in args.threads:
        model = load_model(args.model, threads=threads, spinning=False)
        xs = [model.to_tensor(t[None]) for t in tiles]
        model.run_tensor(xs[0], decode_all=True)
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            for x in xs:
                model.run_tensor(x, decode_all=True)  # every tile through both stages: the count above
            passes.append(time.perf_counter() - t0)
        tiles_per_s = len(xs) / float(np.median(passes))
        peak = threads * args.fma_per_cycle * args.ghz * 1e9
        report[f"threads_{threads}"] = {
            "tiles_per_s": round(tiles_per_s, 1), "gmacs_per_s": round((enc + dec) * tiles_per_s / 1e9, 2),
            "peak_gmacs_per_s": round(peak / 1e9, 1), "share_of_peak": round((enc + dec) * tiles_per_s / peak, 3),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
