"""The tuner's fast low-resolution Dice must equal what the edge's post-processing then scores."""

from __future__ import annotations

import numpy as np
import pytest

from steel_edge.metrics import dice
from steel_edge.postprocess import PostprocessParams, postprocess
from steel_train.tune import SKIP_CAP, skip_thresholds, starting_values, tune_postprocess, with_skip


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    n, s = 12, 4
    probs = (rng.random((n, 4, 64, 400)) * 0.3).astype(np.float32)
    presence = rng.random((n, 4)).astype(np.float32)
    truths = []
    for i in range(n):
        true = np.zeros((4, 256, 1600), np.uint8)
        for c in range(4):
            if rng.random() < 0.5:
                y, x = int(rng.integers(0, 200)), int(rng.integers(0, 1500))
                hh, ww = int(rng.integers(8, 50)), int(rng.integers(8, 90))
                true[c, y:y + hh, x:x + ww] = 1
                probs[i, c, y // s:(y + hh) // s, x // s:(x + ww) // s] = rng.uniform(0.4, 0.95)
                presence[i, c] = rng.uniform(0.3, 1.0)
            if rng.random() < 0.3:  # a false-positive blob
                y, x = int(rng.integers(0, 60)), int(rng.integers(0, 390))
                probs[i, c, y:y + 3, x:x + 5] = rng.uniform(0.4, 0.9)
        truths.append(true)
    return probs, presence, truths


def test_tuned_dice_matches_postprocess_path() -> None:
    probs, presence, truths = _case(0)
    start = PostprocessParams()
    defaults = starting_values(start)
    chosen, report = tune_postprocess(probs, presence, truths, 4, defaults)
    params = PostprocessParams(**chosen)
    for c, choice in enumerate(report):
        scores = [dice(postprocess(probs[n], presence[n], params).masks[c], truths[n][c]) for n in range(len(truths))]
        assert abs(np.mean(scores) - choice.dice) < 1e-5
        before = [dice(postprocess(probs[n], presence[n], start).masks[c], truths[n][c]) for n in range(len(truths))]
        assert abs(np.mean(before) - choice.dice_default) < 1e-5
        assert choice.dice >= choice.dice_default


def test_tune_keys_limit_the_search() -> None:
    """postprocess.tune_keys: only the named parameters move; the rest keep their starting values."""
    probs, presence, truths = _case(2)
    start = PostprocessParams()
    defaults = starting_values(start)
    full, full_report = tune_postprocess(probs, presence, truths, 4, defaults)
    moved = {k for k in defaults if full[k] != defaults[k]}
    assert {"presence_threshold", "min_area"} & moved  # the full search moves a gate on this case
    chosen, report = tune_postprocess(probs, presence, truths, 4, defaults, keys=("pixel_threshold", "min_area"))
    assert chosen["presence_threshold"] == defaults["presence_threshold"]
    assert chosen["min_component"] == defaults["min_component"]
    params = PostprocessParams(**chosen)
    for c, choice in enumerate(report):
        scores = [dice(postprocess(probs[n], presence[n], params).masks[c], truths[n][c]) for n in range(len(truths))]
        assert abs(np.mean(scores) - choice.dice) < 1e-5
        assert choice.dice_default <= choice.dice <= full_report[c].dice + 1e-9  # a subset of the full grid
    for bad in ((), ("min_area", "gate")):
        with pytest.raises(ValueError, match="non-empty subset"):
            tune_postprocess(probs, presence, truths, 4, defaults, keys=bad)


def test_gain_over_all_empty_interval() -> None:
    from steel_train.evaluate import gain_over_all_empty

    rng = np.random.default_rng(1)
    empty = rng.choice([0.5, 0.75, 1.0], size=40)
    clear = gain_over_all_empty(empty + 0.05 + rng.normal(0, 0.01, 40), empty)
    assert clear["mean"] == pytest.approx(0.05, abs=0.01) and clear["ci95"][0] > 0.03
    assert clear["share_of_resamples_above_zero"] == 1.0 and clear["images"] == 40
    noisy = gain_over_all_empty(empty + 0.02 + rng.normal(0, 0.2, 40), empty)
    low, high = noisy["ci95"]
    assert low < 0 < high and low < noisy["mean"] < high  # a small gain on noisy images is not clear of zero
    assert gain_over_all_empty(empty + 0.02, empty, seed=3) == gain_over_all_empty(empty + 0.02, empty, seed=3)
    with pytest.raises(ValueError, match="no images"):
        gain_over_all_empty([], [])


def test_rank_auc_is_the_mann_whitney_share_with_ties_halved() -> None:
    from steel_train.evaluate import rank_auc

    assert rank_auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == 1.0
    assert rank_auc(np.array([0.4, 0.3, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # pos 0.9 beats both negatives, pos 0.1 beats neither: 2 of 4 pairs
    assert rank_auc(np.array([0.9, 0.2, 0.3, 0.1]), np.array([1, 0, 0, 1])) == 0.5
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert rank_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0])) == 0.75
    assert rank_auc(np.array([0.1, 0.2]), np.array([0, 0])) is None  # no positives: undefined, not 0.5


def _image_pr(probs: np.ndarray, presence: np.ndarray, truths: list[np.ndarray], params: PostprocessParams,
              c: int) -> tuple[float | None, float | None]:
    called = np.array([postprocess(probs[n], presence[n], params).masks[c].any() for n in range(len(truths))])
    has = np.array([t[c].any() for t in truths])
    tp = int((called & has).sum())
    return (tp / called.sum() if called.any() else None), (tp / has.sum() if has.any() else None)


def test_precision_recall_floors_call_a_class_that_dice_alone_would_never_call() -> None:
    """postprocess.tune_min_precision / tune_min_recall: the best Dice among settings meeting both floors."""
    n, s = 10, 4
    probs = np.zeros((n, 4, 64, 400), np.float32)
    presence = np.full((n, 4), 0.6, np.float32)  # a presence threshold of 0.7 calls nothing
    truths = []
    for i in range(n):
        true = np.zeros((4, 256, 1600), np.uint8)
        if i < 4:  # class 0 on 4 images, found only as a rough blob: mask Dice 0.22
            true[0, 100:140, 200:400] = 1
        if i < 6:  # ... and two false calls no rule can tell from the true ones
            probs[i, 0, 20:40, 40:240] = 0.8
        truths.append(true)
    defaults = starting_values(PostprocessParams())
    plain, plain_report = tune_postprocess(probs, presence, truths, s, defaults)
    assert _image_pr(probs, presence, truths, PostprocessParams(**plain), 0)[1] == 0.0  # Dice alone: never called
    assert plain_report[0].recall == 0.0
    chosen, report = tune_postprocess(probs, presence, truths, s, defaults, min_precision=0.6, min_recall=0.6)
    params = PostprocessParams(**chosen)
    precision, recall = _image_pr(probs, presence, truths, params, 0)
    assert report[0].floors_met and precision is not None and recall is not None
    assert precision >= 0.6 and recall >= 0.6
    assert (report[0].precision, report[0].recall) == pytest.approx((precision, recall))
    scores = [dice(postprocess(probs[k], presence[k], params).masks[0], truths[k][0]) for k in range(n)]
    assert report[0].dice == pytest.approx(np.mean(scores), abs=1e-5)
    assert report[0].dice < plain_report[0].dice  # the floors cost Dice here, and the report says how much


def test_floors_that_cannot_be_met_are_reported_not_hidden() -> None:
    probs, presence, truths = _case(3)
    defaults = starting_values(PostprocessParams())
    _, report = tune_postprocess(probs, presence, truths, 4, defaults, min_precision=1.0, min_recall=1.0)
    for choice in report:
        if not choice.floors_met:
            assert (choice.precision or 0.0) < 1.0 or (choice.recall or 0.0) < 1.0


def test_skip_values_keep_every_correct_call_on_the_tuning_frames() -> None:
    """A class with a hard-gate threshold keeps it as its skip value; a class called on its masks alone (threshold
    0) gets half its lowest presence among its correct calls, at most SKIP_CAP, or SKIP_CAP with none."""
    presence = np.array([[0.9, 0.2, 0.1, 0.0], [0.1, 0.04, 0.8, 0.0], [0.6, 0.5, 0.7, 0.0]])
    found = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0]], bool)
    present = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]], bool)
    values = skip_thresholds(presence, found, present, (0.5, 0.0, 0.7, 0.0))
    assert values == (0.5, 0.02, 0.7, SKIP_CAP)
    assert skip_thresholds(presence, found, present, (0.5, 0.0, 0.7, 0.3))[1:] == (0.02, 0.7, 0.3)
    # with_skip on real predictions: no correct call of the tuned rules is lost to the skip.
    probs, pres, truths = _case(3)
    params = PostprocessParams(presence_threshold=(0.5, 0.0, 0.6, 0.0), min_area=(0, 0, 0, 0))
    present = np.array([t.reshape(4, -1).any(axis=1) for t in truths])
    classes = [tuple(int(c) + 1 for c in np.flatnonzero(row)) for row in present]
    skipping = with_skip(params, probs, pres, classes, (256, 1600))
    assert skipping.skip_below is not None and skipping.skip_below[0] == 0.5 and skipping.skip_below[2] == 0.6
    for n in range(len(probs)):
        before = postprocess(probs[n], pres[n], params).classes
        after = postprocess(probs[n], pres[n], skipping).classes
        correct = {c for c in before if present[n, c - 1]}
        assert correct <= set(after)
    assert with_skip(params.model_copy(update={"gate": "soft"}), probs, pres, classes, (256, 1600)).skip_below is None
