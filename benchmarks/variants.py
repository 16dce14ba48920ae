"""Speed versus Dice of the edge model's variants, on the same held-out frames, in one run.

    python benchmarks/variants.py [--model FILE.onnx] [--frames 300] [--seed 99] [--real DIR] [--json]

For each variant the model and post-processing run exactly as the daemon runs them (``EdgeModel`` in
batches of the daemon's default size, then ``steel_edge.postprocess``), and the table reports tiles/s of
inference plus post-processing and the Kaggle Dice on held-out frames: generated frames from a seed the
bundled model never saw (about half defect-free, the line's mix), and the real Severstal sample when it
is present (most of those 31 frames were in the bundled model's training split, so that column is not
held out: it is there to show the variants agree on real texture, not as an accuracy claim).

Variants:
- ``gated (hard)``: the bundled contract's post-processing (presence gate, tuned thresholds): the default;
- ``ungated``: the same model and thresholds with the gate off (``gate: none``), every class's pixels
  post-processed on every tile;
- ``soft gate``: probabilities multiplied by presence;
- ``int8``: when ``--int8 FILE`` names a quantized export of the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from steel_edge.data.severstal import load_severstal
from steel_edge.data.synth import generate
from steel_edge.metrics import SegmentationScores, all_empty_dice
from steel_edge.model import EdgeModel, load_model
from steel_edge.postprocess import PostprocessParams, masks_only, postprocess

BUNDLED = Path(__file__).resolve().parent.parent / "edge" / "steel_edge" / "models" / "default_seg.onnx"
BATCH = 4


def _frames(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    samples = [generate(seed, i) for i in range(n)]
    return np.stack([s.image for s in samples]), np.stack([s.masks for s in samples])


def _real(root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not (root / "train.csv").exists():
        return None
    items = load_severstal(root).images
    return np.stack([i.read() for i in items]), np.stack([i.masks() for i in items])


def run_variant(model: EdgeModel, params: PostprocessParams, images: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scores = SegmentationScores()
    t0 = time.perf_counter()
    for i in range(0, len(images), BATCH):
        probs, presence = model.predict_seg(images[i:i + BATCH])
        for j in range(probs.shape[0]):
            postprocess(probs[j], presence[j], params)  # what the daemon does per tile (timed)
    elapsed = time.perf_counter() - t0
    for i in range(0, len(images), BATCH):  # scoring, not timed
        probs, presence = model.predict_seg(images[i:i + BATCH])
        for j in range(probs.shape[0]):
            scores.update(masks_only(probs[j], presence[j], params), truth[i + j])
    return {"tiles_per_s": len(images) / elapsed, "dice": float(scores.per_image().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=BUNDLED)
    ap.add_argument("--int8", type=Path, help="an INT8 export of the same model, as a further variant")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=99, help="generator seed; the bundled model trained on seed 0..")
    ap.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "severstal")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = load_model(args.model)
    base = model.contract.postprocess
    assert base is not None
    sets = {"synthetic held-out": _frames(args.seed, args.frames)}
    real = _real(args.real)
    if real is not None:
        sets["real sample (not held out)"] = real
    variants: list[tuple[str, EdgeModel, PostprocessParams]] = [
        ("gated (hard, default)", model, base),
        ("ungated", model, base.model_copy(update={"gate": "none"})),
        ("soft gate", model, base.model_copy(update={"gate": "soft"})),
    ]
    if args.int8:
        q = load_model(args.int8)
        assert q.contract.postprocess is not None
        variants.append(("int8 (gated)", q, q.contract.postprocess))
    rows = []
    for name, m, params in variants:
        row: dict[str, object] = {"variant": name}
        for set_name, (images, truth) in sets.items():
            res = run_variant(m, params, images, truth)
            row[f"{set_name}: tiles/s"] = round(res["tiles_per_s"], 1)
            row[f"{set_name}: dice"] = round(res["dice"], 4)
        rows.append(row)
    empties = {k: round(all_empty_dice(t.reshape(len(t), 4, -1).any(axis=2)), 4) for k, (_i, t) in sets.items()}
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cpus": len(os.sched_getaffinity(0)),
                       "threads": model.threads},
           "model": str(args.model), "sha256": model.sha256, "frames": {k: len(v[0]) for k, v in sets.items()},
           "all_empty_dice": empties, "variants": rows}
    if args.json:
        print(json.dumps(out))
        return
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}))
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))


if __name__ == "__main__":
    main()
