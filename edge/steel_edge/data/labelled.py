"""The labelled-image layout for whole-image classification (e.g. NEU's six steel surface classes).

Two forms: a ``labels.csv`` with ``filename,class`` (filenames relative to the folder or to one image
sub-folder such as ``IMAGES/``), or one sub-folder per class. Class indices are the sorted class names,
so the same folder always gives the same index for a class.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steel_edge.data.errors import Issue, IssueLog, OnError
from steel_edge.data.imageio import ImageReadError, image_size, is_image_file

LABELS_CSV = "labels.csv"
# Where a labels.csv's bare file names may live besides the folder itself.
_IMAGE_SUBDIRS = ("images", "IMAGES", "Images", "train_images", "imgs")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


@dataclass(frozen=True)
class LabelledDataset:
    root: Path
    form: Literal["csv", "folders"]
    classes: tuple[str, ...]
    items: tuple[LabelledImage, ...]
    issues: tuple[Issue, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def index(self, label: str) -> int:
        return self.classes.index(label)

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for item in self.items:
            counts[item.label] += 1
        return counts


def _check_image(path: Path, issues: IssueLog, line: int | None, csv_path: Path | None) -> bool:
    try:
        image_size(path)
    except ImageReadError as exc:
        where = csv_path if csv_path is not None else path
        issues.report(where, line, f"{path.name}: {exc.reason}" if csv_path else exc.reason)
        return False
    return True


def _from_csv(root: Path, issues: IssueLog, check_images: bool) -> list[LabelledImage]:
    csv_path = root / LABELS_CSV
    search = [root] + [root / d for d in _IMAGE_SUBDIRS if (root / d).is_dir()]
    items: list[LabelledImage] = []
    seen: dict[str, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["filename", "class"]:
            issues.fatal(csv_path, 1, f"header must start with 'filename,class', got {','.join(header)!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                issues.report(csv_path, line, "expected a file name and a class")
                continue
            name, label = row[0].strip(), row[1].strip()
            if name in seen:
                issues.report(csv_path, line, f"duplicate file {name!r} (first at line {seen[name]})")
                continue
            path = next((d / name for d in search if (d / name).is_file()), None)
            if path is None:
                issues.report(csv_path, line, f"image {name!r} not found in {root}")
                continue
            if check_images and not _check_image(path, issues, line, csv_path):
                continue
            seen[name] = line
            items.append(LabelledImage(path, label))
    return items


def _from_folders(root: Path, issues: IssueLog, check_images: bool) -> list[LabelledImage]:
    items: list[LabelledImage] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in class_dir.iterdir() if is_image_file(p)):
            if check_images and not _check_image(path, issues, None, None):
                continue
            items.append(LabelledImage(path, class_dir.name))
    return items


def load_labelled(root: Path | str, on_error: OnError = "raise", check_images: bool = True) -> LabelledDataset:
    """Load a labelled-image folder; ``labels.csv`` wins over class sub-folders when both exist."""
    root = Path(root)
    issues = IssueLog(on_error)
    if not root.is_dir():
        issues.fatal(root, None, "data folder not found")
    if (root / LABELS_CSV).is_file():
        form: Literal["csv", "folders"] = "csv"
        items = _from_csv(root, issues, check_images)
    else:
        form = "folders"
        items = _from_folders(root, issues, check_images)
    if not items:
        issues.fatal(root, None, f"no labelled images found (neither {LABELS_CSV} nor class sub-folders)")
    classes = tuple(sorted({item.label for item in items}))
    return LabelledDataset(root, form, classes, tuple(items), tuple(issues.issues))


def detect_layout(root: Path | str) -> Literal["severstal", "labelled"]:
    """Which layout a data folder holds: ``train.csv`` means Severstal, anything else labelled images."""
    root = Path(root)
    if (root / "train.csv").is_file():
        return "severstal"
    if (root / LABELS_CSV).is_file() or (root.is_dir() and any(p.is_dir() for p in root.iterdir())):
        return "labelled"
    raise FileNotFoundError(f"{root}: no train.csv, {LABELS_CSV} or class sub-folders")
