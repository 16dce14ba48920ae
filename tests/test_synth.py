"""The synthetic strip generator and the drawing helpers: determinism, label validity, files, statistics."""

from __future__ import annotations

import builtins
import csv
import itertools
import pathlib
import re

import cv2
import numpy as np
import pytest

from steel_edge import viz
from steel_edge.data import rle, synth
from steel_edge.data.synth import SynthConfig, generate, stream, write_dataset

# Every frame carries exactly two classes: the hardest case for the no-overlap rule.
TWO_CLASSES = SynthConfig(defect_free_share=0.0, multi_class_share=1.0, class_weights=(1, 1, 1, 1))


def test_generate_is_deterministic_in_seed_and_index_alone() -> None:
    a, b = generate(3, 5), generate(3, 5)
    assert a.image_id == b.image_id == "synth_0003_000005.jpg"
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    from_stream = next(itertools.islice(stream(3), 5, None))  # same frame, reached in a different order
    assert np.array_equal(from_stream.image, a.image) and np.array_equal(from_stream.masks, a.masks)
    assert not np.array_equal(generate(3, 6).image, a.image)
    assert not np.array_equal(generate(4, 5).image, a.image)


def test_shapes_and_dtypes() -> None:
    sample = generate(0, 0, TWO_CLASSES)
    assert sample.image.shape == (256, 1600) and sample.image.dtype == np.uint8
    assert sample.masks.shape == (4, 256, 1600) and sample.masks.dtype == np.uint8
    assert set(np.unique(sample.masks)) <= {0, 1}
    assert sample.image.flags.c_contiguous and sample.masks.flags.c_contiguous


def test_classes_never_overlap_and_every_drawn_class_has_pixels() -> None:
    for sample in stream(11, 40, TWO_CLASSES):
        assert sample.masks.sum(axis=0, dtype=np.int32).max() <= 1, sample.image_id
        assert len(sample.classes) == 2, (sample.image_id, sample.classes)
        for k in sample.classes:
            assert sample.masks[k - 1].sum() >= 100, (sample.image_id, k)


def test_other_frame_sizes_work() -> None:
    config = SynthConfig(height=128, width=512, defect_free_share=0.0, multi_class_share=0.5, edge_share=0.5)
    for sample in stream(2, 20, config):
        assert sample.image.shape == (128, 512) and sample.masks.shape == (4, 128, 512)
        assert sample.classes and sample.masks.sum(axis=0).max() <= 1


def test_write_dataset_matches_kaggle_layout_and_generate(tmp_path: pathlib.Path) -> None:
    summary = write_dataset(tmp_path, 12, seed=7, config=SynthConfig(defect_free_share=0.3), workers=2)
    samples = list(stream(7, 12, SynthConfig(defect_free_share=0.3)))
    names = sorted(p.name for p in (tmp_path / "train_images").iterdir())
    assert names == [s.image_id for s in samples]
    for sample in samples[:4]:
        bgr = cv2.imread(str(tmp_path / "train_images" / sample.image_id), cv2.IMREAD_UNCHANGED)
        assert bgr is not None and bgr.shape == (256, 1600, 3)
        assert np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 0], bgr[..., 2])
        assert np.array_equal(bgr[..., 0], sample.image)  # the stream carries the file's JPEG artefacts

    with (tmp_path / "train.csv").open(newline="") as fh:
        assert fh.readline() == "ImageId,ClassId,EncodedPixels\n"
        rows = list(csv.reader(fh))
    keys = [(r[0], int(r[1])) for r in rows]
    assert keys == sorted(keys)
    by_id = {s.image_id: s for s in samples}
    assert keys == [(s.image_id, k) for s in samples for k in s.classes]
    for image_id, cls, encoded in rows:
        assert encoded, "only non-empty masks get a row"
        assert np.array_equal(rle.decode(encoded), by_id[image_id].masks[int(cls) - 1])

    assert summary["images"] == 12
    assert summary["defect_free"] == sum(not s.classes for s in samples)
    assert summary["class_images"] == {k: sum(k in s.classes for s in samples) for k in range(1, 5)}
    assert float(summary["seconds"]) >= 0  # type: ignore[arg-type]


