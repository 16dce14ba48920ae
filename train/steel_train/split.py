"""Deterministic train/validation split by image, stratified by each image's label (class set)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


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
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    train: list[int] = []
    val: list[int] = []
    for key in sorted(groups, key=repr):
        members = groups[key]
        # Each group draws from its own stream, so adding a data folder leaves the other folders'
        # validation images where they were: experiments with and without it stay comparable.
        stream = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
        rng = np.random.default_rng([seed, stream])
        order = [members[j] for j in rng.permutation(len(members))]
        n_val = round(val_fraction * len(order)) if len(order) > 1 else 0
        n_val = min(n_val, len(order) - 1)
        val.extend(order[:n_val])
        train.extend(order[n_val:])
    return sorted(train), sorted(val)
