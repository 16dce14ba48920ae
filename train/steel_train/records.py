"""Training records from the data folders: what ``fit``, ``evaluate``, ``oof`` and ``retune`` all read.

Its own module so that those four import it, not each other (no import cycles: pyproject's import-linter
contracts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from steel_edge.data.errors import OnError
from steel_edge.data.labelled import detect_layout, load_labelled
from steel_edge.data.rle import area
from steel_edge.data.severstal import load_severstal
from steel_train.pipeline import ClsRecord, SegRecord

log = logging.getLogger("steel_train.fit")


def load_seg_records(folders: Sequence[Path], on_error: OnError = "raise") -> list[SegRecord]:
    records: list[SegRecord] = []
    for source, folder in enumerate(folders):
        if detect_layout(folder) != "severstal":
            raise ValueError(f"{folder}: seg and baseline models need the Severstal layout (train.csv)")
        ds = load_severstal(folder, on_error=on_error)
        for issue in ds.issues:
            log.warning("skipped %s", issue)
        records += [SegRecord(item.path, dict(item.rles), source) for item in ds.images]
    return records


def load_cls_records(folders: Sequence[Path], on_error: OnError = "raise") -> tuple[list[ClsRecord], tuple[str, ...]]:
    datasets = []
    for folder in folders:
        if detect_layout(folder) != "labelled":
            raise ValueError(f"{folder}: the cls model needs the labelled-image layout (labels.csv or class folders)")
        datasets.append(load_labelled(folder, on_error=on_error))
    classes = tuple(sorted({c for ds in datasets for c in ds.classes}))
    records = [ClsRecord(item.path, classes.index(item.label), source)
               for source, ds in enumerate(datasets) for item in ds.items]
    return records, classes


def baseline_label(rles: dict[int, str]) -> int:
    """The original notebook's target: the image's defect class (the largest one when there are several)."""
    return max(rles, key=lambda c: area(rles[c])) - 1
