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
from steel_edge.data.severstal import SeverstalImage, load_severstal
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
            if groups is not None:
                group_scores, group_present = by_group.setdefault(groups[len(per_image)],
                                                                  (SegmentationScores(), []))
                group_scores.update(pred, true)
                group_present.append(has)
            per_image.append((float(dice.mean()), item, pred))
    metrics = scores.result()
    metrics["dice_all_empty"] = all_empty_dice(np.array(present)) if present else float("nan")
    if groups is not None:
        metrics["per_group"] = {
            name: {**{k: v for k, v in s.result().items() if k in ("images", "dice_mean", "dice_per_class")},
                   "dice_all_empty": all_empty_dice(np.array(p))}
            for name, (s, p) in by_group.items()
        }
    return metrics, per_image


def worst_panels(per_image: list[tuple[float, SeverstalImage, np.ndarray]]) -> list[Any]:
    ranked = sorted(per_image, key=lambda t: t[0])[:WORST_PANELS]
    return [(f"{item.image_id}  Dice {d:.3f}  true classes {list(item.classes)}", item.read(), item.masks(), pred)
            for d, item, pred in ranked]


def finish_seg_run(model: Any, val_src: Any, cfg: Any, out: Path, data_names: Sequence[str]) -> dict[str, Any]:
    """Tune post-processing on the validation split, then score it through the edge's code path."""
    from steel_edge.postprocess import PostprocessParams
    from steel_train import plots
    from steel_train.tune import starting_values, tune_postprocess

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
                                          start, soft_gate=defaults.gate == "soft", keys=defaults.tune_keys)
        tuning = [vars(r) for r in report]
    params = PostprocessParams(gate=defaults.gate, **chosen)
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
    return metrics


def finish_cls_run(model: Any, val_xy: tuple[np.ndarray, np.ndarray], names: Sequence[str], out: Path,
                   kind: str) -> dict[str, Any]:
    from steel_train import plots

    x, y = val_xy
    pred = np.argmax(model.predict(x, batch_size=64, verbose=0), axis=1)
    report = classification_report(y, pred, list(names))
    report["split"] = "validation"
    plots.confusion_plot(np.array(report["confusion_matrix"]), names, out / "plots" / "confusion.png",
                         title=f"{kind}: validation accuracy {report['accuracy']:.4f} ({len(y)} images)")
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


def evaluate_path(
    model_path: Path | str, data: Path | str, out: Path | None = None, on_error: OnError = "raise"
) -> dict[str, Any]:
    """Metrics of a model on a data folder as one JSON-ready dict (``steel-train evaluate``).

    ``.onnx`` files run through ``steel_edge.model`` (onnxruntime, the contract's tuned
    post-processing); ``.keras`` files and run folders through Keras with the run's ``postprocess.json``.
    """
    from steel_edge.postprocess import PostprocessParams
    from steel_train.config import ModelConfig
    from steel_train.fit import baseline_label
    from steel_train.oof import all_empty_per_image, gain_over_all_empty
    from steel_train.pipeline import ClsRecord, cls_arrays

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

    layout = detect_layout(data)
    result: dict[str, Any] = {"model": str(model_path), "data": str(data), "model_kind": kind}
    if seg is not None:
        if layout != "severstal":
            raise ValueError(f"{data}: a seg model needs a Severstal-layout folder")
        ds = load_severstal(data, on_error=on_error)
        metrics, per_image = score_seg(predicted_batches(seg, ds.images), params or PostprocessParams())
        result.update(metrics)
        # On a few dozen images a gain of a few hundredths over predicting nothing may be noise: say so.
        result["gain_over_all_empty"] = gain_over_all_empty(
            [dice for dice, _, _ in per_image], all_empty_per_image([item for _, item, _ in per_image]))
        if out is not None:
            from steel_train import plots

            plots.worst_overlays(worst_panels(per_image), out, title=f"worst images, Dice {metrics['dice_mean']:.4f}")
        return result
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
