#!/usr/bin/env bash
# Rebuild the bundled default model, edge/steel_edge/models/default_seg.onnx, from scratch with the
# measured seg recipe for few real frames (scripts/train_seg_real.sh: synthetic pre-training, then
# fine-tuning on the shared real Severstal sample with copy-paste, out-of-fold tuning), at the width
# chosen from measured speed and real-frame Dice (README "The bundled default model"); then ONNX export
# with parity and the record models/default_seg.json (sha256, the real out-of-fold and unseen synthetic
# figures, parity).
#
#   bash scripts/build_default_model.sh            # needs the train extra (make test's .venv works)
#   WIDTH=16 WORK=runs/dm16 bash scripts/build_default_model.sh   # another width
#
# About 35 minutes on a 2-core CPU at width 32. It needs the real sample (../shared/data/severstal, or
# STEEL_SHARED_DATA): the recipe's figures are measured on it. Exports are not byte-reproducible (tf2onnx
# node names and the creation time differ) and CPU training is not bit-reproducible, so the sha256 in
# models/default_seg.json is that of the committed file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-runs/default_model}
WIDTH=${WIDTH:-32}
SHARED=${STEEL_SHARED_DATA:-../shared/data}
OUT=edge/steel_edge/models/default_seg.onnx
export TF_CPP_MIN_LOG_LEVEL=2

if [ ! -f "$SHARED/severstal/train.csv" ]; then
  echo "build_default_model.sh: $SHARED/severstal/train.csv not found; the bundled model is trained and" \
       "measured on the real Severstal sample (set STEEL_SHARED_DATA to the folder holding severstal/)" >&2
  exit 2
fi

WORK="$WORK" WIDTH="$WIDTH" STEEL_SHARED_DATA="$SHARED" PYTHON="$PY" bash scripts/train_seg_real.sh
"$PY" -m steel_export.cli --model "$WORK/run" --out "$OUT" --json > "$WORK/export.json"
"$PY" - "$WORK" "$OUT" <<'EOF'
import hashlib, json, sys
from pathlib import Path
import yaml
work, onnx = Path(sys.argv[1]), Path(sys.argv[2])
report = json.loads((work / "export.json").read_text())
metrics = json.loads((work / "run" / "metrics.json").read_text())
run = json.loads((work / "run" / "run.json").read_text())
pre = json.loads((work / "pretrain" / "metrics.json").read_text())
hold = json.loads((work / "synthetic_holdout.json").read_text())
oof = metrics["oof"]
model_cfg = yaml.safe_load((work / "run" / "config.yaml").read_text())["model"]  # the run's resolved config
record = {
    "file": onnx.name,
    "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(),
    "bytes": onnx.stat().st_size,
    "architecture": {k: model_cfg[k] for k in ("width", "depth", "output_stride", "input_downsample")},
    "data_fingerprint": run["data_fingerprint"],
    "code_version": run["code_version"],
    "recipe": "scripts/train_seg_real.sh",
    # Every real frame scored by a fold model that never saw it; post-processing tuned on the other folds.
    "real_out_of_fold": {k: oof[k] for k in ("folds", "images", "dice_default_params", "dice_tuned_on_other_folds",
                                             "postprocess", "gain_over_all_empty")}
    | {"dice_all_empty": metrics["per_group"]["1:severstal"]["dice_all_empty"]},
    "synthetic_unseen": {k: hold[k] for k in ("images", "dice_mean", "dice_all_empty")},
    "pretrained_synthetic_held_out": {k: pre[k] for k in ("images", "dice_mean", "dice_all_empty")},
    "parity": {k: report["parity"][k] for k in ("images", "real_images", "max_abs_diff", "postprocessed_dice")},
    "rebuild": "bash scripts/build_default_model.sh",
}
onnx.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps(record, indent=2))
EOF
