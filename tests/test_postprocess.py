"""Post-processing rules on crafted arrays, in frame pixels at any model resolution, and the tuning helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from steel_edge.data.rle import decode, encode
from steel_edge.metrics import dice
from steel_edge.postprocess import (
    PostprocessParams,
    binarize,
    find_components,
    keep_components,
    masks_only,
    postprocess,
    postprocess_batch,
    upscale,
)

NO_AREAS = {"min_area": (0, 0, 0, 0), "min_component": (0, 0, 0, 0)}


def blob_probs(shape: tuple[int, int] = (256, 1600)) -> np.ndarray:
    probs = np.zeros((4, *shape), np.float32)
    probs[2, 100:150, 200:300] = 0.9  # class 3: 5000 px
    probs[2, 10:15, 10:15] = 0.8  # class 3 speck: 25 px
    probs[0, 50:60, 500:520] = 0.7  # class 1: 200 px
    return probs


def reference(probs: np.ndarray, presence: np.ndarray | None, params: PostprocessParams,
              frame: tuple[int, int]) -> np.ndarray:
    """The rules spelled out the slow way: upsample the probabilities first, label at frame resolution."""
    out = np.zeros((4, *frame), np.uint8)
    for c in range(4):
        p = cv2.resize(probs[c], frame[::-1], interpolation=cv2.INTER_NEAREST)
        if presence is not None and params.gate == "hard" and presence[c] < params.presence_threshold[c]:
            continue
        if presence is not None and params.gate == "soft":
            p = p * presence[c]
        k, labels, stats, _ = cv2.connectedComponentsWithStats((p > params.pixel_threshold[c]).astype(np.uint8))
        kept = [j for j in range(1, k) if stats[j, cv2.CC_STAT_AREA] >= params.min_component[c]]
        if sum(stats[j, cv2.CC_STAT_AREA] for j in kept) >= params.min_area[c]:
            out[c] = np.isin(labels, kept)
    return out


def test_min_component_removes_speck_and_min_area_drops_class() -> None:
    res = postprocess(blob_probs(), None, PostprocessParams())
    # class 1's 200 px blob survives min_component 150 but not min_area 600; class 3's 25 px speck goes
    assert [(d.class_id, d.area_px, d.bbox) for d in res.defects] == [(3, 5000, (200, 100, 100, 50))]
    assert res.masks.dtype == np.uint8 and res.masks.shape == (4, 256, 1600)
    assert res.masks[2].sum() == 5000 and res.masks[0].sum() == 0 and res.masks[2, 12, 12] == 0
    assert res.defects[0].score == pytest.approx(0.9)
    assert res.classes == (3,) and res.presence is None
    loose = postprocess(blob_probs(), None, PostprocessParams(**NO_AREAS))
    assert sorted(d.area_px for d in loose.defects) == [25, 200, 5000]


def test_speckle_does_not_carry_a_class_over_min_area() -> None:
    probs = np.zeros((4, 256, 1600), np.float32)
    probs[0, 0:20, 0:25] = 0.9  # 500 px
    for i in range(5):  # 5 x 40 px specks: 700 px in all, yet only 500 px survive min_component
        probs[0, 100:104, 100 + 50 * i:110 + 50 * i] = 0.9
    params = PostprocessParams(min_component=(100, 0, 0, 0), min_area=(600, 0, 0, 0))
    assert postprocess(probs, None, params).defects == ()
    assert len(postprocess(probs, None, params.model_copy(update={"min_area": (500, 0, 0, 0)})).defects) == 1


def test_hard_soft_and_no_gate() -> None:
    presence = np.array([0.75, 0.125, 0.25, 0.125], np.float32)  # exact in float32, so equality means equality
    hard = postprocess(blob_probs(), presence, PostprocessParams(**NO_AREAS))
    assert hard.classes == (1,)  # class 3 gated off at 0.25 < 0.5
    assert hard.masks[2].sum() == 0 and hard.presence == (0.75, 0.125, 0.25, 0.125)
    at_threshold = PostprocessParams(presence_threshold=(0.75, 0.5, 0.25, 0.5), **NO_AREAS)
    assert postprocess(blob_probs(), presence, at_threshold).classes == (1, 3)  # reaching the threshold passes
    soft = postprocess(blob_probs(), presence, PostprocessParams(gate="soft", **NO_AREAS))
    # soft: 0.7 * 0.75 = 0.525 keeps class 1, scored with the gated probability; 0.9 * 0.25 = 0.225 drops class 3
    assert soft.classes == (1,) and soft.defects[0].score == pytest.approx(0.525)
    none = postprocess(blob_probs(), presence, PostprocessParams(gate="none", **NO_AREAS))
    assert none.classes == (1, 3)


def test_skip_rule_reads_no_mask_of_a_tile_where_every_class_is_under_its_skip_value() -> None:
    """Rule 0 (what a cascade model applies in its graph): a whole tile under skip_below is defect-free, even
    with confident masks; one class reaching its value and the usual per-class rules apply to every class."""
    low = np.array([0.25, 0.125, 0.25, 0.125], np.float32)
    gate_open = PostprocessParams(presence_threshold=(0.0, 0.0, 0.0, 0.0), **NO_AREAS)  # rule 1 lets all through
    assert postprocess(blob_probs(), low, gate_open).classes == (1, 3)
    skip = gate_open.model_copy(update={"skip_below": (0.5, 0.5, 0.25, 0.5)})
    assert skip.skips(low) is False  # class 3 reaches 0.25: the tile is read
    assert postprocess(blob_probs(), low, skip).classes == (1, 3)
    skip = gate_open.model_copy(update={"skip_below": (0.5, 0.5, 0.5, 0.5)})
    assert skip.skips(low) is True
    res = postprocess(blob_probs(), low, skip)
    assert res.defects == () and not res.masks.any() and res.presence == (0.25, 0.125, 0.25, 0.125)
    assert not masks_only(blob_probs(), low, skip).any()
    # Only with a hard gate and a presence head: soft and no gate never skip, nor does a model without presence.
    assert not skip.model_copy(update={"gate": "soft"}).skips(low) and not skip.skips(None)
    assert postprocess(blob_probs(), None, skip).classes == (1, 3)
    # Skip values equal to the hard gate's thresholds change no answer.
    tuned = PostprocessParams(presence_threshold=(0.5, 0.5, 0.5, 0.5), **NO_AREAS)
    same = tuned.model_copy(update={"skip_below": tuned.presence_threshold})
    rng = np.random.default_rng(4)
    for _ in range(20):
        presence = rng.random(4).astype(np.float32)
        assert postprocess(blob_probs(), presence, same).classes == postprocess(blob_probs(), presence, tuned).classes


def test_no_presence_head_means_no_gate() -> None:
    for gate in ("hard", "soft", "none"):
        res = postprocess(blob_probs(), None, PostprocessParams(gate=gate, **NO_AREAS))
        assert res.classes == (1, 3) and res.presence is None


def test_half_resolution_gives_frame_pixels() -> None:
    low = np.zeros((4, 128, 800), np.float32)
    low[3, 10:40, 30:80] = 0.95  # 1500 model px = 6000 frame px at stride 2
    low[1, 0:5, 0:5] = 0.95  # 25 model px = 100 frame px: under min_component 150 in frame pixels
    res = postprocess(low, None, PostprocessParams(), frame_size=(256, 1600))
    (d,) = res.defects
    assert (d.class_id, d.bbox, d.area_px) == (4, (60, 20, 100, 60), 6000)
    assert res.masks.shape == (4, 256, 1600) and res.masks[3].sum() == 6000 and res.masks[1].sum() == 0
    assert res.masks[3, 20:80, 60:160].all()


@pytest.mark.parametrize(("shape", "frame"), [((128, 800), (256, 1600)), ((64, 400), (256, 1600)),
                                              ((128, 400), (256, 1600)), ((100, 300), (256, 1600)),
                                              ((256, 1600), (256, 1600))])
def test_any_resolution_matches_labelling_at_frame_resolution(shape: tuple[int, int], frame: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    probs = cv2.GaussianBlur(rng.random((4, *shape), dtype=np.float32).transpose(1, 2, 0), (7, 7), 0)
    probs = np.ascontiguousarray(probs.transpose(2, 0, 1) ** 2 * 1.6).clip(0, 1).astype(np.float32)
    presence = np.array([0.9, 0.45, 0.6, 0.2], np.float32)
    for params in (PostprocessParams(), PostprocessParams(gate="soft", min_component=(0, 40, 300, 50)),
                   PostprocessParams(gate="none", pixel_threshold=(0.3, 0.6, 0.4, 0.5), min_area=(0, 0, 50, 99))):
        res = postprocess(probs, presence, params, frame_size=frame)
        want = reference(probs, presence, params, frame)
        assert np.array_equal(res.masks, want), params
        assert np.array_equal(masks_only(probs, presence, params, frame_size=frame), want)
        for c in range(4):
            assert sum(d.area_px for d in res.defects if d.class_id == c + 1) == int(want[c].sum())


def test_defect_rle_round_trips() -> None:
    low = np.zeros((4, 128, 800), np.float32)
    low[0, 120:128, 300:310] = 0.9  # touches the bottom edge: runs of adjacent columns must stay apart
    low[0, 0:6, 311:320] = 0.9  # touches the top edge, in the columns just after the first region
    low[0, 50:90, 600:603] = 0.9
    res = postprocess(low, None, PostprocessParams(**NO_AREAS), with_rle=True)
    assert len(res.defects) == 3
    union = np.zeros((256, 1600), np.uint8)
    for d in res.defects:
        assert d.rle is not None
        region = decode(d.rle, (256, 1600))
        x, y, w, h = d.bbox
        assert int(region.sum()) == d.area_px and region[y:y + h, x:x + w].sum() == d.area_px
        assert encode(region) == d.rle
        union |= region
    assert np.array_equal(union, res.masks[0])
    assert all(d.rle is None for d in postprocess(low, None, PostprocessParams(**NO_AREAS)).defects)


def test_keep_components_over_a_grid_equals_one_at_a_time() -> None:
    binary = np.zeros((64, 400), np.uint8)
    binary[0:2, 0:3] = binary[10:20, 10:20] = binary[40:50, 100:130] = binary[60:61, 300:302] = 1
    comps = find_components(binary, scale=(4, 4))
    assert comps.count == 4 and sorted(comps.areas.tolist()) == [32, 96, 1600, 4800]
    assert comps.boxes[comps.areas.argmax()].tolist() == [400, 160, 120, 40]
    assert np.array_equal(comps.sums(binary * 2.0), comps.areas / 8)
    mcs, mas = np.array([0, 50, 100, 2000]), np.array([0, 1000, 5000, 9000])
    grid = keep_components(comps.areas, mcs[:, None], mas[None, :])
    assert grid.shape == (4, 4, 4)
    for i, mc in enumerate(mcs):
        for j, ma in enumerate(mas):
            assert np.array_equal(grid[i, j], keep_components(comps.areas, int(mc), int(ma)))
    assert (grid @ comps.areas)[1].tolist() == [6496, 6496, 6496, 0]  # mc 50: all but the 32 px one
    assert comps.mask(keep_components(comps.areas, 100, 0)).sum() == 100 + 300


def test_tuning_recipe_scores_every_grid_point_like_postprocess() -> None:
    # The recipe in keep_components' docstring: label once per pixel threshold, then a grid in one go.
    low = np.zeros((64, 400), np.float32)
    low[12:30, 60:200] = 0.8  # 40,320 frame px, most of them on the true region
    for k, side in enumerate((2, 4, 6, 11)):  # false positives of 64, 256, 576 and 1936 frame px
        low[40:40 + side, 20 + 40 * k:20 + 40 * k + side] = 0.9
    true = np.zeros((256, 1600), np.uint8)
    true[40:120, 200:900] = 1
    blocks = true.reshape(64, 4, 400, 4).sum(axis=(1, 3))  # true frame pixels under each model pixel
    mcs, mas = np.array([0, 100, 300, 600, 2000]), np.array([0, 600, 42000, 50000])
    comps = find_components(binarize(low, 0.5), (4, 4))
    survive = keep_components(comps.areas, mcs[:, None], mas[None, :])
    area, inter = survive @ comps.areas, survive @ comps.sums(blocks)
    grid_dice = np.where(area + true.sum() > 0, 2 * inter / np.maximum(area + true.sum(), 1), 1.0)
    for i, mc in enumerate(mcs):
        for j, ma in enumerate(mas):
            params = PostprocessParams(gate="none", min_component=(int(mc), 0, 0, 0), min_area=(int(ma), 0, 0, 0))
            probs = np.zeros((4, 64, 400), np.float32)
            probs[0] = low
            assert grid_dice[i, j] == pytest.approx(dice(masks_only(probs, None, params)[0], true))
    assert len(set(np.round(grid_dice.ravel(), 6))) > 3  # the grid is not trivially flat


def test_large_regions_and_upscale() -> None:
    probs = np.zeros((4, 256, 1600), np.float32)
    probs[1, :, 100:700] = 0.8  # 153,600 px: beyond 16-bit labels
    (d,) = postprocess(probs, None, PostprocessParams()).defects
    assert d.area_px == 256 * 600 and d.bbox == (100, 0, 600, 256)
    rng = np.random.default_rng(0)
    for sy, sx in ((2, 2), (3, 3), (4, 4), (8, 8), (2, 4)):
        m = (rng.random((256 // sy if 256 % sy == 0 else 40, 1600 // sx)) < 0.3).astype(np.uint8)
        up = upscale(m, (m.shape[0] * sy, m.shape[1] * sx))
        assert np.array_equal(up, np.repeat(np.repeat(m, sy, 0), sx, 1))


def test_params_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match="pixel_threshold"):
        PostprocessParams(pixel_threshold=(0.5, 0.5, 1.5, 0.5))
    with pytest.raises(ValidationError, match="presence_threshold"):
        PostprocessParams(presence_threshold=(-0.1, 0.5, 0.5, 0.5))
    with pytest.raises(ValidationError, match="min_area"):
        PostprocessParams(min_area=(1, 2, 3))
    with pytest.raises(ValidationError, match="min_component"):
        PostprocessParams(min_component=(1, 2, 3, 4, 5))
    with pytest.raises(ValidationError, match="min_component"):
        PostprocessParams(min_component=(1, 2, -3, 4))
    with pytest.raises(ValidationError, match="gate"):
        PostprocessParams(gate="maybe")
    with pytest.raises(ValidationError, match="Extra inputs"):
        PostprocessParams(threshold=0.5)  # type: ignore[call-arg]
    params = PostprocessParams.model_validate({"min_area": [1, 2, 3, 4]})  # lists from YAML/JSON are fine
    assert params.min_area == (1, 2, 3, 4)
    assert PostprocessParams.model_validate_json(params.model_dump_json()) == params
    with pytest.raises(ValidationError, match="frozen"):
        params.gate = "soft"  # type: ignore[misc]


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, h, w\)"):
        postprocess(np.zeros((3, 64, 400), np.float32), None, PostprocessParams())
    with pytest.raises(ValueError, match=r"presence of shape \(4,\)"):
        postprocess(np.zeros((4, 64, 400), np.float32), np.zeros(3, np.float32), PostprocessParams())
    with pytest.raises(ValueError, match="batch sizes differ"):
        postprocess_batch(np.zeros((2, 4, 8, 50), np.float32), np.zeros((3, 4)), PostprocessParams())


def test_empty_input_and_batch() -> None:
    res = postprocess(np.zeros((4, 64, 400), np.float32), np.zeros(4, np.float32), PostprocessParams())
    assert res.defects == () and res.masks.sum() == 0 and res.presence == (0.0, 0.0, 0.0, 0.0)
    batch = np.stack([blob_probs(), np.zeros((4, 256, 1600), np.float32)])
    results = postprocess_batch(batch, np.full((2, 4), 0.9, np.float32), PostprocessParams())
    assert [r.classes for r in results] == [(3,), ()]
    assert [len(r.defects) for r in postprocess_batch(batch, None, PostprocessParams(**NO_AREAS))] == [3, 0]
