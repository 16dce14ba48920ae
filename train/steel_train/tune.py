"""Per-class post-processing tuning on held-out predictions, maximising Kaggle Dice.

Kaggle Dice is a mean over (image, class) pairs, so each class's parameters can be tuned on their own.
For one class the search is exact yet cheap: the edge finds components at the model's resolution and
an integer stride ``s`` makes every low-resolution pixel an ``s x s`` block of the frame. A component's
frame area is its low-resolution area times ``s^2``, and its overlap with the true mask is the sum of
true-pixel counts over its blocks. Components are found once per (image, pixel threshold); every
(presence threshold, min component, min area) combination is then a few vector ops.

Tune on predictions for images the model did not train on: tuned on its own training images a model
is over-confident and the tuned values move held-out Dice at random.

Kaggle Dice alone under-rates finding a rare defect: a found defect with a rough outline earns its mask Dice
(often 0.2-0.5), one false call costs a whole pair, so the Dice optimum for a rare class is often to call it
never. A plant needs the defect found. ``min_precision`` / ``min_recall`` are floors on the image-level
precision and recall of each class on the tuning images: the Dice optimum is taken among the settings that
meet both; where none does, the setting closest to meeting them (the largest smaller margin), then Dice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steel_edge.postprocess import PostprocessParams, binarize, find_components, keep_components, masks_only
from steel_train.config import TUNED_KEYS

PRESENCE_GRID = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PIXEL_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
MIN_COMPONENT_GRID = (0, 50, 150, 300, 600, 1000)
MIN_AREA_GRID = (0, 300, 600, 900, 1200, 2000, 3000, 5000)


def starting_values(defaults: Any) -> dict[str, list[float]]:
    """The per-class lists tuning starts from, read off a config's ``postprocess`` section."""
    return {key: list(getattr(defaults, key)) for key in TUNED_KEYS}


@dataclass(frozen=True)
class ClassChoice:
    presence_threshold: float
    pixel_threshold: float
    min_component: int
    min_area: int
    dice: float           # mean Dice of this class over the tuning images with these values
    dice_default: float   # ... with the starting values, for comparison
    precision: float | None = None  # image-level, on the tuning images, with these values (None: nothing called)
    recall: float | None = None     # (None: the class is absent from the tuning images)
    floors_met: bool = True         # min_precision and min_recall both met on the tuning images


