"""From data folders to ``tf.data`` pipelines: loading, class balancing, crops, augmentation, targets.

Images are decoded once (OpenCV, in parallel threads: it releases the GIL) and kept in memory when
``data.cache`` is on; each epoch's sampling plan (which image, how often, which random seed) is drawn
up front from the run's seed, so a run is reproducible even though ``tf.data`` maps in parallel.
Augmentation happens here, outside the model graph, so the exported model holds none of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from steel_edge.data.imageio import read_gray
from steel_edge.data.rle import HEIGHT, WIDTH, decode
from steel_train.config import AugmentConfig, DataConfig, ModelConfig


@dataclass(frozen=True)
class SegRecord:
    """One Severstal-layout image: its file, its labels, and which --data folder it came from."""

    path: Path
    rles: dict[int, str]
    source: int

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(c for c, r in self.rles.items() if r))


@dataclass(frozen=True)
class ClsRecord:
    path: Path
    label: int
    source: int = 0


def label_map(rles: dict[int, str], shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """(H, W) uint8: 0 for clean pixels, k for class k (the real masks never overlap)."""
    out = np.zeros(shape, np.uint8)
    for class_id, rle in sorted(rles.items()):
        if rle:
            out[decode(rle, shape) > 0] = class_id
    return out


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(fn, items))


class SegSource:
    """Images and label maps for seg training, held in memory (``cache``) or read per sample."""

    def __init__(self, records: Sequence[SegRecord], cache: bool) -> None:
        self.records = list(records)
        self.cache = cache
        self._images: list[np.ndarray] | None = None
        self._labels: list[np.ndarray] | None = None
        if cache:
            self._images = _parallel(lambda r: read_gray(r.path, expect=(HEIGHT, WIDTH)), self.records)
            self._labels = _parallel(lambda r: label_map(r.rles), self.records)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._images is not None:
            return self._images[i], self.labels(i)
        return read_gray(self.records[i].path, expect=(HEIGHT, WIDTH)), self.labels(i)

    def labels(self, i: int) -> np.ndarray:
        """Image ``i``'s label map alone (no image read when the source is not cached)."""
        return self._labels[i] if self._labels is not None else label_map(self.records[i].rles)


@dataclass(frozen=True)
class Defect:
    """One labelled defect (a connected component of one class) in a SegSource image."""

    image: int
    class_id: int
    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels


OFF_STRIP = 20  # gray level under which a pixel is the dark background beyond the strip's edge


def _on_strip(region: np.ndarray) -> bool:
    """Mostly strip, not the dark background beyond its edge (where nothing is pasted or copied from)."""
    return bool(np.mean(region < OFF_STRIP) < 0.1)


