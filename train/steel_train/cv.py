"""``steel-train cv``: k-fold cross-validation of a recipe, with no selection on the images it scores.

Each fold model trains on the other k-1 folds for the config's full schedule and keeps its final weights
(no early stopping, no best epoch chosen on the held-out fold), then scores its held-out fold once. Every
image is scored exactly once, by a model that never saw it, so the pooled accuracy is an honest estimate of
the recipe on unseen images of that kind, and the spread over folds says how steady it is.

For whole-image models (cls, baseline). A seg recipe is measured on its test split (``data.test_fraction``)
or out-of-fold (``data.oof_folds``), which also tune the post-processing on unseen predictions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steel_train.config import TrainConfig
from steel_train.fit import fit

log = logging.getLogger(__name__)


def fold_config(cfg: TrainConfig, folds: int, fold: int) -> TrainConfig:
    """The config of fold model ``fold``: the recipe's schedule run to its end, nothing chosen on the fold."""
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"folds": folds, "fold": fold, "test_fraction": 0.0}),
        "fit": cfg.fit.model_copy(update={"restore_best": False, "patience": cfg.fit.epochs}),
    })


def cross_validate(folders: Sequence[Path | str], cfg: TrainConfig, out: Path | str, folds: int = 5) -> dict[str, Any]:
    """Train ``folds`` fold models under ``out/foldK``; write and return ``out/cv.json``."""
    if cfg.model_kind == "seg":
        raise ValueError("steel-train cv is for cls and baseline models; a seg recipe is measured on its test split "
                         "(data.test_fraction) or out-of-fold (data.oof_folds)")
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    started = time.time()
    out = Path(out)
    rows = []
    confusion: np.ndarray | None = None
    for k in range(folds):
        log.info("cross-validation: fold %d of %d", k + 1, folds)
        result = fit(folders, fold_config(cfg, folds, k), out / f"fold{k}")
        m = result["metrics"]
        matrix = np.array(m["confusion_matrix"])
        confusion = matrix if confusion is None else confusion + matrix
        rows.append({"fold": k, "images": m["images"], "accuracy": m["accuracy"],
                     "fit_seconds": result["run"]["fit_seconds"]})
    assert confusion is not None
    accuracies = np.array([r["accuracy"] for r in rows])
    classes = result["metrics"]["classes"]
    summary = {
        "model_kind": cfg.model_kind,
        "data": [str(Path(f).resolve()) for f in folders],
        "folds": folds,
        "protocol": "k-fold, stratified by class; each fold model trains the full schedule and keeps its final "
                    "weights; every image scored once by the model that never saw it",
        "images": int(confusion.sum()),
        "accuracy_pooled": float(np.trace(confusion) / confusion.sum()),
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std(ddof=1)),
        "accuracy_min": float(accuracies.min()),
        "accuracy_max": float(accuracies.max()),
        "errors": int(confusion.sum() - np.trace(confusion)),
        "classes": classes,
        "confusion_matrix": confusion.tolist(),
        "per_fold": rows,
        "seconds": round(time.time() - started, 1),
    }
    (out / "cv.json").write_text(json.dumps(summary, indent=2))
    log.info("cross-validation: %.2f%% pooled over %d images (folds %.2f%% .. %.2f%%)",
             100 * summary["accuracy_pooled"], summary["images"], 100 * summary["accuracy_min"],
             100 * summary["accuracy_max"])
    return summary
