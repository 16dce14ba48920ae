"""Out-of-fold training for scarce data (``data.oof_folds=K``): fold models, tuning, final model.

With a few dozen labelled tiles a 20% validation split is five or six images: too few to tune four
classes' thresholds on, and a model tuned on its own training images is over-confident (issue 3: the
tuning then moved held-out Dice by +-0.03 at random). So:

1. train K fold models, each on K-1 folds for ``fit.epochs`` with no early stopping and no best-epoch
   selection (the held-out fold is what gets scored, so nothing may be chosen on it);
2. predict every image with the one fold model that never saw it (out-of-fold predictions);
3. score the out-of-fold predictions with the default post-processing, and with post-processing tuned
   on the *other* folds only (nested: an honest estimate of what tuning buys on unseen images);
4. tune on all out-of-fold predictions; keep the tuned parameters only if the nested estimate beats the
   defaults, otherwise keep the defaults; report the honest figure's gain over predicting nothing, per
   image, with a paired bootstrap interval (``evaluate.gain_over_all_empty``: on a few dozen images a gain of
   a few hundredths may not be clear of zero);
5. train the final model on every image for ``fit.epochs`` and write it with those parameters.

The run folder is a normal one (``model.keras``, ``postprocess.json``, ``metrics.json`` ...), plus
``folds/foldK/`` with each fold model's own run folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steel_edge.configfile import dump_config
from steel_edge.data.rle import HEIGHT, WIDTH
from steel_edge.data.severstal import SeverstalImage
from steel_train.config import TrainConfig
from steel_train.evaluate import all_empty_per_image, gain_over_all_empty

log = logging.getLogger(__name__)


def _fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    k = cfg.data.oof_folds
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"oof_folds": None, "folds": k, "fold": fold}),
        # No selection on the held-out fold: run every epoch and keep the last weights.
        "fit": cfg.fit.model_copy(update={"restore_best": False, "patience": cfg.fit.epochs}),
        "postprocess": cfg.postprocess.model_copy(update={"tune": False}),
    })


def _predict_fold(run: Path, by_path: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The fold model's predictions for the images it never trained on."""
    import keras

    from steel_train import losses  # noqa: F401  (registers the custom loss for loading)
    from steel_train.evaluate import KerasSeg

    records = [by_path[str(Path(p).resolve())] for p in json.loads((run / "split.json").read_text())["validation"]]
    items = [SeverstalImage(r.path.name, r.path, r.rles) for r in records]
    model = keras.models.load_model(run / "model.keras", compile=False)
    predictor = KerasSeg(model)
    probs, presence = predictor(np.stack([item.read() for item in items]))
    stride = predictor.stride
    keras.backend.clear_session()
    return {"items": items, "probs": probs, "presence": presence, "stride": stride,
            "groups": [names[r.source] for r in records], "sources": np.array([r.source for r in records])}


def _only(fold: dict[str, Any], sources: Sequence[int] | None) -> dict[str, Any]:
    """The part of a fold's predictions from the given --data folders (all of it for None)."""
    if sources is None:
        return fold
    keep = np.isin(fold["sources"], list(sources))
    return {**fold, "items": [item for item, k in zip(fold["items"], keep, strict=True) if k],
            "probs": fold["probs"][keep], "presence": fold["presence"][keep]}


def _image_dice(per_image: list[tuple[float, Any, Any]]) -> list[float]:
    return [d for d, _, _ in per_image]


