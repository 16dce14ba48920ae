"""Deterministic train/validation split by image, stratified by each image's label (class set)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def _stream(key: Hashable) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")


def _group_orders(keys: Sequence[Hashable], seed: int) -> list[tuple[Hashable, list[int]]]:
    """Each stratum's members in a seeded random order, strata in a fixed order.

    Each group draws from its own stream, so adding a data folder leaves the other folders' validation
    images where they were: experiments with and without it stay comparable.
    """
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    orders = []
    for key in sorted(groups, key=repr):
        members = groups[key]
        rng = np.random.default_rng([seed, _stream(key)])
        orders.append((key, [members[j] for j in rng.permutation(len(members))]))
    return orders


def stratified_split(
    keys: Sequence[Hashable], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, validation) with about ``val_fraction`` of every key group in validation.

    ``keys`` is one stratum per image: the class set for Severstal images (``(3,)``, ``(1, 3)``, ``()``),
    the class name for labelled images. A group of one image stays in training. The same keys, fraction
    and seed always give the same split, whatever else changed in the process.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train: list[int] = []
    val: list[int] = []
    for _, order in _group_orders(keys, seed):
        n_val = round(val_fraction * len(order)) if len(order) > 1 else 0
        n_val = min(n_val, len(order) - 1)
        val.extend(order[:n_val])
        train.extend(order[n_val:])
    return sorted(train), sorted(val)


def kfold_split(keys: Sequence[Hashable], folds: int, fold: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation) for fold ``fold`` of ``folds``, stratified like ``stratified_split``.

    Every image is in exactly one fold's validation set, so running all folds gives out-of-fold
    predictions for every image: the honest way to tune and measure when labelled data is scarce.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}")
    train: list[int] = []
    val: list[int] = []
    for key, order in _group_orders(keys, seed):
        # Each group starts its round-robin at a fold of its own (from its key, not from the groups
        # before it), so small groups spread over the folds and adding a folder moves no other folder's.
        offset = (_stream(key) + seed) % folds
        for pos, index in enumerate(order):
            (val if (pos + offset) % folds == fold else train).append(index)
    return sorted(train), sorted(val)


def test_split(
    folders: Sequence[str], strata: Sequence[Hashable], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (kept, test): ``fraction`` of each folder's images, stratified by ``strata`` (the class set).

    ``folders`` holds each image's data folder *name* (not its path), so the same images are the test set
    wherever the data lives and whichever other folders a run adds. ``fraction`` 0 keeps everything.
    """
    if fraction == 0:
        return list(range(len(strata))), []
    return stratified_split([("test", f, s) for f, s in zip(folders, strata, strict=True)], fraction, seed)
