"""``steel-train evaluate`` and the end of a fit: predictions -> the edge's post-processing -> metrics.

Segmentation is scored through ``steel_edge.postprocess``, the code the daemon runs, so a Dice figure
here is the Dice the line gets. A model is a ``.keras`` file, an ``.onnx`` file or a run folder.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from steel_edge.data.errors import OnError
from steel_edge.data.labelled import detect_layout, load_labelled
from steel_edge.data.rle import HEIGHT, WIDTH
from steel_edge.data.severstal import NUM_CLASSES, SeverstalImage, load_severstal
from steel_edge.metrics import SegmentationScores, all_empty_dice, classification_report

if TYPE_CHECKING:
    from steel_edge.postprocess import PostprocessParams

log = logging.getLogger(__name__)
WORST_PANELS = 6


class SegPredictor(Protocol):
    @property
    def stride(self) -> int: ...

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, H, W) uint8 tiles -> (N, 4, H/stride, W/stride) probabilities and (N, 4) presence."""
        ...


@dataclass
class KerasSeg:
    model: Any
    batch_size: int = 4

    @functools.cached_property
    def stride(self) -> int:
        probe = self.model(np.zeros((1, HEIGHT, WIDTH, 1), np.float32), training=False)
        return HEIGHT // int(probe["masks"].shape[1])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.model.predict(images[..., None].astype(np.float32), batch_size=self.batch_size, verbose=0)
        return np.transpose(out["masks"], (0, 3, 1, 2)), out["presence"]


@dataclass
class OnnxSeg:
    """The edge's own loader and runtime: the Dice measured here is what the daemon will get."""

    model: Any  # steel_edge.model.EdgeModel

    @property
    def stride(self) -> int:
        return int(self.model.contract.mask_stride)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probs, presence = self.model.predict_seg(images)
        return probs, presence


