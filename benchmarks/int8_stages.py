"""INT8 per stage of a cascade seg model, judged on real frames: which stage may run in INT8 (issue 24 item 3)?

For each of encoder-only, decoder-only and both stages in static QDQ INT8 (``steel_export.quantize``, calibrated
on the run's own training frames), the cascade file is scored through the edge's runtime on the run's
validation frames (the choice: a stage ships in INT8 only where validation Dice loses at most 0.005) and on its
test frames (reported once, never chosen on), and timed against the fp32 cascade on skipped and decoded tiles,
interleaved in one process.

    python benchmarks/int8_stages.py --run runs/seg --model edge/steel_edge/models/default_seg.onnx [--json]

Needs the train and export extras and the run's data folders (its run.json / split.json).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from steel_edge.contract import parse_contract
from steel_edge.data.severstal import SeverstalImage, load_severstal
from steel_edge.model import EdgeModel, load_model
from steel_export import cascade, convert, quantize
from steel_train.evaluate import OnnxSeg, score_frames

MAX_LOSS = 0.005


def _items(run: Path) -> dict[str, list[SeverstalImage]]:
    info = json.loads((run / "run.json").read_text())
    split = json.loads((run / "split.json").read_text())
    every = {str(it.path): it for folder in info["data"] for it in load_severstal(Path(folder)).images}
    held = set(split["validation"]) | set(split["test"])
    return {"train": [it for p, it in every.items() if p not in held],
            "validation": [every[p] for p in split["validation"]], "test": [every[p] for p in split["test"]]}


def _score(model: EdgeModel, items: list[SeverstalImage]) -> dict[str, Any]:
    assert model.contract.postprocess is not None
    metrics, _ = score_frames(OnnxSeg(model), items, model.contract.postprocess)
    return {"dice": metrics["dice_mean"], "recall": metrics["recall_per_class"],
            "precision": metrics["precision_per_class"]}


def _timing(models: dict[str, EdgeModel], tiles: dict[str, list[np.ndarray]], passes: int) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {k: {m: [] for m in models} for k in tiles}
    for _ in range(passes):
        for kind, xs in tiles.items():
            for name, model in models.items():
                t0 = time.perf_counter()
                for x in xs:
                    model.run_tensor(x)
                times[kind][name].append((time.perf_counter() - t0) / len(xs))
    out: dict[str, Any] = {}
    for kind in tiles:
        ms = {m: 1000 * float(np.median(v)) for m, v in times[kind].items()}
        out[kind] = {m: {"ms": round(v, 3), "vs_fp32": round(v / ms["fp32"], 3)} for m, v in ms.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the seg run folder the model was exported from")
    parser.add_argument("--model", type=Path, required=True, help="its fp32 export (single or cascade form)")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args(argv)

    items = _items(args.run)
    proto = onnx.load(str(args.model))
    contract = parse_contract({p.key: p.value for p in proto.metadata_props}, str(args.model))
    assert contract.postprocess is not None and contract.postprocess.skip_below is not None and contract.mask_size
    calib_items = random.Random(0).sample(items["train"], args.calibration_images)
    calibration = [it.read() for it in calib_items]
    report: dict[str, Any] = {"model": str(args.model), "run": str(args.run), "calibration": "training frames",
                              "calibration_images": len(calibration), "max_loss": MAX_LOSS,
                              "frames": {k: len(v) for k, v in items.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single = cascade.to_single(proto)
        del single.metadata_props[:]
        onnx.save(single, str(folder / "single.onnx"))
        files = {"fp32": args.model}
        for stage in ("encoder", "decoder", "all"):
            raw = folder / f"{stage}.raw.onnx"
            quantize.quantize_file(folder / "single.onnx", raw, calibration, contract.input.name,
                                   contract.input.layout, stage=stage)
            q = cascade.to_cascade(onnx.load(str(raw)), contract.postprocess.skip_below, contract.mask_size)
            convert.attach_contract(q, contract.model_copy(update={"form": "cascade", "precision": "int8"}))
            files[f"int8_{stage}"] = folder / f"int8_{stage}.onnx"
            onnx.save(q, str(files[f"int8_{stage}"]))
        models = {name: load_model(path, threads=args.threads, spinning=False) for name, path in files.items()}
        scores = {name: {split: _score(m, items[split]) for split in ("validation", "test")}
                  for name, m in models.items()}
        base = scores["fp32"]["validation"]["dice"]
        for name, s in scores.items():
            s["validation_loss"] = round(base - s["validation"]["dice"], 4)
            s["ships"] = name == "fp32" or s["validation_loss"] <= MAX_LOSS
        report["scores"] = scores
        tiles: dict[str, list[np.ndarray]] = {"skipped": [], "decoded": []}
        for it in items["validation"]:
            x = models["fp32"].to_tensor(it.read()[None])
            kind = "skipped" if contract.postprocess.skips(models["fp32"].run_tensor(x)[1][0]) else "decoded"
            if len(tiles[kind]) < 8:
                tiles[kind].append(x)
        report["timing"] = _timing(models, {k: v for k, v in tiles.items() if v}, args.passes)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
