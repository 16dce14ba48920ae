"""On how many real tiles could a cascade skip the mask decoder? The share of frames on which no class passes
its hard-gate presence threshold, with the model's skip rule (``skip_below``, what its cascade form skips on), with
its tuned thresholds and with every threshold raised to a floor.
Issue 24's groundwork: the gate's behaviour on real strip, not a quality figure (most of these frames trained
the bundled model).

    python benchmarks/gate_skip_rate.py [--model FILE.onnx] [--floor 0.3] [--data DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.data.severstal import load_severstal
from steel_edge.model import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--floor", type=float, default=0.3, help="the lowest presence threshold a cascade would use")
    parser.add_argument("--data", type=Path, nargs="+", default=[SHARED / "severstal_more", SHARED / "severstal"])
    args = parser.parse_args(argv)
    model = load_model(args.model)
    params = model.contract.postprocess
    assert params is not None, "a seg model"
    images = [item for folder in args.data for item in load_severstal(folder).images]
    presence, clean = [], []
    for i in range(0, len(images), 8):
        batch = images[i:i + 8]
        presence.append(model.predict_seg(np.stack([item.read() for item in batch]))[1])
        clean += [not item.classes for item in batch]
    scores, free = np.concatenate(presence), np.array(clean)
    report: dict[str, object] = {"model": str(args.model), "frames": len(images), "defect_free": int(free.sum()),
                                 "gate": params.gate}
    rules = [("tuned", np.array(params.presence_threshold)),
             (f"floor_{args.floor:g}", np.maximum(params.presence_threshold, args.floor))]
    if params.skip_below is not None:  # the model's own skip rule, what its cascade form skips on
        rules.insert(0, ("skip_rule", np.array(params.skip_below)))
    for label, thresholds in rules:
        skip = ~(scores >= thresholds).any(axis=1)
        report[label] = {"thresholds": thresholds.round(3).tolist(), "skippable": float(skip.mean()),
                         "skippable_defect_free": float(skip[free].mean()) if free.any() else None,
                         "class_passes": (scores >= thresholds).mean(axis=0).round(3).tolist()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
