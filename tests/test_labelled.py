from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steel_edge.data.errors import DataError
from steel_edge.data.imageio import read_gray, write_jpeg
from steel_edge.data.labelled import detect_layout, load_labelled

NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def test_neu_loads(neu_dir: Path) -> None:
    ds = load_labelled(neu_dir)
    assert detect_layout(neu_dir) == "labelled"
    assert ds.form == "csv" and ds.classes == NEU_CLASSES
    assert len(ds) == 1080
    assert set(ds.class_counts().values()) == {180}
    image = read_gray(ds.items[0].path)
    assert image.shape == (200, 200)


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(path, np.zeros((20, 20), np.uint8))


def test_folder_per_class(tmp_path: Path) -> None:
    for cls, n in (("scratches", 2), ("patches", 3)):
        for i in range(n):
            _write(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "patches" / "notes.txt").write_text("ignored")
    ds = load_labelled(tmp_path)
    assert ds.form == "folders" and ds.classes == ("patches", "scratches")
    assert ds.class_counts() == {"patches": 3, "scratches": 2}
    assert ds.index("scratches") == 1


def test_csv_with_images_subfolder(tmp_path: Path) -> None:
    _write(tmp_path / "images" / "a.jpg")
    _write(tmp_path / "b.jpg")
    (tmp_path / "labels.csv").write_text("filename,class\na.jpg,x\nb.jpg,y\n")
    ds = load_labelled(tmp_path)
    assert [(i.path.name, i.label) for i in ds.items] == [("a.jpg", "x"), ("b.jpg", "y")]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a.jpg,x\nmissing.jpg,y\n", "labels.csv:3: image 'missing.jpg' not found"),
        ("a.jpg,x\na.jpg,y\n", "labels.csv:3: duplicate file 'a.jpg' \\(first at line 2\\)"),
        ("a.jpg,x\nbad.jpg,\n", "labels.csv:3: expected a file name and a class"),
        ("a.jpg,x\nbroken.jpg,y\n", "labels.csv:3: broken.jpg: truncated JPEG"),
    ],
)
def test_csv_errors(tmp_path: Path, rows: str, message: str) -> None:
    _write(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    (tmp_path / "labels.csv").write_text("filename,class\n" + rows)
    with pytest.raises(DataError, match=message):
        load_labelled(tmp_path)
    ds = load_labelled(tmp_path, on_error="skip")
    assert [i.path.name for i in ds.items] == ["a.jpg"] and len(ds.issues) == 1


def test_bad_header_and_empty(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,label\n")
    with pytest.raises(DataError, match="labels.csv:1: header must start with 'filename,class'"):
        load_labelled(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no labelled images"):
        load_labelled(empty)
