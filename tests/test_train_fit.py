"""One short epoch of each model on tiny generated data: the whole fit -> run folder -> evaluate path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steel_edge.data.imageio import write_jpeg

pytestmark = [pytest.mark.tf, pytest.mark.slow]

TINY_SEG = {
    "fit.epochs": 1, "fit.steps_per_epoch": 2, "data.batch_size": 2, "data.crop_width": 256,
    "model.width": 8, "model.depth": 3,
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from steel_edge.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, images=16, seed=3)
    return out


def _check_run(run: Path, kind: str) -> dict:
    for name in ("model.keras", "config.yaml", "run.json", "history.csv", "metrics.json",
                 "plots/history.png", "plots/class_counts.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["model_kind"] == kind and len(info["data_fingerprint"]) == 64 and info["code_version"]
    assert not (run / "checkpoint.keras").exists()
    return json.loads((run / "metrics.json").read_text())


def test_seg_fit_tune_evaluate(synth_dir: Path, tmp_path: Path) -> None:
    from steel_train.config import load_train_config
    from steel_train.evaluate import evaluate_path
    from steel_train.fit import fit

    cfg = load_train_config("seg", None, TINY_SEG)
    fit([synth_dir], cfg, tmp_path / "run")
    metrics = _check_run(tmp_path / "run", "seg")
    assert 0.0 <= metrics["dice_mean"] <= 1.0 and set(metrics["dice_per_class"]) == {"1", "2", "3", "4"}
    assert (tmp_path / "run" / "postprocess.json").is_file()
    assert (tmp_path / "run" / "plots" / "worst_val.png").is_file()
    result = evaluate_path(tmp_path / "run", synth_dir)
    assert result["images"] == 16 and 0.0 <= result["dice_all_empty"] <= 1.0


def test_baseline_fit(synth_dir: Path, tmp_path: Path) -> None:
    from steel_train.config import load_train_config
    from steel_train.fit import fit

    cfg = load_train_config("baseline", None, {"fit.epochs": 1, "data.batch_size": 4})
    fit([synth_dir], cfg, tmp_path / "run")
    metrics = _check_run(tmp_path / "run", "baseline")
    assert 0.0 <= metrics["accuracy"] <= 1.0 and (tmp_path / "run" / "plots" / "confusion.png").is_file()


def test_cls_fit_and_cli_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steel_train.cli import main

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    stripes = 60 * np.sin(np.arange(48) / 2.0)
    for label in ("horizontal", "vertical", "spots"):
        for i in range(8):
            img = rng.normal(128, 10, (48, 48))
            if label == "horizontal":
                img += stripes[:, None]
            elif label == "vertical":
                img += stripes[None, :]
            else:
                img[rng.integers(0, 48, 30), rng.integers(0, 48, 30)] = 250
            (data / label).mkdir(parents=True, exist_ok=True)
            write_jpeg(data / label / f"{i}.jpg", np.clip(img, 0, 255).astype(np.uint8))
    code = main(["fit", "--data", str(data), "--model", "cls", "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--set", "model.input_height=32", "--set", "model.input_width=32", "--set", "model.width=8",
                 "--set", "model.depth=2", "--set", "data.batch_size=8"])
    assert code == 0
    _check_run(tmp_path / "run", "cls")
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 24 and 0.0 <= result["accuracy"] <= 1.0
    assert result["classes"] == ["horizontal", "spots", "vertical"]
