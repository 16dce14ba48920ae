from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from steel_edge.data.rle import HEIGHT, WIDTH, RLEError, area, decode, encode, parse_runs


def test_round_trip_every_real_label(severstal_dir: Path) -> None:
    with (severstal_dir / "train.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 37
    for row in rows:
        rle = row["EncodedPixels"]
        mask = decode(rle)
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
        assert int(mask.sum()) == area(rle) > 0
        assert encode(mask) == rle, row["ImageId"]


def test_column_major_one_indexed() -> None:
    # pixel 1 is (row 0, col 0); pixel 257 is (row 0, col 1): numbering runs down each column first
    mask = decode("1 2 257 1", (256, 4))
    assert mask[0, 0] == mask[1, 0] == mask[0, 1] == 1
    assert mask.sum() == 3
    assert encode(mask) == "1 2 257 1"


def test_run_across_column_boundary() -> None:
    mask = decode("255 4", (256, 3))
    assert mask[254:, 0].tolist() == [1, 1] and mask[:2, 1].tolist() == [1, 1]


def test_random_masks_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((32, 50)) < rng.random()).astype(np.uint8)
        assert np.array_equal(decode(encode(mask), mask.shape), mask)


def test_empty_and_full() -> None:
    assert encode(np.zeros((HEIGHT, WIDTH), np.uint8)) == ""
    assert decode("").sum() == 0
    assert encode(np.ones((4, 5), bool)) == "1 20"


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number"),
        ("409600 2", "out of bounds"),
        ("0 5", "1-indexed"),
        ("10 0", "length 0"),
        ("100 5 50 5", "unsorted"),
        ("100 5 102 5", "overlapping"),
        ("1 x", "not a non-negative integer"),
    ],
)
def test_invalid_rle_is_rejected(rle: str, message: str) -> None:
    with pytest.raises(RLEError, match=message):
        parse_runs(rle)
    with pytest.raises(RLEError):
        decode(rle)


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode(np.zeros((2, 3, 4)))
