"""Which cascade form does onnxruntime run fastest? One file with an ONNX ``If`` (what steel-export writes)
against two sessions (encoder + presence, then decoder, the boundary tensors passed through numpy), both
against the single graph, on tiles the gate skips and tiles it passes. Interleaved passes in one process,
so the ratios are the figures.

    python benchmarks/cascade_forms.py --model FILE.onnx [--threads 1] [--passes 15]

FILE is a cascade model (steel-export --form cascade) or a single-graph seg model whose contract has a skip
rule; the other forms are built from it here. Needs the export extra (the onnx package).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx.utils import Extractor

from steel_edge.contract import parse_contract
from steel_edge.data.synth import SynthConfig, stream
from steel_edge.heads.seg import graph_skip_values
from steel_edge.model import load_model
from steel_export import cascade, convert


def _two_stage(single: onnx.ModelProto, folder: Path) -> tuple[Path, Path, list[str]]:
    """Encoder+presence and decoder as two files; the tensors crossing between them, in order."""
    encoder, decoder = cascade.split_nodes(single.graph)
    produced = {o for n in encoder for o in n.output}
    boundary = sorted({i for n in decoder for i in n.input if i in produced})
    plain = onnx.ModelProto()
    plain.CopyFrom(single)
    del plain.metadata_props[:]
    inferred = onnx.shape_inference.infer_shapes(plain)
    extractor = Extractor(inferred)
    enc, dec = folder / "encoder.onnx", folder / "decoder.onnx"
    onnx.save(extractor.extract_model(["image"], ["presence", *boundary]), str(enc))
    onnx.save(extractor.extract_model(boundary, ["masks"]), str(dec))
    return enc, dec, boundary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the daemon's default on 2 cores: 1)")
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    proto = onnx.load(str(args.model))
    contract = parse_contract({p.key: p.value for p in proto.metadata_props}, str(args.model))
    params = contract.postprocess
    assert params is not None and params.skip_below is not None, "a seg model with a skip rule"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single = cascade.to_single(proto) if contract.form == "cascade" else proto
        single_contract = contract.model_copy(update={"form": "single"})
        del single.metadata_props[:]
        convert.attach_contract(single, single_contract)
        onnx.save(single, str(folder / "single.onnx"))
        if contract.form == "cascade":
            cascaded = proto
        else:
            assert contract.mask_size is not None
            cascaded = cascade.to_cascade(single, params.skip_below, contract.mask_size)
            del cascaded.metadata_props[:]
            convert.attach_contract(cascaded, contract.model_copy(update={"form": "cascade"}))
        onnx.save(cascaded, str(folder / "cascade.onnx"))
        models = {"single": load_model(folder / "single.onnx", threads=args.threads, spinning=False),
                  "if": load_model(folder / "cascade.onnx", threads=args.threads, spinning=False)}
        enc, dec, boundary = _two_stage(single, folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        enc_s = ort.InferenceSession(str(enc), opts, providers=["CPUExecutionProvider"])
        dec_s = ort.InferenceSession(str(dec), opts, providers=["CPUExecutionProvider"])
        skip = graph_skip_values(params.skip_below)

        def two(x: np.ndarray) -> None:
            presence, *feats = enc_s.run(["presence", *boundary], {"image": x})
            if (presence >= skip).any():
                dec_s.run(["masks"], dict(zip(boundary, feats, strict=True)))

        # Tiles the gate skips and tiles it passes, chosen from generated frames by the single graph's presence.
        tiles: dict[str, list[np.ndarray]] = {"skipped": [], "decoded": []}
        for sample in stream(seed=7, count=200, config=SynthConfig(defect_free_share=0.5)):
            x = models["single"].to_tensor(sample.image[None])
            key = "skipped" if params.skips(models["single"].run_tensor(x)[1][0]) else "decoded"
            if len(tiles[key]) < 8:
                tiles[key].append(x)
        runners = {"single": lambda x: models["single"].run_tensor(x), "if": lambda x: models["if"].run_tensor(x),
                   "two_sessions": two}
        times: dict[str, dict[str, list[float]]] = {k: {r: [] for r in runners} for k in tiles}
        for _ in range(args.passes):
            for kind, xs in tiles.items():
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    for x in xs:
                        run(x)
                    times[kind][name].append((time.perf_counter() - t0) / max(1, len(xs)))
        report: dict[str, object] = {"model": str(args.model), "threads": args.threads, "passes": args.passes,
                                     "tiles": {k: len(v) for k, v in tiles.items()}, "boundary_tensors": len(boundary)}
        for kind in tiles:
            if not tiles[kind]:
                continue
            ms = {name: 1000 * float(np.median(v)) for name, v in times[kind].items()}
            report[kind] = {"ms_per_tile": {k: round(v, 3) for k, v in ms.items()},
                            "vs_single": {k: round(v / ms["single"], 3) for k, v in ms.items()}}
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
