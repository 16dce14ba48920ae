#!/usr/bin/env bash
# The seg recipe for few real frames (issue 3), end to end, with its honest figures:
#   1. pre-train on 400 synthetic frames (held-out synthetic Dice in $WORK/pretrain/metrics.json);
#   2. fine-tune from those weights on the real sample plus 100 other synthetic frames at weight 0.2,
#      half the crops getting a defect copied in from another training frame of the same folder,
#      out-of-fold (data.oof_folds=3): every real frame is scored by a fold model that never saw it, the
#      post-processing (pixel threshold and minimum mask area per class; presence threshold and minimum
#      component stay at their defaults) is tuned on the real frames' out-of-fold predictions (nested
#      estimate) and the final model trains on every frame;
#   3. score the final model on 200 synthetic frames no stage trained on.
#
#   bash scripts/train_seg_real.sh        # needs the train extra; about 35 minutes on a 2-core CPU
#   WORK=runs/seg_real_w16 WIDTH=16 bash scripts/train_seg_real.sh   # another folder, a narrower network
#
# The figures to read: $WORK/run/metrics.json "per_group" (real and synthetic out-of-fold Dice with the
# chosen post-processing), "oof" (default vs nested-tuned estimate on the real frames, all-empty per
# fold, the gain over all-empty with its bootstrap interval) and $WORK/synthetic_holdout.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-runs/seg_real}
WIDTH=${WIDTH:-32}   # the network's base width (model.width); scripts/build_default_model.sh passes its own
REAL=${STEEL_SHARED_DATA:-../shared/data}/severstal
export TF_CPP_MIN_LOG_LEVEL=2
train() { "$PY" -m steel_train.cli "$@"; }

rm -rf "$WORK"
mkdir -p "$WORK"
train synth --out "$WORK/synth_pretrain" --images 400 --seed 11 --quiet --json >/dev/null
train synth --out "$WORK/synth_mix" --images 100 --seed 14 --quiet --json >/dev/null
train synth --out "$WORK/synth_holdout" --images 200 --seed 13 --quiet --json >/dev/null

MODEL=(--set model.input_downsample=2 --set model.width="$WIDTH" --set fit.dice_weight=2.0)
train fit --data "$WORK/synth_pretrain" --model seg --out "$WORK/pretrain" "${MODEL[@]}" \
  --epochs 30 --set fit.patience=30 >"$WORK/pretrain.log" 2>&1
train fit --data "$WORK/synth_mix" --data "$REAL" --model seg --out "$WORK/run" "${MODEL[@]}" \
  --set fit.init_weights="$WORK/pretrain" --set data.oof_folds=3 --set "postprocess.tune_on=[1]" \
  --set "data.source_weights=[0.2,1.0]" --set data.crops_per_image=6 --set data.copy_paste=0.5 \
  --set "postprocess.tune_keys=[pixel_threshold,min_area]" \
  --set fit.presence_weight=0.2 --epochs 60 --set fit.learning_rate=0.001 >"$WORK/run.log" 2>&1
train evaluate --model "$WORK/run" --data "$WORK/synth_holdout" --json >"$WORK/synthetic_holdout.json"
"$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
m = json.loads((work / "run" / "metrics.json").read_text())
pre = json.loads((work / "pretrain" / "metrics.json").read_text())
hold = json.loads((work / "synthetic_holdout.json").read_text())
oof = m["oof"]
print(f"pre-trained model, held-out synthetic: Dice {pre['dice_mean']:.4f} (all-empty {pre['dice_all_empty']:.4f})")
for name, g in m["per_group"].items():
    tuned_here = oof["postprocess"] == "tuned" and (oof["tune_on"] is None or int(name.split(":")[0]) in oof["tune_on"])
    note = " (tuned on these very predictions: optimistic)" if tuned_here else ""
    print(f"out-of-fold {name}: Dice {g['dice_mean']:.4f} with the {oof['postprocess']} post-processing{note} "
          f"(all-empty {g['dice_all_empty']:.4f})")
print(f"real frames, out-of-fold: default post-processing {oof['dice_default_params']:.4f}, tuned on the other "
      f"folds {oof['dice_tuned_on_other_folds']:.4f}; kept: {oof['postprocess']}")
g = oof["gain_over_all_empty"]
print(f"gain over all-empty on the real frames ({oof['postprocess']} post-processing, honest figure): {g['mean']:+.4f}, "
      f"95% paired bootstrap interval {g['ci95'][0]:+.4f} .. {g['ci95'][1]:+.4f} ({g['images']} frames)")
print(f"final model, {hold['images']} synthetic frames no stage trained on: Dice {hold['dice_mean']:.4f} "
      f"(all-empty {hold['dice_all_empty']:.4f})")
EOF
