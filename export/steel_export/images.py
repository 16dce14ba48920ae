"""Images to prove an export on: real ones from a data folder and synthetic strip frames.

Parity, the INT8 comparison and calibration all need images at the model's input size, with ground
truth where the folder has it (so INT8 can be judged on Dice or accuracy, not only on raw differences).
Three folder forms are read: the Severstal layout (``train.csv``), the labelled-image layout
(``labels.csv`` or class sub-folders), and a plain folder of images (no truth). Picks are spread evenly
over the sorted file list, so a small sample still covers every class of a folder sorted by class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from steel_edge.data.imageio import is_image_file, read_gray
from steel_edge.data.labelled import detect_layout, load_labelled
from steel_edge.data.rle import area
from steel_edge.data.severstal import load_severstal
from steel_edge.data.synth import SynthConfig, stream
from steel_export.source import ExportInputError

REPO = Path(__file__).resolve().parents[2]
PARITY_IMAGES = 24  # at least 20 (issue #4), real first, then synthetic
REAL_LIMIT = 16  # of them real at most, by default: the rest synthetic, so both kinds are always there
SYNTH_SEED = 4  # any fixed seed: the same synthetic frames for every export, so reports compare


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$STEEL_SHARED_DATA`` (the tests' convention)."""
    return Path(os.environ.get("STEEL_SHARED_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class EvalImage:
    """One image at the model's input size, with its truth when known."""

    name: str
    image: np.ndarray  # (H, W) uint8
    origin: Literal["real", "synthetic"]
    masks: np.ndarray | None = None  # seg: (4, H, W) uint8 truth
    label: int | None = None  # cls: truth output index
    path: Path | None = None


def _spread(n_total: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(n_total)``."""
    if limit >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, limit).round()})


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize with area averaging, the way training fed classifiers (steel_train.pipeline.resize_gray)."""
    if image.shape[:2] == size:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def default_real_dir(kind: str) -> Path | None:
    """The shared sample that suits a kind: Severstal for seg and baseline, NEU for cls; None if absent."""
    folder = shared_data_dir() / ("neu_det" if kind == "cls" else "severstal")
    return folder if folder.is_dir() else None


def real_images(
    folder: Path, kind: str, size: tuple[int, int], class_names: Sequence[str], limit: int,
) -> list[EvalImage]:
    """Up to ``limit`` images of ``folder`` at ``size``; truth from its labels where the layout has them."""
    if not folder.is_dir():
        raise ExportInputError(f"{folder}: image folder not found")
    try:
        layout: str = detect_layout(folder)
    except FileNotFoundError:
        layout = "plain"
    out: list[EvalImage] = []
    if layout == "severstal":
        items = load_severstal(folder, on_error="skip").images
        for i in _spread(len(items), limit):
            item = items[i]
            image = item.read()
            if kind == "seg":
                out.append(EvalImage(item.image_id, image, "real", masks=item.masks(), path=item.path))
            else:  # baseline: the image's largest class, as steel_train.records.baseline_label
                rles = dict(item.rles)
                label = max(rles, key=lambda c: area(rles[c])) - 1 if rles else None
                out.append(EvalImage(item.image_id, _fit(image, size), "real", label=label, path=item.path))
        return out
    if kind == "seg" and layout == "labelled":
        raise ExportInputError(f"{folder}: a seg model needs Severstal-layout images (train.csv) or a plain folder")
    if layout == "labelled":
        ds = load_labelled(folder, on_error="skip")
        for i in _spread(len(ds.items), limit):
            it = ds.items[i]
            label = list(class_names).index(it.label) if it.label in class_names else None
            out.append(EvalImage(it.path.name, _fit(read_gray(it.path), size), "real", label=label, path=it.path))
        return out
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not files:
        raise ExportInputError(f"{folder}: no image files found")
    for i in _spread(len(files), limit):
        image = read_gray(files[i])
        if kind == "seg" and image.shape != size:
            raise ExportInputError(f"{files[i]}: image is {image.shape[1]}x{image.shape[0]}, a seg model needs "
                              f"{size[1]}x{size[0]} tiles")
        out.append(EvalImage(files[i].name, _fit(image, size), "real", path=files[i]))
    return out


def synthetic_images(kind: str, size: tuple[int, int], count: int, seed: int = SYNTH_SEED) -> list[EvalImage]:
    """``count`` synthetic strip frames: with truth masks for seg, resized and unlabelled for classifiers."""
    out = []
    for sample in stream(seed, count, SynthConfig()):
        name = f"synth-{seed}-{sample.image_id}"
        if kind == "seg":
            out.append(EvalImage(name, sample.image, "synthetic", masks=sample.masks))
        else:
            out.append(EvalImage(name, _fit(sample.image, size), "synthetic"))
    return out


def evaluation_set(
    kind: str, size: tuple[int, int], class_names: Sequence[str], data: Path | None, total: int, real_limit: int,
) -> tuple[list[EvalImage], str | None]:
    """Real images (from ``data`` or the shared sample) topped up with synthetic ones to ``total``.

    Returns the images and a note when no real images could be used (the report says so, rather than
    silently proving parity on synthetic frames alone).
    """
    folder = data if data is not None else default_real_dir(kind)
    real = real_images(folder, kind, size, class_names, real_limit) if folder is not None else []
    note = None if real else f"no real images (shared data not found at {shared_data_dir()}); synthetic only"
    return real + synthetic_images(kind, size, max(0, total - len(real))), note


def stack(images: Sequence[EvalImage]) -> np.ndarray:
    return np.stack([e.image for e in images]) if images else np.zeros((0, 1, 1), np.uint8)
