"""The Severstal layout: ``train.csv`` with RLE masks for classes 1-4 plus a folder of 1600x256 images.

Both CSV forms found in the wild load: the current ``ImageId,ClassId,EncodedPixels`` (one row per
(image, class) with a defect) and the legacy ``ImageId_ClassId,EncodedPixels`` (four rows per image,
empty pixels for an absent class). Every problem is reported with the file and line it comes from;
``on_error="skip"`` drops a bad row (or a bad image with all its rows) with a warning instead of
failing, but a mask is never silently wrong.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from steel_edge.data.errors import DataError, Issue, IssueLog, OnError
from steel_edge.data.imageio import ImageReadError, image_size, is_image_file, read_gray
from steel_edge.data.rle import HEIGHT, WIDTH, RLEError, decode, parse_runs

log = logging.getLogger(__name__)

NUM_CLASSES = 4
CLASS_IDS = (1, 2, 3, 4)
CURRENT_HEADER = ("ImageId", "ClassId", "EncodedPixels")
LEGACY_HEADER = ("ImageId_ClassId", "EncodedPixels")
CsvForm = Literal["current", "legacy"]


@dataclass(frozen=True)
class SeverstalImage:
    """One image and its labels: the RLE of each class present (absent classes have no key)."""

    image_id: str
    path: Path
    rles: Mapping[int, str] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(c for c, r in self.rles.items() if r))

    def masks(self, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
        """(4, H, W) uint8 masks, class k at index k-1."""
        out = np.zeros((NUM_CLASSES, *shape), dtype=np.uint8)
        for class_id, rle in self.rles.items():
            if rle:
                out[class_id - 1] = decode(rle, shape)
        return out

    def read(self) -> np.ndarray:
        """The image as (H, W) uint8 grayscale."""
        return read_gray(self.path, expect=(HEIGHT, WIDTH))


@dataclass(frozen=True)
class SeverstalDataset:
    root: Path
    csv_path: Path
    csv_form: CsvForm
    images: tuple[SeverstalImage, ...]
    issues: tuple[Issue, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> dict[int, int]:
        """Images per class (an image may count for several classes)."""
        counts = dict.fromkeys(CLASS_IDS, 0)
        for item in self.images:
            for c in item.classes:
                counts[c] += 1
        return counts

    @property
    def defect_free(self) -> int:
        return sum(1 for item in self.images if not item.classes)


def _images_dir(root: Path, images_dir: str) -> Path:
    candidate = root / images_dir
    return candidate if candidate.is_dir() else root


def _detect_form(header: list[str], csv_path: Path, issues: IssueLog) -> CsvForm:
    cells = tuple(h.strip().lstrip("\ufeff") for h in header)
    if cells == CURRENT_HEADER:
        return "current"
    if cells == LEGACY_HEADER:
        return "legacy"
    issues.fatal(
        csv_path, 1,
        f"unknown header {','.join(cells)!r}; expected {','.join(CURRENT_HEADER)!r} "
        f"or the legacy {','.join(LEGACY_HEADER)!r}",
    )


def _parse_row(row: list[str], form: CsvForm) -> tuple[str, int, str] | str:
    """One CSV row as (image_id, class_id, rle), or a message saying what is wrong with it."""
    if form == "current":
        if len(row) != 3:
            return f"expected 3 columns (ImageId,ClassId,EncodedPixels), got {len(row)}"
        image_id, class_text, rle = (c.strip() for c in row)
    else:
        if len(row) != 2:
            return f"expected 2 columns (ImageId_ClassId,EncodedPixels), got {len(row)}"
        key, rle = (c.strip() for c in row)
        image_id, sep, class_text = key.rpartition("_")
        if not sep:
            return f"ImageId_ClassId {key!r} has no '_<class>' suffix"
    if not image_id:
        return "empty ImageId"
    try:
        class_id = int(class_text)
    except ValueError:
        return f"ClassId {class_text!r} is not an integer 1-4"
    if class_id not in CLASS_IDS:
        return f"ClassId {class_id} outside 1-4"
    try:
        parse_runs(rle, (HEIGHT, WIDTH))
    except RLEError as exc:
        return f"{image_id} class {class_id}: bad EncodedPixels: {exc}"
    return image_id, class_id, rle


def load_severstal(
    root: Path | str,
    csv_name: str = "train.csv",
    images_dir: str = "train_images",
    on_error: OnError = "raise",
    check_images: bool = True,
) -> SeverstalDataset:
    """Load a Severstal-layout folder: ``root/train.csv`` and ``root/train_images/*.jpg|png``.

    Images in the folder with no row are defect-free (the current form's convention). With
    ``check_images`` every image's size is read from its header and must be 1600x256.
    """
    root = Path(root)
    csv_path = root / csv_name
    issues = IssueLog(on_error)
    if not csv_path.is_file():
        issues.fatal(csv_path, None, "label file not found")
    img_root = _images_dir(root, images_dir)
    files = {p.name: p for p in sorted(img_root.iterdir()) if is_image_file(p)} if img_root.is_dir() else {}

    labels: dict[str, dict[int, str]] = {}
    first_line: dict[str, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            issues.fatal(csv_path, 1, "empty file: no header")
        form = _detect_form(header, csv_path, issues)
        seen: dict[tuple[str, int], int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            parsed = _parse_row(row, form)
            if isinstance(parsed, str):
                issues.report(csv_path, line, parsed)
                continue
            image_id, class_id, rle = parsed
            if (image_id, class_id) in seen:
                issues.report(
                    csv_path, line,
                    f"duplicate row for image {image_id} class {class_id} (first at line {seen[image_id, class_id]})",
                )
                continue
            if image_id not in files:
                issues.report(csv_path, line, f"image {image_id} not found in {img_root}")
                continue
            seen[image_id, class_id] = line
            first_line.setdefault(image_id, line)
            per_image = labels.setdefault(image_id, {})
            if rle:
                per_image[class_id] = rle

    images = []
    for name, path in files.items():
        if check_images:
            try:
                width, height = image_size(path)
            except ImageReadError as exc:
                issues.report(path, None, exc.reason)
                continue
            if (width, height) != (WIDTH, HEIGHT):
                where = f" (labelled at {csv_path.name} line {first_line[name]})" if name in first_line else ""
                issues.report(path, None, f"image is {width}x{height}, expected {WIDTH}x{HEIGHT}{where}")
                continue
        images.append(SeverstalImage(image_id=name, path=path, rles=labels.get(name, {})))
    return SeverstalDataset(root, csv_path, form, tuple(images), tuple(issues.issues))


def write_severstal_csv(path: Path | str, rows: Iterable[tuple[str, int, str]]) -> int:
    """Write labels in the current form, sorted by image then class; empty masks are left out.

    Returns the number of rows written.
    """
    kept = sorted((image_id, int(c), rle) for image_id, c, rle in rows if rle)
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CURRENT_HEADER)
        writer.writerows(kept)
    return len(kept)


__all__ = [
    "CLASS_IDS",
    "NUM_CLASSES",
    "DataError",
    "SeverstalDataset",
    "SeverstalImage",
    "load_severstal",
    "write_severstal_csv",
]