def _blend(patch: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``patch`` shifted to ``target``'s level and blended over it with ``alpha`` (1 = patch), clipped to 0..255.

    The labels are coarse polygons, mostly background inside: a region's median is its background level.
    """
    shift = float(np.median(target)) - float(np.median(patch))
    return np.clip(alpha * (patch + shift) + (1 - alpha) * target, 0, 255)


class DefectBank:
    """The labelled defects of the training images, for copy-paste augmentation (``data.copy_paste``).

    A defect moves with its class mask, is pasted only into images of the same --data folder (a real
    defect onto real strip, never onto a synthetic frame), never into the image it came from, and only
    onto the strip (not beyond its edge). The patch is shifted to the target's background level and its
    edge feathered, so the model cannot find it by a brightness step alone.
    """

    MIN_PIXELS = 64  # smaller components are RLE crumbs, not defects worth moving

    def __init__(self, source: SegSource) -> None:
        self.source = source
        self.by_folder: dict[int, list[Defect]] = {}
        for i, rec in enumerate(source.records):
            if not rec.classes:
                continue
            labels = source.labels(i)
            for class_id in rec.classes:
                n, _, stats, _ = cv2.connectedComponentsWithStats((labels == class_id).astype(np.uint8), connectivity=8)
                for x, y, w, h, area in stats[1:n]:
                    if area >= self.MIN_PIXELS:
                        self.by_folder.setdefault(rec.source, []).append(
                            Defect(i, class_id, (int(x), int(y), int(w), int(h))))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_folder.values())

    def paste(self, image: np.ndarray, labels: np.ndarray, into: int, rng: np.random.Generator) -> tuple[
        np.ndarray, np.ndarray
    ]:
        """``image`` (float32) and ``labels`` of a crop of image ``into``, with one defect from another image."""
        pool = [d for d in self.by_folder.get(self.source.records[into].source, []) if d.image != into]
        if not pool:
            return image, labels
        d = pool[int(rng.integers(len(pool)))]
        src_image, src_labels = self.source.get(d.image)
        x, y, w, h = d.box
        patch = src_image[y:y + h, x:x + w].astype(np.float32)
        mask = src_labels[y:y + h, x:x + w] == d.class_id
        if rng.random() < 0.5:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            patch, mask = patch[::-1], mask[::-1]
        # A defect larger than the crop contributes a random window of itself.
        ph, pw = min(h, image.shape[0]), min(w, image.shape[1])
        oy, ox = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch, mask = patch[oy:oy + ph, ox:ox + pw], mask[oy:oy + ph, ox:ox + pw]
        if not mask.any():
            return image, labels
        for _ in range(4):  # onto the strip: not into the black beyond its edge
            ty, tx = int(rng.integers(0, image.shape[0] - ph + 1)), int(rng.integers(0, image.shape[1] - pw + 1))
            target = image[ty:ty + ph, tx:tx + pw]
            if _on_strip(target):
                break
        else:
            return image, labels
        alpha = np.maximum(cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0), mask)
        image, labels = image.copy(), labels.copy()
        image[ty:ty + ph, tx:tx + pw] = _blend(patch, target, alpha)
        labels[ty:ty + ph, tx:tx + pw][mask] = d.class_id
        return image, labels


def erase_defect(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, margin: int = 8) -> tuple[
    np.ndarray, np.ndarray
]:
    """``image`` (float32) and ``labels`` of a crop with one labelled defect covered by defect-free strip.

    The cover is a window of the same rows from elsewhere in the crop with no label in those rows, shifted to
    the defect's background level and feathered over ``margin`` pixels; every label under the cover is
    cleared. A crop with no such window (its defects span it) is returned unchanged.
    """
    n, _, stats, _ = cv2.connectedComponentsWithStats((labels > 0).astype(np.uint8), connectivity=8)
    big = [j for j in range(1, n) if stats[j, cv2.CC_STAT_AREA] >= DefectBank.MIN_PIXELS]
    if not big:
        return image, labels
    x, y, w, h = (int(v) for v in stats[big[int(rng.integers(len(big)))], :4])
    height, width = labels.shape
    x0, x1, y0, y1 = max(0, x - margin), min(width, x + w + margin), max(0, y - margin), min(height, y + h + margin)
    bw = x1 - x0
    free = ~labels[y0:y1].any(axis=0)
    starts = np.flatnonzero(np.convolve(free.astype(np.int64), np.ones(bw, np.int64), "valid") == bw)
    on_strip = [s for s in starts if _on_strip(image[y0:y1, s:s + bw])]
    if not on_strip:
        return image, labels
    s = int(on_strip[int(rng.integers(len(on_strip)))])
    patch, target = image[y0:y1, s:s + bw], image[y0:y1, x0:x1]
    box = np.zeros(labels.shape, np.float32)
    box[max(0, y - margin // 2):y + h + margin // 2, max(0, x - margin // 2):x + w + margin // 2] = 1.0
    alpha = cv2.GaussianBlur(box, (2 * (margin // 2) + 1, 2 * (margin // 2) + 1), 0)[y0:y1, x0:x1]
    image, labels = image.copy(), labels.copy()
    image[y0:y1, x0:x1] = _blend(patch, target, alpha)
    labels[y0:y1, x0:x1][alpha >= 0.5] = 0
    return image, labels


def repeat_factors(records: Sequence[SegRecord], cfg: DataConfig) -> np.ndarray:
    """Expected appearances per epoch of each image: rare-class boost times its source's weight."""
    weights = cfg.source_weights
    factors = np.ones(len(records), dtype=np.float64)
    if cfg.balance_rare:
        counts = {c: sum(c in r.classes for r in records) for c in (1, 2, 3, 4)}
        top = max(counts.values()) or 1
        for i, rec in enumerate(records):
            # math.sqrt for the default power: the same factors, bit for bit, as before the key existed
            boosts = [math.sqrt(top / counts[c]) if cfg.balance_power == 0.5 else (top / counts[c]) ** cfg.balance_power
                      for c in rec.classes if counts[c]]
            factors[i] = min(float(cfg.max_repeat), max(boosts, default=1.0))
    if weights is not None:
        factors *= np.array([weights[r.source] for r in records], dtype=np.float64)
    return factors


def epoch_plan(factors: np.ndarray, per_image: int, seed: int, epoch: int) -> np.ndarray:
    """(n, 2) int64 rows of (image index, sample seed) for one epoch, shuffled.

    A fractional factor becomes a random whole number of appearances with that mean, so a source
    weight of 0.3 shows each of its images in about 30% of epochs.
    """
    rng = np.random.default_rng([seed, epoch])
    whole = np.floor(factors).astype(np.int64)
    whole += rng.random(len(factors)) < (factors - whole)
    idx = np.repeat(np.arange(len(factors)), whole * per_image)
    rng.shuffle(idx)
    seeds = rng.integers(0, 2**31 - 1, size=idx.size)
    return np.stack([idx, seeds], axis=1)


def augment_pair(image: np.ndarray, labels: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> tuple[
    np.ndarray, np.ndarray
]:
    """Flips move image and labels together; brightness and contrast touch the image only."""
    if aug.hflip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if aug.vflip and rng.random() < 0.5:
        image, labels = image[::-1], labels[::-1]
    out = np.ascontiguousarray(image, dtype=np.float32)  # copies only a flipped view: the crop is float32 already
    if aug.contrast or aug.brightness:
        gain = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
        shift = rng.uniform(-aug.brightness, aug.brightness) * 255.0
        mean = float(out.mean())
        out = np.clip((out - mean) * gain + mean + shift, 0, 255)
    return out, np.ascontiguousarray(labels)


def choose_crop(labels: np.ndarray, width: int, bias: float, rng: np.random.Generator, by_class: bool = False) -> int:
    """Left edge of a crop: centred on a random defect column with probability ``bias``.

    ``by_class`` picks one of the classes present first (each equally likely), then a column of it, so a small
    rare defect beside a large common one is the centre as often as the large one (``data.crop_centre=class``).
    """
    full = labels.shape[1]
    if width >= full:
        return 0
    if rng.random() < bias:
        if by_class:
            present = [c for c in range(1, 5) if (labels == c).any()]
            target = labels == present[int(rng.integers(len(present)))] if present else labels > 0
            cols = np.flatnonzero(target.any(axis=0))
        else:
            cols = np.flatnonzero(labels.any(axis=0))
        if cols.size:
            centre = int(cols[rng.integers(cols.size)])
            return int(np.clip(centre - width // 2 + rng.integers(-width // 4, width // 4 + 1), 0, full - width))
    return int(rng.integers(0, full - width + 1))


def seg_targets(labels: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft per-class masks at 1/stride (the share of each cell's pixels in the class) and presence."""
    h, w = labels.shape
    onehot = (labels[..., None] == np.arange(1, 5, dtype=np.uint8)).astype(np.float32)
    if stride > 1:
        onehot = onehot.reshape(h // stride, stride, w // stride, stride, 4).mean(axis=(1, 3))
    presence = (labels.reshape(-1)[:, None] == np.arange(1, 5)).any(axis=0).astype(np.float32)
    return onehot, presence


def seg_train_sample(
    source: SegSource, index: int, seed: int, data: DataConfig, stride: int, bank: DefectBank | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image, labels = source.get(index)
    crop_h = min(data.crop_height, image.shape[0])
    crop_w = min(data.crop_width, image.shape[1])
    y0 = int(rng.integers(0, image.shape[0] - crop_h + 1))
    x0 = choose_crop(labels[y0:y0 + crop_h], crop_w, data.defect_crop_bias, rng, data.crop_centre == "class")
    img, lab = image[y0:y0 + crop_h, x0:x0 + crop_w].astype(np.float32), labels[y0:y0 + crop_h, x0:x0 + crop_w]
    if data.erase_defects and rng.random() < data.erase_defects:  # no draw when off: other crops stay as they were
        img, lab = erase_defect(img, lab, rng)
    if bank is not None and rng.random() < data.copy_paste:
        img, lab = bank.paste(img, lab, index, rng)
    img, lab = augment_pair(img, lab, data.augment, rng)
    masks, presence = seg_targets(lab, stride)
    return img[..., None], masks, presence


def seg_datasets(
    train: SegSource, val: SegSource, data: DataConfig, model: ModelConfig, seed: int, epochs: int,
    start_epoch: int = 0,
) -> tuple[Any, Any, int]:
    """(train dataset over all epochs, validation dataset of full tiles, steps per epoch).

    ``start_epoch`` > 0 (a resumed run) starts the training data at that epoch's plan, so a resumed run
    sees the crops the uninterrupted one would have.
    """
    import tensorflow as tf

    stride = model.output_stride * model.input_downsample
    factors = repeat_factors(train.records, data)
    plans = [epoch_plan(factors, data.crops_per_image, seed, e) for e in range(epochs)]
    steps = max(1, min(len(p) for p in plans) // data.batch_size)
    plan = np.concatenate([p[: steps * data.batch_size] for p in plans[start_epoch:]] or
                          [np.zeros((0, 2), np.int64)])

    bank = DefectBank(train) if data.copy_paste > 0 else None

    def load(row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return seg_train_sample(train, int(row[0]), int(row[1]), data, stride, bank)

    def tf_load(row: Any) -> tuple[Any, dict[str, Any]]:
        img, masks, presence = tf.numpy_function(load, [row], [tf.float32, tf.float32, tf.float32])
        img.set_shape((data.crop_height, data.crop_width, 1))
        masks.set_shape((data.crop_height // stride, data.crop_width // stride, 4))
        presence.set_shape((4,))
        return img, {"masks": masks, "presence": presence}

    opts = tf.data.Options()
    opts.deterministic = True
    train_ds = (tf.data.Dataset.from_tensor_slices(plan).with_options(opts)
                .map(tf_load, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(data.batch_size, drop_remainder=True).prefetch(2))

    # Validation tiles are built on the fly too: a Kaggle-sized split (2,500 full tiles) would need
    # ~4 GB as float32 arrays.
    def load_val(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, labels = val.get(int(index))
        masks, presence = seg_targets(labels, stride)
        return image.astype(np.float32)[..., None], masks, presence

    def tf_load_val(index: Any) -> tuple[Any, dict[str, Any]]:
        img, masks, presence = tf.numpy_function(load_val, [index], [tf.float32, tf.float32, tf.float32])
        img.set_shape((HEIGHT, WIDTH, 1))
        masks.set_shape((HEIGHT // stride, WIDTH // stride, 4))
        presence.set_shape((4,))
        return img, {"masks": masks, "presence": presence}

    val_ds = (tf.data.Dataset.range(len(val)).with_options(opts)
              .map(tf_load_val, num_parallel_calls=tf.data.AUTOTUNE).batch(4).prefetch(1))
    return train_ds, val_ds, steps


def resize_gray(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image as grayscale and resize it to (height, width) with area averaging."""
    image = read_gray(path)
    if image.shape != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image


def cls_arrays(records: Sequence[ClsRecord], model: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """All images resized to the model's input, as (N, H, W, 1) float32, and their integer labels."""
    size = (model.input_height, model.input_width)
    images = _parallel(lambda r: resize_gray(r.path, size), records)
    x = np.stack(images).astype(np.float32)[..., None] if images else np.zeros((0, *size, 1), np.float32)
    return x, np.array([r.label for r in records], dtype=np.int64)


def cls_datasets(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], data: DataConfig,
    num_classes: int, seed: int, square_rotations: bool,
) -> tuple[Any, Any]:
    """Shuffled, augmented training batches and plain validation batches (one-hot labels)."""
    import tensorflow as tf

    aug = data.augment
    size = train[0].shape[1:]
    shift_y, shift_x = (round(aug.translate * side) for side in size[:2])

    def augment(x: Any, y: Any) -> tuple[Any, Any]:
        if aug.hflip:
            x = tf.image.random_flip_left_right(x)
        if aug.vflip:
            x = tf.image.random_flip_up_down(x)
        if square_rotations:  # surface textures have no up: any quarter turn is the same class
            x = tf.image.rot90(x, tf.random.uniform((), 0, 4, dtype=tf.int32))
        if shift_y or shift_x:  # a defect's place in the picture says nothing about its class
            x = tf.pad(x, [[shift_y, shift_y], [shift_x, shift_x], [0, 0]], mode="REFLECT")
            x = tf.image.random_crop(x, size)
        if aug.brightness:
            x = x + tf.random.uniform((), -aug.brightness, aug.brightness) * 255.0
        if aug.contrast:
            mean = tf.reduce_mean(x)
            x = (x - mean) * tf.random.uniform((), 1 - aug.contrast, 1 + aug.contrast) + mean
        return tf.clip_by_value(x, 0.0, 255.0), y

    x, y = train
    train_ds = (tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, num_classes)))
                .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
                .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(data.batch_size).prefetch(2))
    vx, vy = val
    val_ds = tf.data.Dataset.from_tensor_slices((vx, tf.one_hot(vy, num_classes))).batch(data.batch_size)
    return train_ds, val_ds
