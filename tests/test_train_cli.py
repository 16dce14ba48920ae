"""steel-train's light commands: synth, check-data, and how a bad row reaches the user (no TensorFlow needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steel_train.cli import main


def test_synth_then_check_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "d"), "--images", "6", "--seed", "2", "--json", "--quiet"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["images"] == 6
    assert main(["check-data", str(tmp_path / "d"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "severstal" and summary["images"] == 6 and summary["skipped"] == []
    assert summary["defect_free"] == written["defect_free"]


def _bad_folder(tmp_path: Path) -> Path:
    from steel_edge.data.synth import write_dataset

    write_dataset(tmp_path / "d", images=3, seed=4)
    csv = tmp_path / "d" / "train.csv"
    name = sorted((tmp_path / "d" / "train_images").iterdir())[0].name
    csv.write_text(csv.read_text() + f"{name},7,1 10\n")
    return tmp_path / "d"


def test_bad_row_rejected_with_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _bad_folder(tmp_path)
    line = len((data / "train.csv").read_text().splitlines())
    assert main(["check-data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"train.csv:{line}: ClassId 7 outside 1-4" in err


def test_bad_row_skipped_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _bad_folder(tmp_path)
    assert main(["check-data", str(data), "--on-error", "skip", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and len(summary["skipped"]) == 1 and "ClassId 7" in summary["skipped"][0]


def test_fit_rejects_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", "--data", str(tmp_path), "--model", "seg", "--out", str(tmp_path / "run"),
                 "--set", "data.batchsize=4"])
    assert code == 2
    assert "command line: data.batchsize: Extra inputs are not permitted" in capsys.readouterr().err