def test_class_frequencies_follow_the_config_over_100_images() -> None:
    samples = list(stream(1, 100))
    free = sum(not s.classes for s in samples)
    pairs = {k: sum(k in s.classes for s in samples) for k in range(1, 5)}
    assert 30 <= free <= 65  # Kaggle: 47%
    assert max(pairs, key=lambda k: pairs[k]) == 3  # class 3 dominates, as in Kaggle (73% of pairs)
    assert 0.5 <= pairs[3] / sum(pairs.values()) <= 0.95
    assert sum(len(s.classes) > 1 for s in samples) <= 12


def test_class_mix_follows_weights_without_rendering() -> None:
    # The class choice is cheap to sample on its own: check the long-run shares tightly.
    config = SynthConfig()
    picks = [synth._pick_classes(np.random.default_rng([9, i]), config) for i in range(20_000)]
    free = sum(not p for p in picks) / len(picks)
    multi = sum(len(p) == 2 for p in picks) / max(1, sum(bool(p) for p in picks))
    pairs = np.bincount([k for p in picks for k in p], minlength=5)[1:]
    assert abs(free - 0.47) < 0.015 and abs(multi - 0.064) < 0.012
    expected = np.array(config.class_weights) / sum(config.class_weights)
    assert np.allclose(pairs / pairs.sum(), expected, atol=0.03)


def test_stream_never_touches_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("stream() touched the file system")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(pathlib.Path, "open", refuse)
    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    monkeypatch.setattr(cv2, "imwrite", refuse)
    endless = stream(5)
    assert [s.image_id for s in itertools.islice(endless, 3)] == [f"synth_0005_{i:06d}.jpg" for i in range(3)]
    assert next(endless).image_id == "synth_0005_000003.jpg"  # still going: no count means endless
    assert len(list(stream(5, 2))) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"defect_free_share": 1.5},
        {"class_weights": (0, 0, 0, 0)},
        {"class_weights": (1, -1, 1, 1)},
        {"jpeg_quality": 0},
        {"height": 10},
        {"brightness": (200, 100)},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)  # type: ignore[arg-type]


def test_negative_seed_or_index_is_refused() -> None:
    with pytest.raises(ValueError, match="seed and index"):
        generate(-1, 0)


def test_mask_outlines_are_drawn_in_class_colours_on_a_copy() -> None:
    gray = np.full((64, 128), 100, np.uint8)
    masks = np.zeros((4, 64, 128), np.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[3, 20:50, 70:120] = 1
    out = viz.draw_mask_outlines(gray, masks, thickness=1)
    assert out.shape == (64, 128, 3) and out.dtype == np.uint8
    assert (gray == 100).all(), "the input image must not be modified"
    assert tuple(out[10, 20]) == viz.CLASS_COLORS[1] and tuple(out[35, 70]) == viz.CLASS_COLORS[4]
    assert tuple(out[20, 25]) == (100, 100, 100), "outlines only, the inside stays visible"
    assert tuple(out[5, 5]) == (100, 100, 100)

    dashed = viz.draw_mask_outlines(gray, masks, thickness=1, dashed=True)
    changed = (out != 100).any(axis=2).sum()
    assert 0.3 * changed < (dashed != 100).any(axis=2).sum() < 0.8 * changed

    both = viz.draw_truth_vs_pred(gray, masks, np.roll(masks, 3, axis=2))
    assert both.shape == (64, 128, 3)
    with pytest.raises(ValueError, match="masks must be"):
        viz.draw_mask_outlines(gray, masks[:, :32])


def test_contact_sheet_lays_out_tiles_with_captions() -> None:
    tiles = [np.full((20, 40), v, np.uint8) for v in (50, 100, 150)] + [np.zeros((10, 30, 3), np.uint8)]
    sheet = viz.contact_sheet(tiles, cols=2, labels=["a", "b", "c", "d"], gap=4, caption_height=18)
    assert sheet.shape == (2 * (20 + 18 + 4) + 4, 2 * (40 + 4) + 4, 3)
    assert tuple(sheet[4 + 18 + 5, 4 + 5]) == (50, 50, 50)
    half = viz.contact_sheet(tiles, cols=4, scale=0.5)
    assert half.shape == (10 + 8, 4 * (20 + 4) + 4, 3)
    with pytest.raises(ValueError):
        viz.contact_sheet(tiles, cols=2, labels=["only one"])


def test_sample_ids_sort_in_index_order() -> None:
    ids = [f"synth_{0:04d}_{i:06d}.jpg" for i in (2, 10, 100)]
    assert ids == sorted(ids) and all(re.fullmatch(r"synth_\d{4}_\d{6}\.jpg", i) for i in ids)
