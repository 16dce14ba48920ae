"""Seg training samples: copy-paste augmentation (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from steel_edge.data.rle import HEIGHT, WIDTH, encode
from steel_train.config import DataConfig
from steel_train.pipeline import DefectBank, SegRecord, SegSource, erase_defect, seg_train_sample


def _record(tmp: Path, name: str, level: int, boxes: dict[int, tuple[int, int, int, int]], folder: int = 0,
            texture: int = 0) -> SegRecord:
    """A flat gray frame with a bright (or textured) rectangle per labelled class box (x, y, w, h)."""
    image = np.full((HEIGHT, WIDTH), level, np.uint8)
    rles = {}
    for class_id, (x, y, w, h) in boxes.items():
        image[y:y + h, x:x + w] = level + 60 + texture * (np.arange(w) % 2)[None, :]
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[y:y + h, x:x + w] = 1
        rles[class_id] = encode(mask)
    path = tmp / f"{name}.png"
    cv2.imwrite(str(path), image)
    return SegRecord(path, rles, folder)


def test_bank_lists_defects_per_folder_and_skips_crumbs(tmp_path: Path) -> None:
    records = [
        _record(tmp_path, "a", 100, {3: (100, 50, 40, 30), 1: (500, 10, 5, 5)}),  # class 1: 25 px, a crumb
        _record(tmp_path, "b", 100, {}),
        _record(tmp_path, "c", 100, {4: (300, 100, 60, 60)}, folder=1),
    ]
    bank = DefectBank(SegSource(records, cache=True))
    assert len(bank) == 2
    assert [(d.image, d.class_id, d.box) for d in bank.by_folder[0]] == [(0, 3, (100, 50, 40, 30))]
    assert [(d.image, d.class_id) for d in bank.by_folder[1]] == [(2, 4)]


def test_paste_moves_pixels_and_class_from_another_image_of_the_same_folder(tmp_path: Path) -> None:
    records = [
        _record(tmp_path, "a", 80, {3: (100, 50, 40, 30)}, texture=40),
        _record(tmp_path, "b", 120, {}),
        _record(tmp_path, "c", 120, {4: (300, 100, 60, 60)}, folder=1),
    ]
    source = SegSource(records, cache=True)
    bank = DefectBank(source)
    image, labels = source.get(1)
    crop, crop_labels = image[:, :512].astype(np.float32), labels[:, :512]
    before = (crop.copy(), crop_labels.copy())
    out, out_labels = bank.paste(crop, crop_labels, 1, np.random.default_rng(0))
    # The caller's arrays (views of the cached frame) are untouched; the sample got the class-3 defect.
    np.testing.assert_array_equal(crop, before[0])
    np.testing.assert_array_equal(crop_labels, before[1])
    assert set(np.unique(out_labels)) == {0, 3} and (out_labels == 3).sum() == 40 * 30
    ys, xs = np.nonzero(out_labels == 3)
    region = out[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    # Shifted to the target's level (median 120, the patch is all defect), with the texture kept.
    assert abs(float(np.median(region)) - 120) <= 20 and float(region.std()) > 10
    # Outside the feathered edge nothing changed.
    far = cv2.dilate((out_labels == 3).astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    np.testing.assert_array_equal(out[far], crop[far])


def test_paste_never_uses_the_image_itself_or_another_folder(tmp_path: Path) -> None:
    records = [_record(tmp_path, "a", 100, {3: (100, 50, 40, 30)}),
               _record(tmp_path, "c", 100, {4: (300, 100, 60, 60)}, folder=1)]
    source = SegSource(records, cache=True)
    bank = DefectBank(source)
    image, labels = source.get(0)
    crop, crop_labels = image[:, :512].astype(np.float32), labels[:, :512]
    for seed in range(5):
        out, out_labels = bank.paste(crop, crop_labels, 0, np.random.default_rng(seed))
        assert out is crop and out_labels is crop_labels


def test_paste_stays_on_the_strip(tmp_path: Path) -> None:
    records = [_record(tmp_path, "a", 100, {3: (100, 50, 40, 30)}), _record(tmp_path, "b", 0, {})]
    source = SegSource(records, cache=True)
    bank = DefectBank(source)
    image, labels = source.get(1)  # all black: beyond the strip's edge
    crop = image[:, :512].astype(np.float32)
    out, out_labels = bank.paste(crop, labels[:, :512], 1, np.random.default_rng(0))
    assert out is crop and not out_labels.any()


@pytest.mark.parametrize("copy_paste", [0.0, 1.0])
def test_train_sample_with_copy_paste(tmp_path: Path, copy_paste: float) -> None:
    records = [_record(tmp_path, "a", 100, {4: (100, 50, 200, 150)}), _record(tmp_path, "b", 100, {})]
    source = SegSource(records, cache=True)
    data = DataConfig(copy_paste=copy_paste, crop_width=512)
    bank = DefectBank(source) if copy_paste else None
    image, masks, presence = seg_train_sample(source, 1, 7, data, 8, bank)
    assert image.shape == (256, 512, 1) and masks.shape == (32, 64, 4)
    assert presence.tolist() == ([0, 0, 0, 1] if copy_paste else [0, 0, 0, 0])
    assert masks[..., 3].sum() > 0 if copy_paste else masks.sum() == 0


def test_copy_paste_is_validated() -> None:
    with pytest.raises(ValueError, match="copy_paste"):
        DataConfig(copy_paste=1.5)


def test_erase_covers_one_defect_with_strip_from_the_same_rows(tmp_path: Path) -> None:
    rec = _record(tmp_path, "a", 100, {3: (100, 50, 40, 30), 4: (300, 120, 30, 40)}, texture=40)
    image, labels = SegSource([rec], cache=True).get(0)
    crop, crop_labels = image[:, :512].astype(np.float32), labels[:, :512]
    before = (crop.copy(), crop_labels.copy())
    erased = set()
    for seed in range(6):
        out, out_labels = erase_defect(crop, crop_labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(crop, before[0])  # the cached frame is untouched
        np.testing.assert_array_equal(crop_labels, before[1])
        gone = [c for c in (3, 4) if not (out_labels == c).any()]
        assert len(gone) == 1 and (out_labels == ({3, 4} - set(gone)).pop()).sum() in (40 * 30, 30 * 40)
        erased.add(gone[0])
        # Where the defect was is now plain strip at its level; away from the cover nothing changed.
        box = {3: (slice(50, 80), slice(100, 140)), 4: (slice(120, 160), slice(300, 330))}[gone[0]]
        assert abs(float(out[box].mean()) - 100) < 5 and float(out[box].std()) < 5
        near = np.zeros(crop.shape, bool)
        near[box[0].start - 8:box[0].stop + 8, box[1].start - 8:box[1].stop + 8] = True
        np.testing.assert_array_equal(out[~near], crop[~near])
    assert erased == {3, 4}  # either defect may be the one covered


def test_erase_leaves_a_crop_whose_defect_spans_it(tmp_path: Path) -> None:
    rec = _record(tmp_path, "a", 100, {3: (0, 0, 512, 60)})
    image, labels = SegSource([rec], cache=True).get(0)
    crop, crop_labels = image[:, :512].astype(np.float32), labels[:, :512]
    out, out_labels = erase_defect(crop, crop_labels, np.random.default_rng(0))
    assert out is crop and out_labels is crop_labels
    data = DataConfig(erase_defects=1.0, crop_width=WIDTH)  # the whole frame: the defect is in the crop
    rec = _record(tmp_path, "b", 100, {4: (100, 50, 60, 60)})
    _, masks, presence = seg_train_sample(SegSource([rec], cache=True), 0, 7, data, 8)
    assert presence.tolist() == [0, 0, 0, 0] and masks.sum() == 0
    _, masks, presence = seg_train_sample(SegSource([rec], cache=True), 0, 7, DataConfig(crop_width=WIDTH), 8)
    assert presence.tolist() == [0, 0, 0, 1] and masks.sum() > 0
    with pytest.raises(ValueError, match="erase_defects"):
        DataConfig(erase_defects=-0.1)


@pytest.mark.tf
def test_cls_translate_shifts_the_image_and_fills_by_reflection() -> None:
    """data.augment.translate moves an image's content by up to that share of each side; the size, the label
    and the set of gray levels are kept (the uncovered border repeats the image by reflection, no black)."""
    pytest.importorskip("tensorflow")
    from steel_train.pipeline import cls_datasets

    image = np.zeros((1, 32, 32, 1), np.float32)
    image[0, 12:20, 12:20, 0] = 255.0  # a bright square in the middle
    data = DataConfig.model_validate({"batch_size": 1, "augment": {"hflip": False, "vflip": False, "brightness": 0.0,
                                                                   "contrast": 0.0, "translate": 0.25}})
    # 20 copies in one pass: with a global seed set (as earlier tests and fit do), each fresh iterator replays the
    # same random draws, so the draws must vary within one iteration.
    copies = np.repeat(image, 20, axis=0)
    train, _ = cls_datasets((copies, np.full(20, 2)), (image, np.array([2])), data, num_classes=3, seed=0,
                            square_rotations=False)
    centres = set()
    for x, y in train:
        x = x.numpy()[0, ..., 0]
        assert x.shape == (32, 32) and int(np.argmax(y.numpy()[0])) == 2
        assert set(np.unique(x)) <= {0.0, 255.0}
        ys, xs = np.nonzero(x == 255.0)
        centres.add((int(ys.mean()), int(xs.mean())))
    assert len(centres) > 5 and all(abs(cy - 15.5) <= 8.5 and abs(cx - 15.5) <= 8.5 for cy, cx in centres)
    none = DataConfig.model_validate({"batch_size": 1, "augment": {"hflip": False, "vflip": False, "brightness": 0.0,
                                                                   "contrast": 0.0}})
    plain, _ = cls_datasets((image, np.array([2])), (image, np.array([2])), none, 3, 0, False)
    assert np.array_equal(next(iter(plain))[0].numpy()[0], image[0])
