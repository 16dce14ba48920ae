from __future__ import annotations

import numpy as np
import pytest

from steel_edge.metrics import (
    SegmentationScores,
    accuracy,
    all_empty_dice,
    classification_report,
    confusion_matrix,
    dice,
    dice_per_class,
)


def test_dice_basics() -> None:
    a = np.zeros((4, 4), np.uint8)
    assert dice(a, a) == 1.0  # empty-empty counts as a perfect score
    b = a.copy()
    b[0, 0] = 1
    assert dice(b, a) == 0.0  # one false-positive pixel on an empty pair scores 0
    c = np.zeros((4, 4), np.uint8)
    c[0, :2] = 1
    assert dice(b, c) == pytest.approx(2 * 1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, np.zeros((3, 3)))


def test_kaggle_mean_over_image_class_pairs() -> None:
    scores = SegmentationScores()
    true = np.zeros((4, 8, 8), np.uint8)
    true[2, :4] = 1
    pred = np.zeros_like(true)
    pred[2, :2] = 1
    per = scores.update(pred, true)
    assert per.tolist() == [1.0, 1.0, pytest.approx(2 * 16 / 48), 1.0]
    pred2 = np.zeros_like(true)
    pred2[0, 0, 0] = 1  # false positive on class 1, misses nothing else
    scores.update(pred2, np.zeros_like(true))
    r = scores.result()
    assert r["images"] == 2
    assert r["dice_mean"] == pytest.approx((3 + 2 / 3 + 3) / 8)
    assert r["dice_per_class"] == {"1": 0.5, "2": 1.0, "3": pytest.approx(((2 / 3) + 1) / 2), "4": 1.0}
    assert r["precision_per_class"]["1"] == 0.0 and r["recall_per_class"]["1"] is None
    assert r["precision_per_class"]["3"] == 1.0 and r["recall_per_class"]["3"] == 1.0
    assert r["support_per_class"] == {"1": 0, "2": 0, "3": 1, "4": 0}
    # The protocol's two halves: mask quality where a defect is, and empty pairs left empty (7 empty pairs, 1 hit)
    assert r["dice_defective_pairs"] == pytest.approx(2 / 3)
    assert r["dice_defective_per_class"] == {"1": None, "2": None, "3": pytest.approx(2 / 3), "4": None}
    assert r["empty_pairs_predicted_empty"] == pytest.approx(6 / 7)
    assert r["empty_pairs_predicted_empty_per_class"]["1"] == 0.5
    assert r["empty_pairs_predicted_empty_per_class"]["2"] == 1.0


def test_dice_per_class_matches_scalar() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((4, 16, 16)) > 0.7
    t = rng.random((4, 16, 16)) > 0.6
    assert dice_per_class(p, t) == pytest.approx([dice(p[i], t[i]) for i in range(4)])


def test_all_empty() -> None:
    present = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool)
    assert all_empty_dice(present) == pytest.approx(7 / 8)


def test_classification() -> None:
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 2, 0]
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    rep = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert rep["precision_per_class"] == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert rep["recall_per_class"]["c"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([3], [0], 3)
