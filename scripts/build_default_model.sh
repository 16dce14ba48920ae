#!/usr/bin/env bash
# Rebuild the bundled default model, edge/steel_edge/models/default_seg.onnx, from scratch:
# synthetic strip frames (plus the shared real Severstal sample when ../shared/data is there),
# the seg network, tuned post-processing, ONNX export with parity, and the recorded sha256.
#
#   bash scripts/build_default_model.sh            # needs the train extra (make test's .venv works)
#
# About 10 minutes on a 2-core CPU. Exports are not byte-reproducible (tf2onnx node names and the
# creation time differ), so the sha256 in models/default_seg.json is that of the committed file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-runs/default_model}
SHARED=${STEEL_SHARED_DATA:-../shared/data}
export TF_CPP_MIN_LOG_LEVEL=2

rm -rf "$WORK"
mkdir -p "$WORK"
"$PY" -m steel_train.cli synth --out "$WORK/synth" --images 1000 --seed 1 --quiet --json

data=(--data "$WORK/synth")
weights="[1.0]"
if [ -f "$SHARED/severstal/train.csv" ]; then
  # Real frames are few and worth more than synthetic ones: see README "Synthetic data and real images".
  data+=(--data "$SHARED/severstal")
  weights="[0.3,8.0]"
fi

"$PY" -m steel_train.cli fit "${data[@]}" --model seg --out "$WORK/run" --config configs/train_default_model.yaml \
  --set "data.source_weights=$weights"
"$PY" -m steel_export.cli --model "$WORK/run" --out edge/steel_edge/models/default_seg.onnx --json \
  > "$WORK/export.json"
"$PY" - "$WORK" <<'EOF'
import hashlib, json, sys
from pathlib import Path
work = Path(sys.argv[1])
onnx = Path("edge/steel_edge/models/default_seg.onnx")
report = json.loads((work / "export.json").read_text())
metrics = json.loads((work / "run" / "metrics.json").read_text())
run = json.loads((work / "run" / "run.json").read_text())
record = {
    "file": onnx.name,
    "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(),
    "bytes": onnx.stat().st_size,
    "data_fingerprint": run["data_fingerprint"],
    "code_version": run["code_version"],
    "validation": {k: metrics[k] for k in ("images", "dice_mean", "dice_all_empty", "per_group")},
    "parity": {k: report["parity"][k] for k in ("images", "real_images", "max_abs_diff", "postprocessed_dice")},
    "rebuild": "bash scripts/build_default_model.sh",
}
Path("edge/steel_edge/models/default_seg.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps(record, indent=2))
EOF