def fit_oof(folders: Sequence[Path | str], cfg: TrainConfig, out: Path | str) -> dict[str, Any]:
    """Run the five steps above; return ``{"run": ..., "metrics": ...}`` like ``fit``."""
    from steel_edge.postprocess import PostprocessParams
    from steel_train import plots
    from steel_train.evaluate import score_seg, worst_panels
    from steel_train.fit import fit
    from steel_train.records import load_seg_records
    from steel_train.tune import starting_values, tune_postprocess, with_skip

    if cfg.model_kind != "seg":
        raise ValueError("data.oof_folds is for the seg model (cls and baseline use data.val_fraction or data.folds)")
    k = int(cfg.data.oof_folds or 0)
    started = time.time()
    out = Path(out)
    paths = [Path(f) for f in folders]
    names = [f"{i}:{p.name}" for i, p in enumerate(paths)]
    tune_on = cfg.postprocess.tune_on
    if tune_on is not None and not set(tune_on) <= set(range(len(paths))):
        raise ValueError(f"postprocess.tune_on: {tune_on} names a --data position that does not exist "
                         f"(0..{len(paths) - 1})")
    by_path = {str(Path(r.path).resolve()): r for r in load_seg_records(paths, cfg.data.on_bad_row)}

    folds = []
    for f in range(k):
        log.info("out-of-fold: fold model %d of %d", f + 1, k)
        run = out / "folds" / f"fold{f}"
        fit(paths, _fold_config(cfg, f), run)
        folds.append(_predict_fold(run, by_path, names))
    stride = folds[0]["stride"]
    all_folds, folds = folds, [_only(g, tune_on) for g in folds]

    d = cfg.postprocess
    start = starting_values(d)
    default_params = PostprocessParams(gate=d.gate, **start)
    soft = d.gate == "soft"

    def pooled(subset: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        return (np.concatenate([g["probs"] for g in subset]), np.concatenate([g["presence"] for g in subset]),
                [item.masks() for g in subset for item in g["items"]])

    # Nested estimate: each fold scored with parameters tuned on the other folds' predictions only.
    per_fold, nested, default_dice = [], [], []
    empty = all_empty_per_image([item for g in folds for item in g["items"]])
    for f, fold in enumerate(folds):
        batch = [(fold["items"], fold["probs"], fold["presence"])]
        d_metrics, d_per = score_seg(batch, default_params)
        default_dice += _image_dice(d_per)
        row: dict[str, Any] = {"fold": f, "images": len(fold["items"]), "dice_default_params": d_metrics["dice_mean"],
                               "dice_all_empty": d_metrics["dice_all_empty"]}
        if d.tune:
            probs, presence, masks = pooled([g for j, g in enumerate(folds) if j != f])
            chosen, _ = tune_postprocess(probs, presence, masks, stride, start, soft_gate=soft,
                                         keys=d.tune_keys, min_precision=d.tune_min_precision,
                                         min_recall=d.tune_min_recall)
            n_metrics, n_per = score_seg(batch, PostprocessParams(gate=d.gate, **chosen))
            nested += _image_dice(n_per)
            row["dice_tuned_on_other_folds"] = n_metrics["dice_mean"]
        per_fold.append(row)

    probs, presence, masks = pooled(folds)
    params, tuning, choice = default_params, [], "default"
    oof_default = float(np.mean(default_dice))
    oof_nested = float(np.mean(nested)) if nested else None
    if d.tune:
        chosen, report = tune_postprocess(probs, presence, masks, stride, start, soft_gate=soft,
                                         keys=d.tune_keys, min_precision=d.tune_min_precision,
                                         min_recall=d.tune_min_recall)
        tuning = [vars(r) for r in report]
        if oof_nested is not None and oof_nested > oof_default:
            params, choice = PostprocessParams(gate=d.gate, **chosen), "tuned"
        if d.tune_skip:
            params = with_skip(params, probs, presence, [item.classes for g in folds for item in g["items"]],
                               (HEIGHT, WIDTH))
    log.info("out-of-fold Dice on %d images: default post-processing %.4f, tuned on other folds %s; keeping %s",
             len(default_dice), oof_default, "-" if oof_nested is None else f"{oof_nested:.4f}", choice)
    # The honest per-image figures of the post-processing kept, against predicting nothing on the same images.
    gain = gain_over_all_empty(nested if choice == "tuned" else default_dice, empty, seed=cfg.fit.seed)
    log.info("out-of-fold gain over all-empty: %+.4f (95%% bootstrap interval %+.4f .. %+.4f)",
             gain["mean"], *gain["ci95"])
    # Scored on every held-out image, with per-folder figures; the estimates above cover the tune_on folders.
    items = [item for g in all_folds for item in g["items"]]
    groups = [name for g in all_folds for name in g["groups"]]
    batch = [(items, np.concatenate([g["probs"] for g in all_folds]),
              np.concatenate([g["presence"] for g in all_folds]))]
    metrics, per_image = score_seg(batch, params, groups=groups)
    metrics.update({
        "split": "out-of-fold",
        # The honest figure for unseen images: with tuned parameters the pooled score above was tuned on
        # these very predictions, so the nested score stands in for it.
        "dice_mean_estimate": oof_nested if choice == "tuned" else oof_default,
        "oof": {"folds": k, "images": len(default_dice), "tune_on": tune_on, "dice_default_params": oof_default,
                "dice_tuned_on_other_folds": oof_nested, "postprocess": choice, "per_fold": per_fold,
                "gain_over_all_empty": gain},
        "tuning": tuning,
    })
    log.info("out-of-fold: final model on all %d images", len(items))
    final = fit(paths, cfg, out, all_images=True)
    (out / "postprocess.json").write_text(params.model_dump_json(indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    dump_config(cfg, out / "config.yaml")  # the resolved config as asked for, oof_folds included
    plots.worst_overlays(worst_panels(per_image), out / "plots" / "worst_oof.png",
                         title=f"worst out-of-fold images, Dice {metrics['dice_mean']:.4f} ({choice} post-processing)")
    record = {**final["run"], "oof_folds": k, "total_seconds": round(time.time() - started, 1),
              "fold_runs": [str((out / "folds" / f"fold{f}").resolve()) for f in range(k)]}
    (out / "run.json").write_text(json.dumps(record, indent=2))
    return {"run": record, "metrics": metrics}
