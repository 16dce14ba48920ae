"""``steel-train fit``: data, model, fit, tune, evaluate, plots — top to bottom, one config object.

A run folder holds everything needed to reproduce and judge the run: ``model.keras``, the resolved
``config.yaml``, ``run.json`` (code version, data fingerprint, environment, timings), ``history.csv``,
``metrics.json``, ``postprocess.json`` (seg: tuned per-class parameters) and ``plots/``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steel_edge.configfile import dump_config
from steel_train.config import TrainConfig
from steel_train.pipeline import ClsRecord
from steel_train.records import baseline_label, load_cls_records, load_seg_records
from steel_train.runinfo import code_version, data_fingerprint, environment
from steel_train.split import kfold_split, stratified_split, test_split

log = logging.getLogger(__name__)
SEG_CLASS_NAMES = ("1", "2", "3", "4")


def seed_everything(seed: int) -> None:
    import keras

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(seed)


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy the config names; ``default`` is one device (CPU or one GPU)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("distribute.strategy=multi_worker needs the TF_CONFIG environment variable (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def lr_callback(cfg: TrainConfig) -> Any:
    import keras

    fit = cfg.fit
    if fit.schedule == "plateau":
        return keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=max(1, fit.patience // 2), verbose=1)

    def schedule(epoch: int, lr: float) -> float:
        if epoch < fit.warmup_epochs:
            return fit.learning_rate * (epoch + 1) / (fit.warmup_epochs + 1)
        if fit.schedule == "constant":
            return fit.learning_rate
        span = max(1, fit.epochs - fit.warmup_epochs)
        progress = (epoch - fit.warmup_epochs) / span
        return fit.learning_rate * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * progress)))

    return keras.callbacks.LearningRateScheduler(schedule)


def optimizer(cfg: TrainConfig) -> Any:
    import keras

    if cfg.fit.weight_decay:
        return keras.optimizers.AdamW(cfg.fit.learning_rate, weight_decay=cfg.fit.weight_decay)
    return keras.optimizers.Adam(cfg.fit.learning_rate)


def _load_source_model(source: str, key: str) -> tuple[Any, Path]:
    import keras

    path = Path(source)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise ValueError(f"{key}: {path}: no such model file")
    return keras.models.load_model(path, compile=False), path


def load_initial_weights(model: Any, source: str) -> None:
    """Copy the weights of a saved model (``.keras`` file or run folder) into ``model``; shapes must match."""
    src, path = _load_source_model(source, "fit.init_weights")
    theirs, ours = src.get_weights(), model.get_weights()
    mismatch = [i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a.shape != b.shape]
    if len(theirs) != len(ours) or mismatch:
        raise ValueError(f"fit.init_weights: {path}: its architecture differs from this config's model "
                         f"({len(theirs)} vs {len(ours)} weight arrays, first shape mismatch at {mismatch[:1]}); "
                         "use the same model.* settings")
    model.set_weights(theirs)
    log.info("initial weights from %s", path)


def load_encoder_weights(model: Any, source: str) -> None:
    """Copy the encoder layers (``models.ENCODER_PREFIX``) of a saved model into ``model``, by layer name."""
    from steel_train.models import ENCODER_PREFIX

    src, path = _load_source_model(source, "fit.init_encoder")
    ours = {layer.name: layer for layer in model.layers if layer.name.startswith(ENCODER_PREFIX)}
    theirs = {layer.name: layer for layer in src.layers if layer.name.startswith(ENCODER_PREFIX)}
    if not theirs:
        raise ValueError(f"fit.init_encoder: {path}: has no seg encoder "
                         "(train a seg model, or a cls model with model.arch=seg_encoder)")
    if set(ours) != set(theirs):
        missing = sorted(set(ours) ^ set(theirs))
        raise ValueError(f"fit.init_encoder: {path}: its encoder has other stages than this config's (model.depth); "
                         f"layers only on one side: {missing[:4]}")
    for name, layer in ours.items():
        weights = theirs[name].get_weights()
        shapes = [w.shape for w in weights], [w.shape for w in layer.get_weights()]
        if shapes[0] != shapes[1]:
            raise ValueError(f"fit.init_encoder: {path}: layer {name} has shapes {shapes[0]}, this config's "
                             f"{shapes[1]}; use the same model.width")
        layer.set_weights(weights)
    log.info("encoder weights (%d layers) from %s", len(ours), path)


RESUME_DIR = "resume"  # in the run folder while a fit runs: the last finished epoch's weights and optimizer


def resume_epoch(cfg: TrainConfig, out: Path, folders: Sequence[Path], member: int = 0) -> int:
    """The epoch a fit starts at: 0, or the one after the last epoch an interrupted run of the same config and
    data finished in ``out`` (Keras' BackupAndRestore keeps its weights and optimizer in ``out/resume``).

    A soup (``fit.soup`` > 1) is not resumed: its members share the run folder, and each starts again anyway.
    """
    if cfg.fit.soup > 1:
        return 0
    folder = out / RESUME_DIR
    stamp = folder / "run.json"
    ident = {"config": cfg.model_dump(mode="json"), "data": [str(f.resolve()) for f in folders], "member": member}
    meta = folder / "training_metadata.json"
    if meta.is_file():
        if stamp.is_file() and json.loads(stamp.read_text()) == ident:
            epoch = int(json.loads(meta.read_text())["epoch"])
            log.info("resuming the interrupted run in %s at epoch %d of %d", out, epoch + 1, cfg.fit.epochs)
            return epoch
        raise ValueError(f"{out}: holds an interrupted run of another config or data ({folder}); "
                         "delete that folder to start over, or write to another --out")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(ident))
    return 0


def best_so_far(history: Path, monitor: str) -> float | None:
    """The best ``monitor`` value an interrupted run logged before it stopped (None if none)."""
    import csv

    if not history.is_file():
        return None
    with history.open() as fh:
        values = [float(row[monitor]) for row in csv.DictReader(fh) if row.get(monitor) not in (None, "", "NA")]
    if not values:
        return None
    return max(values) if "accuracy" in monitor else min(values)


def callbacks(cfg: TrainConfig, out: Path, monitor: str | None, history: str = "history.csv",
              start_epoch: int = 0) -> list[Any]:
    """Early stopping and checkpoints on ``monitor``; with no validation data (None) just the log and schedule.

    Every finished epoch is backed up to ``out/resume`` (weights and optimizer), so an interrupted run resumes
    where it stopped (``resume_epoch``); after a resume, the best checkpoint still covers the epochs before it
    (early stopping's patience counts again from the resumed epoch).
    """
    import keras

    keep = [keras.callbacks.CSVLogger(str(out / history), append=start_epoch > 0), lr_callback(cfg)]
    if cfg.fit.soup == 1:
        keep.insert(0, keras.callbacks.BackupAndRestore(str(out / RESUME_DIR)))
    if monitor is None:
        return keep
    mode = "max" if "accuracy" in monitor else "min"
    best = best_so_far(out / history, monitor) if start_epoch else None
    return [
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.fit.patience,
                                      restore_best_weights=cfg.fit.restore_best, verbose=1),
        keras.callbacks.ModelCheckpoint(str(out / "checkpoint.keras"), monitor=monitor, mode=mode,
                                        save_best_only=cfg.fit.restore_best, initial_value_threshold=best),
        *keep,
    ]


def restore_best_checkpoint(model: Any, cfg: TrainConfig, out: Path, resumed: bool) -> None:
    """After a resumed run, the best epoch may lie before the resume, where early stopping did not see it."""
    path = out / "checkpoint.keras"
    if resumed and cfg.fit.restore_best and path.is_file():
        model.load_weights(path)


def compile_seg(model: Any, cfg: TrainConfig) -> None:
    """Losses, weights and a fresh optimizer for the seg model (again before each fine-tuning of a soup)."""
    import keras

    from steel_train.losses import BceDiceLoss

    model.compile(
        optimizer=optimizer(cfg),
        loss={"masks": BceDiceLoss(cfg.fit.dice_weight, present_only=cfg.fit.dice_classes == "present"),
              "presence": keras.losses.BinaryCrossentropy()},
        loss_weights={"masks": 1.0, "presence": cfg.fit.presence_weight},
        metrics={"presence": [keras.metrics.BinaryAccuracy(name="accuracy")]},
    )


def average_weights(members: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The uniform soup of several models' weights: float variables averaged, any others kept from the last."""
    if not members:
        raise ValueError("no models to average")
    out = []
    for values in zip(*members, strict=True):
        last = values[-1]
        out.append(np.mean(values, axis=0).astype(last.dtype) if np.issubdtype(last.dtype, np.floating) else last)
    return out


def merge_histories(parts: Sequence[Path], out: Path) -> None:
    """One ``history.csv`` from each soup member's, with a ``member`` column (the history plot marks the joins)."""
    import csv

    rows: list[dict[str, str]] = []
    for member, part in enumerate(parts):
        with part.open() as fh:
            rows += [{"member": str(member), **row} for row in csv.DictReader(fh)]
        part.unlink()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="NA")
        writer.writeheader()
        writer.writerows(rows)


def fit(
    folders: Sequence[Path | str], cfg: TrainConfig, out: Path | str, *, all_images: bool = False
) -> dict[str, Any]:
    """Train ``cfg.model_kind`` on ``folders``, write the run folder ``out``, return the metrics.

    ``all_images`` trains seg on every image with no validation split (fixed epochs, no tuning, empty
    metrics): the final model of an out-of-fold run (``data.oof_folds``, see ``steel_train.oof``).
    """
    if cfg.data.oof_folds and not all_images:
        raise ValueError("data.oof_folds is an out-of-fold run: steel_train.oof.fit_oof trains it "
                         "(steel-train fit chooses it by the config)")
    if all_images and cfg.model_kind != "seg":
        raise ValueError("training on every image without validation is only for the seg model")
    import keras

    from steel_train import evaluate, plots
    from steel_train.models import build_baseline, build_cls, build_seg

    started = time.time()
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = [Path(f) for f in folders]
    if cfg.data.source_weights is not None and len(cfg.data.source_weights) != len(paths):
        raise ValueError(f"data.source_weights has {len(cfg.data.source_weights)} entries for {len(paths)} --data")
    dump_config(cfg, out / "config.yaml")
    seed_everything(cfg.fit.seed)
    kind = cfg.model_kind
    verbose = 1 if os.isatty(1) else 2

    # ---- data
    if kind == "cls":
        cls_records, class_names = load_cls_records(paths, cfg.data.on_bad_row)
        keys: list[Any] = [r.label for r in cls_records]
    else:
        seg_records = load_seg_records(paths, cfg.data.on_bad_row)
        if kind == "baseline":
            seg_records = [r for r in seg_records if r.classes]
            class_names = SEG_CLASS_NAMES
            keys = [baseline_label(r.rles) for r in seg_records]
        else:
            class_names = SEG_CLASS_NAMES
            keys = [(paths[r.source].resolve().as_posix(), r.classes) for r in seg_records]
    # The test set goes first, by folder name and class set alone: never trained, stopped or tuned on.
    records_any: Sequence[Any] = cls_records if kind == "cls" else seg_records
    pool, test_idx = list(range(len(keys))), list[int]()
    if cfg.data.test_fraction and not all_images:
        strata = [r.label if kind == "cls" else r.classes for r in records_any]
        pool, test_idx = test_split([paths[r.source].name for r in records_any], strata, cfg.data.test_fraction,
                                    cfg.data.test_seed)
    pool_keys = [keys[i] for i in pool]
    if all_images:
        train_idx, val_idx = list(range(len(keys))), list[int]()
    elif cfg.data.folds:
        train_idx, val_idx = kfold_split(pool_keys, cfg.data.folds, cfg.data.fold, cfg.data.split_seed)
    else:
        train_idx, val_idx = stratified_split(pool_keys, cfg.data.val_fraction, cfg.data.split_seed)
    if not all_images:
        train_idx, val_idx = [pool[i] for i in train_idx], [pool[i] for i in val_idx]
    log.info("%s: %d training, %d validation and %d test images from %d folder(s)", kind, len(train_idx),
             len(val_idx), len(test_idx), len(paths))
    if not train_idx or (not val_idx and not all_images):
        raise ValueError(f"too few images to split ({len(keys)}); need at least two per class set")

    # ---- model and fit
    strategy = make_strategy(cfg.distribute.strategy)
    with strategy.scope():
        if kind == "seg":
            from steel_train.pipeline import SegSource, seg_datasets

            model = build_seg(cfg.model)
            compile_seg(model, cfg)
        else:
            n = len(class_names)
            model = build_cls(cfg.model, n) if kind == "cls" else build_baseline(cfg.model, n)
            model.compile(optimizer=optimizer(cfg),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.fit.label_smoothing),
                          metrics=["accuracy"])
        if cfg.fit.init_weights:
            load_initial_weights(model, cfg.fit.init_weights)
        if cfg.fit.init_encoder:
            load_encoder_weights(model, cfg.fit.init_encoder)

    if kind == "seg":
        train_src = SegSource([seg_records[i] for i in train_idx], cfg.data.cache)
        val_src = SegSource([seg_records[i] for i in val_idx], cfg.data.cache)
        soup = cfg.fit.soup
        start_weights = model.get_weights()
        members, parts = [], []
        for member in range(soup):
            seed = cfg.fit.seed + member
            if member:  # the next fine-tuning starts again from the pre-trained weights, with a fresh optimizer
                seed_everything(seed)
                model.set_weights(start_weights)
                with strategy.scope():
                    compile_seg(model, cfg)
            if soup > 1:
                log.info("soup: fine-tuning %d of %d (seed %d)", member + 1, soup, seed)
            start = resume_epoch(cfg, out, paths, member)
            train_ds, val_ds, steps = seg_datasets(train_src, val_src, cfg.data, cfg.model, seed, cfg.fit.epochs,
                                                   start_epoch=start)
            steps = min(steps, cfg.fit.steps_per_epoch or steps)
            parts.append(out / (f"history_member{member}.csv" if soup > 1 else "history.csv"))
            history = model.fit(train_ds, validation_data=val_ds if val_idx else None, epochs=cfg.fit.epochs,
                                steps_per_epoch=steps,
                                callbacks=callbacks(cfg, out, "val_loss" if val_idx else None, parts[-1].name, start),
                                verbose=verbose, shuffle=False)
            restore_best_checkpoint(model, cfg, out, start > 0)
            members.append(model.get_weights())
        if soup > 1:
            model.set_weights(average_weights(members))
            merge_histories(parts, out / "history.csv")
    else:
        from steel_train.pipeline import cls_arrays, cls_datasets

        if kind == "cls":
            recs = cls_records
        else:
            recs = [ClsRecord(r.path, baseline_label(r.rles), r.source) for r in seg_records]
        train_xy = cls_arrays([recs[i] for i in train_idx], cfg.model)
        val_xy = cls_arrays([recs[i] for i in val_idx], cfg.model)
        square = kind == "cls" and cfg.model.input_height == cfg.model.input_width
        train_ds, val_ds = cls_datasets(train_xy, val_xy, cfg.data, len(class_names), cfg.fit.seed, square)
        monitor = "val_accuracy"
        start = resume_epoch(cfg, out, paths)
        history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.fit.epochs,
                            steps_per_epoch=cfg.fit.steps_per_epoch,
                            callbacks=callbacks(cfg, out, monitor, start_epoch=start), verbose=verbose, shuffle=False)
        restore_best_checkpoint(model, cfg, out, start > 0)
    fit_seconds = time.time() - started
    model.save(out / "model.keras")
    (out / "checkpoint.keras").unlink(missing_ok=True)  # model.keras holds the weights kept

    # ---- tune (seg), evaluate on the validation split, plots
    if kind == "seg" and not val_idx:
        metrics: dict[str, Any] = {}  # the caller (steel_train.oof) scores out-of-fold predictions instead
    elif kind == "seg":
        test_records = [seg_records[i] for i in test_idx]
        metrics = evaluate.finish_seg_run(model, val_src, cfg, out, [f"{i}:{p.name}" for i, p in enumerate(paths)],
                                          test_records)
    else:
        metrics = evaluate.finish_cls_run(model, val_xy, class_names, out, kind)
        if test_idx:
            test_xy = cls_arrays([recs[i] for i in test_idx], cfg.model)
            metrics["test"] = evaluate.finish_cls_run(model, test_xy, class_names, out, kind, split="test")
    plots.history_plot(out / "history.csv", out / "plots" / "history.png", title=f"{kind} training history")
    if kind == "seg":
        names = ["1", "2", "3", "4", "none"]
        counts = [sum(c in seg_records[i].classes for i in train_idx) for c in (1, 2, 3, 4)]
        counts.append(sum(not seg_records[i].classes for i in train_idx))
    else:
        names = list(class_names)
        counts = np.bincount([keys[i] for i in train_idx], minlength=len(class_names)).tolist()
    plots.class_count_plot(names, counts, out / "plots" / "class_counts.png",
                           title=f"training images per class ({kind}, {len(train_idx)} images)")

    run = {
        "model_kind": kind,
        "data": [str(f.resolve()) for f in paths],
        "data_fingerprint": data_fingerprint(paths),
        "code_version": code_version(),
        "class_names": list(class_names),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "test_images": len(test_idx),
        "epochs_run": len(history.history.get("loss", [])),
        "soup": cfg.fit.soup,  # 1 unless seg (config validation)
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "params": int(model.count_params()),
        "environment": environment(),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
    # Which images the model never trained on: evaluate or tune on exactly these later.
    # Absolute, like run.json's data folders: `steel-train tune RUN` must find them from any working directory.
    val_paths = [str(Path(records_any[i].path).resolve()) for i in val_idx]
    test_paths = [str(Path(records_any[i].path).resolve()) for i in test_idx]
    (out / "split.json").write_text(json.dumps({"validation": val_paths, "test": test_paths}, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"run": run, "metrics": metrics}
