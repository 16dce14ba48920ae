"""Metrics the steel-inspection field uses, in pure numpy so train, export and edge share one version.

- Kaggle Dice: mean over every (image, class) pair of 2|A∩B| / (|A|+|B|), with Dice = 1 when both masks
  are empty. One stray pixel on an empty pair scores 0, which is why gating and minimum areas matter.
- Image-level per-class precision and recall (is class k present in the image?).
- Classification accuracy and the confusion matrix.

Segmentation scores accumulate image by image, so a data set never has to sit in memory at full size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


def dice(pred: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """Dice of two binary masks (non-zero = set); 1.0 when both are empty."""
    p = np.asarray(pred) != 0
    t = np.asarray(true) != 0
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def dice_per_class(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Dice for each class of one image: ``pred`` and ``true`` are (C, H, W); returns (C,) floats."""
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"expected two (C, H, W) arrays of one shape, got {pred.shape} and {true.shape}")
    p = pred.reshape(pred.shape[0], -1) != 0
    t = true.reshape(true.shape[0], -1) != 0
    inter = np.logical_and(p, t).sum(axis=1)
    total = p.sum(axis=1) + t.sum(axis=1)
    out = np.ones(pred.shape[0], dtype=np.float64)
    nonempty = total > 0
    out[nonempty] = 2.0 * inter[nonempty] / total[nonempty]
    return out


@dataclass
class SegmentationScores:
    """Accumulates Kaggle Dice and image-level presence counts over (image, class) pairs."""

    num_classes: int = 4
    class_ids: Sequence[int] = (1, 2, 3, 4)
    _dice: list[np.ndarray] = field(default_factory=list)
    _pred_present: list[np.ndarray] = field(default_factory=list)
    _true_present: list[np.ndarray] = field(default_factory=list)

    def update(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Add one image's (C, H, W) masks; returns that image's per-class Dice."""
        if pred.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class masks, got {pred.shape[0]}")
        scores = dice_per_class(pred, true)
        self._dice.append(scores)
        self._pred_present.append(np.asarray(pred.reshape(self.num_classes, -1).any(axis=1)))
        self._true_present.append(np.asarray(true.reshape(self.num_classes, -1).any(axis=1)))
        return scores

    @property
    def images(self) -> int:
        return len(self._dice)

    def per_image(self) -> np.ndarray:
        """(N, C) Dice for every (image, class) pair seen so far."""
        return np.array(self._dice).reshape(-1, self.num_classes)

    def result(self) -> dict[str, object]:
        """Kaggle Dice, per-class Dice, and image-level per-class precision/recall/support as a dict."""
        scores = self.per_image()
        pred = np.array(self._pred_present, dtype=bool).reshape(-1, self.num_classes)
        true = np.array(self._true_present, dtype=bool).reshape(-1, self.num_classes)
        tp = (pred & true).sum(axis=0)
        fp = (pred & ~true).sum(axis=0)
        fn = (~pred & true).sum(axis=0)
        keys = [str(c) for c in self.class_ids]
        empty = ~true
        return {
            "images": self.images,
            "dice_mean": float(scores.mean()) if scores.size else float("nan"),
            "dice_per_class": {k: float(scores[:, i].mean()) if scores.size else float("nan")
                               for i, k in enumerate(keys)},
            "precision_per_class": {k: _ratio(tp[i], tp[i] + fp[i]) for i, k in enumerate(keys)},
            "recall_per_class": {k: _ratio(tp[i], tp[i] + fn[i]) for i, k in enumerate(keys)},
            "support_per_class": {k: int(true[:, i].sum()) for i, k in enumerate(keys)},
            # The two halves of Kaggle Dice: how well the masks fit where there is a defect, and how often
            # an empty (image, class) pair is left empty (each one not left empty scores 0).
            "dice_defective_pairs": _mean_or_none(scores[true]),
            "dice_defective_per_class": {k: _mean_or_none(scores[true[:, i], i]) for i, k in enumerate(keys)},
            "empty_pairs_predicted_empty": _ratio((empty & ~pred).sum(), empty.sum()),
            "empty_pairs_predicted_empty_per_class": {k: _ratio((empty[:, i] & ~pred[:, i]).sum(), empty[:, i].sum())
                                                      for i, k in enumerate(keys)},
        }


def _ratio(num: int | np.integer, den: int | np.integer) -> float | None:
    """A precision or recall; None where it is undefined (nothing predicted / nothing to find)."""
    return float(num) / float(den) if den else None


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def all_empty_dice(true_masks_present: np.ndarray) -> float:
    """Kaggle Dice of predicting nothing: the share of (image, class) pairs that are empty.

    ``true_masks_present`` is (N, C) booleans: does image n hold class c.
    """
    present = np.asarray(true_masks_present, dtype=bool)
    return float(1.0 - present.mean()) if present.size else float("nan")


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted ones."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"label arrays differ in length: {t.size} vs {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"label arrays differ in length: {t.size} vs {p.size}")
    return float((t == p).mean()) if t.size else float("nan")


def classification_report(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, class_names: Sequence[str]
) -> dict[str, object]:
    """Accuracy, confusion matrix and per-class precision/recall for a whole-image classifier."""
    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm)
    return {
        "images": int(cm.sum()),
        "accuracy": accuracy(y_true, y_pred),
        "classes": list(class_names),
        "confusion_matrix": cm.tolist(),
        "precision_per_class": {name: _ratio(tp[i], cm[:, i].sum()) for i, name in enumerate(class_names)},
        "recall_per_class": {name: _ratio(tp[i], cm[i, :].sum()) for i, name in enumerate(class_names)},
    }