def _batches(items: Sequence[SeverstalImage], size: int) -> Iterator[list[SeverstalImage]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


Batch = tuple[list[SeverstalImage], np.ndarray, "np.ndarray | None"]


def predicted_batches(predictor: SegPredictor, items: Sequence[SeverstalImage], batch_size: int = 8) -> Iterator[Batch]:
    """(items, probs, presence) a batch at a time: the model runs as the scores are taken, memory stays flat."""
    for batch in _batches(items, batch_size):
        probs, presence = predictor(np.stack([item.read() for item in batch]))
        yield batch, probs, presence


def score_seg(
    batches: Iterable[Batch], params: PostprocessParams, groups: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[tuple[float, SeverstalImage, np.ndarray]]]:
    """Kaggle Dice and friends over predicted batches; also (image Dice, item, predicted masks) for overlays.

    With ``groups`` (one name per item, e.g. its data folder) the metrics also hold ``per_group``.
    """
    from steel_edge.postprocess import masks_only

    scores = SegmentationScores()
    gate_scores: list[np.ndarray] = []
    by_group: dict[str, tuple[SegmentationScores, list[np.ndarray]]] = {}
    per_image: list[tuple[float, SeverstalImage, np.ndarray]] = []
    present = []
    for batch, probs, presence in batches:
        for n, item in enumerate(batch):
            # Scoring needs the final masks only; masks_only skips building defect objects.
            pred = masks_only(probs[n], None if presence is None else presence[n], params, (HEIGHT, WIDTH))
            true = item.masks()
            dice = scores.update(pred, true)
            has = np.asarray(true.reshape(4, -1).any(axis=1))
            present.append(has)
            # The gate's score per class (the presence head, or the largest mask probability without one).
            gate_scores.append(presence[n] if presence is not None else probs[n].reshape(probs.shape[1], -1).max(1))
            if groups is not None:
                group_scores, group_present = by_group.setdefault(groups[len(per_image)],
                                                                  (SegmentationScores(), []))
                group_scores.update(pred, true)
                group_present.append(has)
            per_image.append((float(dice.mean()), item, pred))
    metrics = scores.result()
    metrics["dice_all_empty"] = all_empty_dice(np.array(present)) if present else float("nan")
    if present:
        truth, score = np.array(present), np.array(gate_scores, np.float64)
        metrics["presence_auc_per_class"] = [rank_auc(score[:, c], truth[:, c]) for c in range(truth.shape[1])]
    if groups is not None:
        metrics["per_group"] = {
            name: {**{k: v for k, v in s.result().items() if k in ("images", "dice_mean", "dice_per_class")},
                   "dice_all_empty": all_empty_dice(np.array(p))}
            for name, (s, p) in by_group.items()
        }
    return metrics, per_image


def rank_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney, ties counted half); None when one
    side is empty. Threshold-free: how well the gate could separate a class at any presence threshold."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    sorted_scores = np.asarray(score)[order]
    # Average the ranks of tied scores.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for first, count in zip(start, counts, strict=True):
        if count > 1:
            ranks[order[first:first + count]] = first + (count + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def all_empty_per_image(items: Sequence[SeverstalImage]) -> list[float]:
    """Per image, the Dice of predicting nothing: the share of its classes without a mask (no RLE decoding)."""
    return [1.0 - len(item.classes) / NUM_CLASSES for item in items]


def gain_over_all_empty(
    dice: Sequence[float], empty: Sequence[float], resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Mean per-image gain of Dice over predicting nothing, with a 95% paired bootstrap interval.

    ``dice`` and ``empty`` hold, per image, its Dice (mean over the 4 classes) and the Dice of an empty
    prediction (the share of its classes that are absent). With a few dozen images the gain is a few
    hundredths and the interval says whether it is clear of zero; images are resampled with their own
    baseline, so an easy or hard image moves both sides together.
    """
    diff = np.asarray(dice, np.float64) - np.asarray(empty, np.float64)
    if diff.size == 0:
        raise ValueError("no images to compare")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean": float(diff.mean()), "ci95": [float(low), float(high)], "images": int(diff.size),
            "resamples": resamples, "share_of_resamples_above_zero": float((means > 0).mean())}


def worst_panels(per_image: list[tuple[float, SeverstalImage, np.ndarray]]) -> list[Any]:
    ranked = sorted(per_image, key=lambda t: t[0])[:WORST_PANELS]
    return [(f"{item.image_id}  Dice {d:.3f}  true classes {list(item.classes)}", item.read(), item.masks(), pred)
            for d, item, pred in ranked]


def score_frames(predictor: SegPredictor, items: Sequence[SeverstalImage], params: PostprocessParams,
                 groups: Sequence[str] | None = None, seed: int = 0) -> tuple[dict[str, Any], list[Any]]:
    """The protocol's report on frames a model never trained on: Kaggle Dice, per class, image-level precision
    and recall, Dice on defective pairs, the share of empty pairs left empty, and the gain over predicting
    nothing with its 95% paired bootstrap interval; also the per-image list for overlays."""
    metrics, per_image = score_seg(predicted_batches(predictor, items), params, groups=groups)
    metrics["gain_over_all_empty"] = gain_over_all_empty(
        [dice for dice, _, _ in per_image], all_empty_per_image([item for _, item, _ in per_image]), seed=seed)
    return metrics, per_image


def finish_seg_run(model: Any, val_src: Any, cfg: Any, out: Path, data_names: Sequence[str],
                   test_records: Sequence[Any] = ()) -> dict[str, Any]:
    """Tune post-processing on the validation split, then score it through the edge's code path.

    ``test_records`` (the run's test set, never trained or tuned on) are scored once with the tuned
    parameters, into ``metrics["test"]``.
    """
    from steel_edge.postprocess import PostprocessParams
    from steel_train import plots
    from steel_train.tune import starting_values, tune_postprocess, with_skip

    items = [SeverstalImage(r.path.name, r.path, r.rles) for r in val_src.records]
    predictor = KerasSeg(model)
    stride = predictor.stride
    defaults = cfg.postprocess
    start = starting_values(defaults)
    default_params = PostprocessParams(gate=defaults.gate, **start)
    chosen = start
    tuning: list[dict[str, Any]] = []
    # One pass of the model over the validation split serves the tuning and both scorings.
    probs, presence = predictor(np.stack([item.read() for item in items]))
    if defaults.tune:
        keep = np.array([defaults.tune_on is None or r.source in defaults.tune_on for r in val_src.records])
        chosen, report = tune_postprocess(probs[keep], None if presence is None else presence[keep],
                                          (item.masks() for item, k in zip(items, keep, strict=True) if k), stride,
                                          start, soft_gate=defaults.gate == "soft", keys=defaults.tune_keys,
                                          min_precision=defaults.tune_min_precision,
                                          min_recall=defaults.tune_min_recall)
        tuning = [vars(r) for r in report]
    params = PostprocessParams(gate=defaults.gate, **chosen)
    if defaults.tune and defaults.tune_skip:
        params = with_skip(params, probs[keep], None if presence is None else presence[keep],
                           [item.classes for item, k in zip(items, keep, strict=True) if k], (HEIGHT, WIDTH))
    (out / "postprocess.json").write_text(params.model_dump_json(indent=2))
    groups = [data_names[r.source] for r in val_src.records]
    before, _ = score_seg([(items, probs, presence)], default_params, groups=groups)
    metrics, per_image = score_seg([(items, probs, presence)], params, groups=groups)
    metrics["per_group_default_params"] = before["per_group"]
    metrics["dice_mean_default_params"] = before["dice_mean"]
    metrics["tuning"] = tuning
    metrics["split"] = "validation"
    plots.worst_overlays(worst_panels(per_image), out / "plots" / "worst_val.png",
                         title=f"worst validation images, Dice {metrics['dice_mean']:.4f}")
    if test_records:
        test_items = [SeverstalImage(r.path.name, r.path, r.rles) for r in test_records]
        test, test_per_image = score_frames(predictor, test_items, params,
                                            groups=[data_names[r.source] for r in test_records])
        metrics["test"] = {**test, "split": "test"}
        log.info("test set (%d frames never trained or tuned on): Dice %.4f, all-empty %.4f, gain %+.4f "
                 "(95%% interval %+.4f .. %+.4f)", test["images"], test["dice_mean"], test["dice_all_empty"],
                 test["gain_over_all_empty"]["mean"], *test["gain_over_all_empty"]["ci95"])
        plots.worst_overlays(worst_panels(test_per_image), out / "plots" / "worst_test.png",
                             title=f"worst test images, Dice {test['dice_mean']:.4f}")
    return metrics


def finish_cls_run(model: Any, val_xy: tuple[np.ndarray, np.ndarray], names: Sequence[str], out: Path,
                   kind: str, split: str = "validation") -> dict[str, Any]:
    from steel_train import plots

    x, y = val_xy
    pred = np.argmax(model.predict(x, batch_size=64, verbose=0), axis=1)
    report = classification_report(y, pred, list(names))
    report["split"] = split
    plot = "confusion.png" if split == "validation" else f"confusion_{split}.png"
    plots.confusion_plot(np.array(report["confusion_matrix"]), names, out / "plots" / plot,
                         title=f"{kind}: {split} accuracy {report['accuracy']:.4f} ({len(y)} images)")
    return report


# ---------------------------------------------------------------- evaluate a saved model on a data folder

def _resolve(model_path: Path) -> tuple[Path, dict[str, Any], PostprocessParams | None]:
    """The model file, the run's record (if any) and its tuned post-processing (if any)."""
    from steel_edge.postprocess import PostprocessParams

    if model_path.is_dir():
        run = json.loads((model_path / "run.json").read_text()) if (model_path / "run.json").is_file() else {}
        pp = model_path / "postprocess.json"
        params = PostprocessParams.model_validate_json(pp.read_text()) if pp.is_file() else None
        return model_path / "model.keras", run, params
    return model_path, {}, None


def test_items(items_by_folder: Sequence[tuple[str, Sequence[SeverstalImage]]], fraction: float,
               seed: int) -> list[SeverstalImage]:
    """The frames ``data.test_fraction``/``data.test_seed`` keep apart, from (folder name, frames) pairs, in the
    order a run (``steel-train fit``) with those folders holds them out."""
    from steel_train.split import test_split

    flat = [(name, item) for name, items in items_by_folder for item in items]
    _, test = test_split([name for name, _ in flat], [item.classes for _, item in flat], fraction, seed)
    return [flat[i][1] for i in test]


def evaluate_path(
    model_path: Path | str, data: Path | str | Sequence[Path | str], out: Path | None = None,
    on_error: OnError = "raise", split: str = "all", test_fraction: float | None = None,
    test_seed: int | None = None,
) -> dict[str, Any]:
    """Metrics of a model on data folders as one JSON-ready dict (``steel-train evaluate``).

    ``.onnx`` files run through ``steel_edge.model`` (onnxruntime, the contract's tuned
    post-processing); ``.keras`` files and run folders through Keras with the run's ``postprocess.json``.
    ``split="test"`` (seg) scores only the frames a run's test split keeps apart: ``data.test_fraction`` and
    ``data.test_seed`` of the run folder's config, else of the default seg config, unless given here.
    """
    from steel_edge.postprocess import PostprocessParams
    from steel_train.config import ModelConfig, load_train_config
    from steel_train.pipeline import ClsRecord, cls_arrays
    from steel_train.records import baseline_label

    folders = [Path(data)] if isinstance(data, str | Path) else [Path(d) for d in data]
    if not folders:
        raise ValueError("no --data folder to evaluate on")
    model_file, run, params = _resolve(Path(model_path))
    names: list[str] | None = run.get("class_names")
    seg: SegPredictor | None = None
    if model_file.suffix == ".onnx":
        from steel_edge.model import load_model

        edge_model = load_model(model_file)
        contract = edge_model.contract
        kind: str = contract.kind if contract.architecture != "steel_baseline" else "baseline"
        params = contract.postprocess
        names = [str(n) for n in contract.class_names]
        size = (contract.input.height, contract.input.width)
        if kind == "seg":
            seg = OnnxSeg(edge_model)

        def classify(x: np.ndarray) -> np.ndarray:
            return np.asarray(edge_model.predict_cls(x[..., 0].astype(np.uint8)))
    else:
        import keras

        from steel_train import losses  # noqa: F401  (registers the custom loss for loading)

        keras_model = keras.models.load_model(model_file, compile=False)
        kind = run.get("model_kind") or {"steel_seg": "seg", "steel_cls": "cls"}.get(keras_model.name, "baseline")
        size = tuple(keras_model.input_shape[1:3])
        if kind == "seg":
            seg = KerasSeg(keras_model)

        def classify(x: np.ndarray) -> np.ndarray:
            return np.asarray(keras_model.predict(x, batch_size=64, verbose=0))

    if split not in ("all", "test"):
        raise ValueError(f"split must be all or test, not {split!r}")
    if split == "test" and seg is None:
        raise ValueError("--split test is for seg models (cls models: steel-train cv)")
    data_label = str(folders[0]) if len(folders) == 1 else [str(f) for f in folders]
    result: dict[str, Any] = {"model": str(model_path), "data": data_label, "model_kind": kind, "split": split}
    if seg is not None:
        loaded = []
        for folder in folders:
            if detect_layout(folder) != "severstal":
                raise ValueError(f"{folder}: a seg model needs a Severstal-layout folder")
            loaded.append((folder.name, load_severstal(folder, on_error=on_error).images))
        if split == "test":
            run_cfg = Path(model_path) / "config.yaml"
            cfg = load_train_config("seg", run_cfg if run_cfg.is_file() else None)
            fraction = cfg.data.test_fraction if test_fraction is None else test_fraction
            seed = cfg.data.test_seed if test_seed is None else test_seed
            if not fraction:
                raise ValueError("--split test: the config keeps no test set (data.test_fraction is 0); "
                                 "pass --test-fraction")
            items: list[SeverstalImage] = test_items(loaded, fraction, seed)
            result["test_split"] = {"fraction": fraction, "seed": seed}
        else:
            items = [item for _, folder_items in loaded for item in folder_items]
        metrics, per_image = score_frames(seg, items, params or PostprocessParams())
        result.update(metrics)
        if out is not None:
            from steel_train import plots

            plots.worst_overlays(worst_panels(per_image), out, title=f"worst images, Dice {metrics['dice_mean']:.4f}")
        return result
    if len(folders) > 1:
        raise ValueError("cls and baseline models are evaluated on one --data folder")
    data = folders[0]
    if kind == "cls":
        lds = load_labelled(data, on_error=on_error)
        names = names or list(lds.classes)
        records = [ClsRecord(i.path, names.index(i.label)) for i in lds.items]
    else:
        sds = load_severstal(data, on_error=on_error)
        names = ["1", "2", "3", "4"]
        records = [ClsRecord(i.path, baseline_label(dict(i.rles))) for i in sds.images if i.classes]
    x, y = cls_arrays(records, ModelConfig(input_height=size[0], input_width=size[1]))
    pred = np.argmax(classify(x), axis=1)
    result.update(classification_report(y, pred, names))
    if out is not None:
        from steel_train import plots

        plots.confusion_plot(np.array(result["confusion_matrix"]), names, out,
                             title=f"{kind}: accuracy {result['accuracy']:.4f} on {data}")
    return result