def block_counts(true_mask: np.ndarray, stride: int) -> np.ndarray:
    """True-pixel count of every ``stride x stride`` block: (H/s, W/s) int32."""
    h, w = true_mask.shape
    m = (true_mask != 0).astype(np.int32)
    return m.reshape(h // stride, stride, w // stride, stride).sum(axis=(1, 3))


def _class_table(
    probs: np.ndarray, presence: np.ndarray | None, counts: list[np.ndarray], stride: int,
    pixel_grid: Sequence[float], presence_grid: Sequence[float], mc_grid: Sequence[int], ma_grid: Sequence[int],
    soft: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of every image for every grid point: (pixel, presence, mc, ma, n) float32 for one class, and
    whether the class is called on the image (some component survives the gate and the area rules), bool.

    The rules are the edge's own (``binarize``, ``find_components``, ``keep_components``), so the
    tuner cannot drift from what the daemon does.
    """
    n_img = probs.shape[0]
    mcs = np.asarray(mc_grid, np.int64)[:, None]
    mas = np.asarray(ma_grid, np.int64)[None, :]
    out = np.empty((len(pixel_grid), len(presence_grid), len(mc_grid), len(ma_grid), n_img), np.float32)
    called = np.empty(out.shape, bool)
    for n in range(n_img):
        p = probs[n] * np.float32(presence[n]) if (soft and presence is not None) else probs[n]
        true_total = int(counts[n].sum())
        gate = np.ones(len(presence_grid), bool) if presence is None else presence[n] >= np.asarray(presence_grid)
        empty = 1.0 if true_total == 0 else 0.0
        for i, t in enumerate(pixel_grid):
            comps = find_components(binarize(p, t), (stride, stride))
            survive = keep_components(comps.areas, mcs, mas).astype(np.float64)  # (mc, ma, k)
            area = survive @ comps.areas.astype(np.float64)
            inter = survive @ comps.sums(counts[n])
            denom = area + true_total
            dice = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)  # (mc, ma)
            out[i, :, :, :, n] = np.where(gate[:, None, None], dice[None], empty)
            called[i, :, :, :, n] = gate[:, None, None] & (area > 0)[None]
    return out, called


def tune_postprocess(
    probs: np.ndarray,
    presence: np.ndarray | None,
    true_masks: Iterable[np.ndarray],
    stride: int,
    defaults: Mapping[str, Sequence[float]],
    soft_gate: bool = False,
    keys: Sequence[str] = TUNED_KEYS,
    min_precision: float = 0.0,
    min_recall: float = 0.0,
) -> tuple[dict[str, list[float]], list[ClassChoice]]:
    """Choose per-class parameters on (N, 4, h, w) probabilities and (N, 4) presence scores.

    ``true_masks`` are (4, H, W) frame-resolution masks with H = h * stride. ``defaults`` holds the
    starting per-class lists (keys ``presence_threshold``, ``pixel_threshold``, ``min_component``,
    ``min_area``); a class keeps its defaults unless the grid beats them on the tuning images.
    ``keys`` names the parameters searched; the others stay at their defaults (on a few dozen images,
    fewer free parameters tune less noise in). ``min_precision`` / ``min_recall``: floors on each class's
    image-level precision and recall on the tuning images (module docstring). Returns the chosen lists and,
    per class, the choice with its Dice before and after.
    """
    unknown = set(keys) - set(TUNED_KEYS)
    if unknown or not keys:
        raise ValueError(f"tuning keys must be a non-empty subset of {TUNED_KEYS}, got {list(keys)}")

    def grid(key: str, values: Iterable[float], default: float) -> list[Any]:
        return sorted({*values, default}) if key in keys else [default]

    n_classes = probs.shape[1]
    # Reduce each true mask to block counts as it arrives: a full-resolution (4, 256, 1600) mask per
    # validation image would need ~1.6 MB each, the int32 counts 4/stride^2 of that (6% at stride 8).
    true_counts = [[block_counts(m[c], stride) for c in range(n_classes)] for m in true_masks]
    chosen: dict[str, list[float]] = {k: list(v) for k, v in defaults.items()}
    report: list[ClassChoice] = []
    for c in range(n_classes):
        d_pixel, d_presence = float(defaults["pixel_threshold"][c]), float(defaults["presence_threshold"][c])
        d_mc, d_ma = int(defaults["min_component"][c]), int(defaults["min_area"][c])
        pixel = grid("pixel_threshold", PIXEL_GRID, d_pixel)
        pres = grid("presence_threshold", PRESENCE_GRID, d_presence)
        mcs = grid("min_component", MIN_COMPONENT_GRID, d_mc)
        mas = grid("min_area", MIN_AREA_GRID, d_ma)
        counts = [per_image[c] for per_image in true_counts]
        table, called = _class_table(probs[:, c], None if presence is None else presence[:, c], counts, stride,
                                     pixel, pres, mcs, mas, soft_gate)
        mean = table.mean(axis=-1)
        has = np.array([int(cnt.sum()) > 0 for cnt in counts])
        tp = (called & has).sum(axis=-1)
        n_called = called.sum(axis=-1)
        precision = np.where(n_called > 0, tp / np.maximum(n_called, 1), np.nan)
        recall = np.full(mean.shape, np.nan) if not has.any() else tp / has.sum()
        default_at = (pixel.index(d_pixel), pres.index(d_presence), mcs.index(d_mc), mas.index(d_ma))
        floors = (min_precision > 0 or min_recall > 0) and bool(has.any())
        if floors:
            # The smaller margin to the two floors; nothing called counts as precision 0 here.
            margin = np.minimum(np.nan_to_num(precision, nan=0.0) - min_precision, recall - min_recall)
            feasible = margin >= -1e-9
            # Where no setting meets the floors: closest to them first, then Dice (1e-6 of margin outweighs any Dice).
            score = np.where(feasible, mean, -np.inf) if feasible.any() else margin * 1e6 + mean
        else:
            score = mean
        best = tuple(int(v) for v in np.unravel_index(int(np.argmax(score)), score.shape))
        # On ties prefer the defaults: a flat optimum on few images is no reason to move.
        if score[best] <= score[default_at] + 1e-9:
            best = default_at
        i, j, k, m = best
        p_best, r_best = float(precision[best]), float(recall[best])
        met = not floors or bool((np.nan_to_num(precision[best], nan=0.0) >= min_precision - 1e-9)
                                 and recall[best] >= min_recall - 1e-9)
        choice = ClassChoice(pres[j], pixel[i], mcs[k], mas[m], float(mean[best]), float(mean[default_at]),
                             None if np.isnan(p_best) else p_best, None if np.isnan(r_best) else r_best, met)
        report.append(choice)
        chosen["presence_threshold"][c] = choice.presence_threshold
        chosen["pixel_threshold"][c] = choice.pixel_threshold
        chosen["min_component"][c] = choice.min_component
        chosen["min_area"][c] = choice.min_area
    return chosen, report


# Rule 0's value for a class whose hard gate lets every tile through (threshold 0), at most: a presence score
# this low on a tile where no other class passes its gate is taken for a clean tile.
SKIP_CAP = 0.05


def skip_thresholds(presence: np.ndarray, found: np.ndarray, present: np.ndarray,
                    presence_threshold: Sequence[float]) -> tuple[float, float, float, float]:
    """The tile-level skip rule's per-class values (``PostprocessParams.skip_below``) from tuning predictions.

    ``presence`` (N, 4) scores, ``found`` (N, 4) whether the tuned post-processing calls the class on the image,
    ``present`` (N, 4) whether the image has it. A class with a hard-gate threshold t > 0 gets t: a tile where
    every class is under its threshold reports nothing anyway, so the skip loses nothing there. A class with
    threshold 0 (called on its masks alone) gets half its lowest presence among the images where it was found
    correctly, at most ``SKIP_CAP``, so no correct call on the tuning frames is skipped, with a margin.
    """
    values = []
    for c, t in enumerate(presence_threshold):
        if t > 0:
            values.append(float(t))
            continue
        hits = presence[found[:, c] & present[:, c], c]
        values.append(float(min(SKIP_CAP, 0.5 * float(hits.min()))) if hits.size else SKIP_CAP)
    a, b, c3, d = values
    return a, b, c3, d


def with_skip(params: PostprocessParams, probs: np.ndarray, presence: np.ndarray | None,
              classes: Sequence[Sequence[int]], frame_size: tuple[int, int]) -> PostprocessParams:
    """``params`` with ``skip_below`` set from tuning predictions (``skip_thresholds``); ``classes`` are the class ids
    (1-based) each tuning image has. Unchanged without a hard gate or presence head, where the rule does not apply."""
    if presence is None or params.gate != "hard":
        return params
    n_classes = probs.shape[1]
    found = np.array([masks_only(probs[n], presence[n], params, frame_size).reshape(n_classes, -1).any(axis=1)
                      for n in range(len(probs))]).reshape(-1, n_classes)
    present = np.array([[c + 1 in have for c in range(n_classes)] for have in classes], bool).reshape(-1, n_classes)
    skip = skip_thresholds(presence, found, present, params.presence_threshold)
    return PostprocessParams.model_validate({**params.model_dump(), "skip_below": skip})


def grid_size() -> int:
    return len(list(itertools.product(PRESENCE_GRID, PIXEL_GRID, MIN_COMPONENT_GRID, MIN_AREA_GRID)))
