"""Where a seg model's time goes: the encoder and presence head (every tile) versus the mask decoder (the part a
cascade would skip on tiles no class passes), from onnxruntime's own per-node profile. Issue 24's groundwork.

    python benchmarks/stage_split.py [--model FILE.onnx] [--tiles 40]

A node belongs to the encoder when the ``presence`` output depends on it; the rest is the decoder
(``steel_export.cascade.split_nodes``). A cascade file is profiled as its single graph, every tile through both
stages. Needs the export extra (the ``onnx`` package).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.data.synth import generate
from steel_export import cascade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--tiles", type=int, default=40)
    args = parser.parse_args(argv)
    single = cascade.to_single(onnx.load(str(args.model)))
    encoder = {n.name for n in cascade.split_nodes(single.graph)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(single, os.path.join(tmp, "single.onnx"))
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        opts.intra_op_num_threads = 1  # the daemon's inference threads on a 2-core box
        session = ort.InferenceSession(os.path.join(tmp, "single.onnx"), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        tiles = np.stack([generate(0, i).image for i in range(8)]).astype(np.float32)[:, None]
        for i in range(args.tiles):
            session.run(None, {name: tiles[i % 8:i % 8 + 1]})
        events = json.loads(Path(session.end_profiling()).read_text())
    spent: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            # the event is named after its node; ":0_nchwc" marks onnxruntime's blocked-layout version of it
            node = e["name"].removesuffix("_kernel_time").split(":")[0]
            spent["encoder_and_presence" if node in encoder else "decoder"] += e["dur"]
    total = sum(spent.values())
    report = {"model": str(args.model), "tiles": args.tiles, "ms_per_tile": total / args.tiles / 1000,
              **{f"{k}_share": v / total for k, v in spent.items()}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
