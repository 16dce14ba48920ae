"""``steel-train tune RUN``: tune a seg run's post-processing again on its own validation split.

Tuning happens after training and reads only the model's predictions, so a changed tuning rule (for example
the precision and recall floors, ``postprocess.tune_min_precision`` / ``tune_min_recall``) can be applied to a
trained run without training it again: the run's model, config and split (``split.json``) are read back, the
validation frames are predicted and tuned exactly as at the end of ``fit``, and ``postprocess.json``,
``metrics.json`` (validation and, where the run has one, its test split) and ``config.yaml`` are rewritten.
``steel-export`` then carries the new rules into the ONNX contract. The frames tuned on are the run's own
validation frames, never its training or test frames.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from steel_edge.configfile import dump_config, load_config
from steel_train.config import TrainConfig

log = logging.getLogger(__name__)


def retune(run: Path | str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-tune and re-score the seg run folder ``run`` with ``overrides`` (dotted keys) applied to its config."""
    import keras

    from steel_train import evaluate
    from steel_train.records import load_seg_records

    run = Path(run)
    for name in ("model.keras", "config.yaml", "run.json", "split.json"):
        if not (run / name).is_file():
            raise ValueError(f"{run}: no {name}; steel-train tune needs a seg run folder written by steel-train fit")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    if saved.get("model_kind") != "seg":
        raise ValueError(f"{run}: a {saved.get('model_kind')} run; steel-train tune is for seg runs")
    cfg = load_config(TrainConfig, run / "config.yaml", overrides or {})
    info = json.loads((run / "run.json").read_text())
    split = json.loads((run / "split.json").read_text())
    folders = [Path(p) for p in info["data"]]
    records = load_seg_records(folders, cfg.data.on_bad_row)
    # Resolved on both sides: runs before 2026-12-05 stored the paths as given on the command line (relative
    # to where fit ran), run.json the folders resolved.
    by_path = {str(Path(r.path).resolve()): r for r in records}
    split = {k: [str(Path(p).resolve()) for p in v] for k, v in split.items()}
    missing = [p for p in split["validation"] + split.get("test", []) if p not in by_path]
    if missing:
        raise ValueError(f"{run}/split.json names {len(missing)} frame(s) no longer in the run's data folders, "
                         f"e.g. {missing[0]}")
    val = [by_path[p] for p in split["validation"]]
    test = [by_path[p] for p in split.get("test", [])]
    if not val:
        raise ValueError(f"{run}: the run has no validation split to tune on")
    model = keras.models.load_model(run / "model.keras", compile=False)
    names = [f"{i}:{p.name}" for i, p in enumerate(folders)]
    metrics = evaluate.finish_seg_run(model, SimpleNamespace(records=val), cfg, run, names, test)
    metrics["retuned"] = {k: v for k, v in (overrides or {}).items()}
    dump_config(cfg, run / "config.yaml")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("%s: re-tuned on %d validation frames: Dice %.4f", run, len(val), metrics["dice_mean"])
    return metrics
