from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from steel_edge.data.errors import DataError
from steel_edge.data.imageio import ImageReadError, image_size, read_gray, write_jpeg
from steel_edge.data.rle import encode
from steel_edge.data.severstal import load_severstal, write_severstal_csv

GOOD = "1 10 300 20"


def make_dataset(root: Path, csv_text: str, names: tuple[str, ...] = ("a.jpg", "b.png", "c.jpg")) -> Path:
    images = root / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    gray = np.full((256, 1600), 120, np.uint8)
    for name in names:
        if name.endswith(".png"):
            cv2.imwrite(str(images / name), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        else:
            write_jpeg(images / name, gray)
    (root / "train.csv").write_text(csv_text)
    return root


def test_real_sample_loads(severstal_dir: Path) -> None:
    ds = load_severstal(severstal_dir)
    assert ds.csv_form == "current"
    assert len(ds) == 31
    assert ds.class_counts() == {1: 3, 2: 3, 3: 18, 4: 13}
    assert ds.defect_free == 3
    suffixes = {item.path.suffix for item in ds.images}
    assert suffixes == {".jpg", ".png"}
    for item in ds.images[:4]:
        image = item.read()
        assert image.shape == (256, 1600) and image.dtype == np.uint8
        masks = item.masks()
        assert masks.shape == (4, 256, 1600)
        assert [c for c in range(1, 5) if masks[c - 1].any()] == list(item.classes)
        # the real labels never overlap between classes
        assert masks.sum(axis=0).max() <= 1


def test_current_and_legacy_forms_agree(tmp_path: Path) -> None:
    current = make_dataset(tmp_path / "cur", f"ImageId,ClassId,EncodedPixels\na.jpg,3,{GOOD}\nb.png,1,5 5\n")
    legacy_rows = ["ImageId_ClassId,EncodedPixels"]
    for name, labels in (("a.jpg", {3: GOOD}), ("b.png", {1: "5 5"}), ("c.jpg", {})):
        legacy_rows += [f"{name}_{c},{labels.get(c, '')}" for c in range(1, 5)]
    legacy = make_dataset(tmp_path / "leg", "\n".join(legacy_rows) + "\n")
    a, b = load_severstal(current), load_severstal(legacy)
    assert (a.csv_form, b.csv_form) == ("current", "legacy")
    assert [(i.image_id, dict(i.rles)) for i in a.images] == [(i.image_id, dict(i.rles)) for i in b.images]
    assert a.defect_free == b.defect_free == 1


def test_write_current_form_round_trip(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, "ImageId,ClassId,EncodedPixels\n")
    mask = np.zeros((256, 1600), np.uint8)
    mask[10:20, 100:130] = 1
    n = write_severstal_csv(root / "train.csv", [("c.jpg", 4, encode(mask)), ("a.jpg", 2, GOOD), ("b.png", 1, "")])
    assert n == 2
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "ImageId,ClassId,EncodedPixels" and lines[1].startswith("a.jpg,2,")
    ds = load_severstal(root)
    assert np.array_equal(ds.images[2].masks()[3], mask)


BAD_ROWS = [
    ("a.jpg,3,1 2 3", "odd number"),
    ("a.jpg,3,409590 20", "out of bounds"),
    ("a.jpg,3,300 5 100 5", "unsorted"),
    ("a.jpg,3,100 5 102 5", "overlapping"),
    ("a.jpg,5,1 10", "ClassId 5 outside 1-4"),
    ("a.jpg,0,1 10", "ClassId 0 outside 1-4"),
    ("a.jpg,x,1 10", "not an integer"),
    ("zzz.jpg,1,1 10", "image zzz.jpg not found"),
    (f"b.png,3,{GOOD}", "duplicate row for image b.png class 3 \\(first at line 2\\)"),
    ("a.jpg,3", "expected 3 columns"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_row_names_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    text = f"ImageId,ClassId,EncodedPixels\nb.png,3,{GOOD}\nc.jpg,1,1 5\n{row}\n"
    root = make_dataset(tmp_path, text)
    with pytest.raises(DataError, match=message) as info:
        load_severstal(root)
    assert info.value.line == 4
    assert info.value.path == root / "train.csv"
    assert "train.csv:4: " in str(info.value)


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_skip_policy_keeps_good_rows(tmp_path: Path, row: str, message: str) -> None:
    text = f"ImageId,ClassId,EncodedPixels\nb.png,3,{GOOD}\nc.jpg,1,1 5\n{row}\n"
    ds = load_severstal(make_dataset(tmp_path, text), on_error="skip")
    assert [str(i).split(": ", 1)[0].endswith("train.csv:4") for i in ds.issues] == [True]
    by_id = {i.image_id: i for i in ds.images}
    assert by_id["b.png"].rles == {3: GOOD} and by_id["c.jpg"].rles == {1: "1 5"}
    assert len(ds) == 3  # no image lost; the bad row's mask is dropped, not half-applied


def test_legacy_row_without_class_suffix(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, "ImageId_ClassId,EncodedPixels\na.jpg_1,\na.jpg,1 4\n")
    with pytest.raises(DataError, match=r"train.csv:3: .*no '_<class>' suffix"):
        load_severstal(root)


def test_unknown_header(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, "image,label,rle\n")
    with pytest.raises(DataError, match="train.csv:1: unknown header"):
        load_severstal(root, on_error="skip")  # a wrong header is fatal under any policy


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="label file not found"):
        load_severstal(tmp_path)


def test_wrong_image_size(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, f"ImageId,ClassId,EncodedPixels\na.jpg,3,{GOOD}\n")
    write_jpeg(root / "train_images" / "a.jpg", np.zeros((200, 200), np.uint8))
    with pytest.raises(DataError, match=r"a.jpg: image is 200x200, expected 1600x256 \(labelled at train.csv line 2\)"):
        load_severstal(root)
    ds = load_severstal(root, on_error="skip")
    assert sorted(i.image_id for i in ds.images) == ["b.png", "c.jpg"] and len(ds.issues) == 1


def test_unreadable_image(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, "ImageId,ClassId,EncodedPixels\n")
    (root / "train_images" / "c.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="c.jpg: empty file"):
        load_severstal(root)


def test_image_header_reader(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "x.jpg", np.zeros((31, 77), np.uint8))
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((13, 17), np.uint8))
    assert image_size(tmp_path / "x.jpg") == (77, 31)
    assert image_size(tmp_path / "x.png") == (17, 13)
    (tmp_path / "t.jpg").write_bytes((tmp_path / "x.jpg").read_bytes()[:20])
    with pytest.raises(ImageReadError, match="t.jpg: truncated JPEG"):
        image_size(tmp_path / "t.jpg")
    (tmp_path / "n.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="not a PNG or JPEG"):
        image_size(tmp_path / "n.png")
    with pytest.raises(ImageReadError, match="expected 1600x256"):
        read_gray(tmp_path / "x.jpg", expect=(256, 1600))
