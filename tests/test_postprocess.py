from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from steel_edge.data.rle import decode
from steel_edge.postprocess import PostprocessParams, postprocess

NO_AREAS = {"min_area": (0, 0, 0, 0), "min_component": (0, 0, 0, 0)}


def blob_probs(shape: tuple[int, int] = (256, 1600)) -> np.ndarray:
    probs = np.zeros((4, *shape), np.float32)
    probs[2, 100:150, 200:300] = 0.9  # class 3: 5000 px
    probs[2, 10:15, 10:15] = 0.8  # class 3 speck: 25 px
    probs[0, 50:60, 500:520] = 0.7  # class 1: 200 px
    return probs


def test_rules_in_order() -> None:
    res = postprocess(blob_probs(), None, PostprocessParams())
    # class 1's 200 px blob survives min_component 150 but not min_area 600; class 3's speck goes
    assert [(d.class_id, d.area_px, d.bbox) for d in res.defects] == [(3, 5000, (200, 100, 100, 50))]
    assert res.masks[2].sum() == 5000 and res.masks[0].sum() == 0
    assert res.defects[0].score == pytest.approx(0.9)
    assert res.classes == (3,)


def test_no_rules_keeps_everything() -> None:
    res = postprocess(blob_probs(), None, PostprocessParams(**NO_AREAS))
    assert sorted(d.area_px for d in res.defects) == [25, 200, 5000]


def test_hard_and_soft_gate() -> None:
    presence = np.array([0.9, 0.1, 0.3, 0.1], np.float32)
    hard = postprocess(blob_probs(), presence, PostprocessParams(**NO_AREAS))
    assert {d.class_id for d in hard.defects} == {1}  # class 3 gated off at 0.3 < 0.5
    soft = postprocess(blob_probs(), presence, PostprocessParams(gate="soft", pixel_threshold=(0.5,) * 4, **NO_AREAS))
    # soft: 0.7 * 0.9 = 0.63 keeps class 1; 0.9 * 0.3 = 0.27 drops class 3
    assert {d.class_id for d in soft.defects} == {1}
    none = postprocess(blob_probs(), presence, PostprocessParams(gate="none", **NO_AREAS))
    assert {d.class_id for d in none.defects} == {1, 3}


def test_reduced_resolution_gives_frame_pixels() -> None:
    low = np.zeros((4, 64, 400), np.float32)
    low[3, 10:20, 30:50] = 0.95  # 200 low-res px = 3200 frame px at stride 4
    res = postprocess(low, None, PostprocessParams(), frame_size=(256, 1600), with_rle=True)
    (d,) = res.defects
    assert d.bbox == (120, 40, 80, 40) and d.area_px == 3200
    assert res.masks.shape == (4, 256, 1600) and res.masks[3].sum() == 3200
    assert d.rle is not None and np.array_equal(decode(d.rle), res.masks[3])


def test_bad_shapes_and_params() -> None:
    with pytest.raises(ValueError, match="one integer factor"):
        postprocess(np.zeros((4, 100, 300), np.float32), None, PostprocessParams())
    with pytest.raises(ValueError, match=r"\(4, h, w\)"):
        postprocess(np.zeros((3, 64, 400), np.float32), None, PostprocessParams())
    with pytest.raises(ValidationError, match="pixel_threshold"):
        PostprocessParams(pixel_threshold=(0.5, 0.5, 1.5, 0.5))
    with pytest.raises(ValidationError, match="min_area"):
        PostprocessParams(min_area=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        PostprocessParams(threshold=0.5)  # type: ignore[call-arg]


def test_empty_input() -> None:
    res = postprocess(np.zeros((4, 64, 400), np.float32), np.zeros(4, np.float32), PostprocessParams())
    assert res.defects == () and res.masks.sum() == 0 and res.presence == (0.0, 0.0, 0.0, 0.0)
