"""One short epoch of each model on tiny generated data: the whole fit -> run folder -> evaluate path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from steel_edge.data.imageio import write_jpeg

pytestmark = [pytest.mark.tf, pytest.mark.slow]

TINY_SEG = {
    "fit.epochs": 1, "fit.steps_per_epoch": 2, "data.batch_size": 2, "data.crop_width": 256,
    "model.width": 8, "model.depth": 3,
}
NO_TEST = {"data.test_fraction": 0.0}  # out-of-fold scoring uses every image: no test split beside it


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
    gain = result["gain_over_all_empty"]  # per image, paired with its own all-empty score
    assert gain["images"] == 16
    assert gain["mean"] == pytest.approx(result["dice_mean"] - result["dice_all_empty"])
    assert gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]


def test_init_weights_from_a_run(synth_dir: Path, tmp_path: Path) -> None:
    """fit.init_weights: fine-tuning starts from the saved weights; another architecture is refused by name."""
    import keras

    from steel_train.config import load_train_config
    from steel_train.fit import fit, load_initial_weights
    from steel_train.models import build_seg

    first = load_train_config("seg", None, TINY_SEG)
    fit([synth_dir], first, tmp_path / "pre")
    saved = keras.models.load_model(tmp_path / "pre" / "model.keras", compile=False).get_weights()
    fresh = build_seg(first.model)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, fresh.get_weights(), strict=True))
    load_initial_weights(fresh, str(tmp_path / "pre"))
    assert all(np.array_equal(a, b) for a, b in zip(saved, fresh.get_weights(), strict=True))
    wider = load_train_config("seg", None, {**TINY_SEG, "model.width": 12})
    with pytest.raises(ValueError, match="pre/model.keras: its architecture differs"):
        load_initial_weights(build_seg(wider.model), str(tmp_path / "pre"))
    with pytest.raises(ValueError, match="no such model file"):
        load_initial_weights(fresh, str(tmp_path / "missing.keras"))
    tuned = load_train_config("seg", None, {**TINY_SEG, "fit.init_weights": str(tmp_path / "pre")})
    fit([synth_dir], tuned, tmp_path / "fine")
    assert _check_run(tmp_path / "fine", "seg")["images"] > 0


def test_init_encoder_from_a_cls_run(synth_dir: Path, tmp_path: Path) -> None:
    """fit.init_encoder: a cls model with the seg encoder (model.arch=seg_encoder) pre-trains a seg encoder."""
    import keras

    from steel_train.config import load_train_config
    from steel_train.fit import fit, load_encoder_weights
    from steel_train.models import ENCODER_PREFIX, build_seg

    data = tmp_path / "labelled"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = ["filename,class"]
    for i in range(12):
        label = ("dark", "bright")[i % 2]
        write_jpeg(data / f"{i}.jpg", rng.integers(0, 90, (40, 40)).astype(np.uint8) + (0 if i % 2 else 120))
        rows.append(f"{i}.jpg,{label}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    arch = {"model.arch": "seg_encoder", "model.width": 8, "model.depth": 3, "model.input_height": 32,
            "model.input_width": 32}
    cls = load_train_config("cls", None, {**arch, "fit.epochs": 1, "data.batch_size": 4})
    fit([data], cls, tmp_path / "neu")
    src = keras.models.load_model(tmp_path / "neu" / "model.keras", compile=False)
    seg_cfg = load_train_config("seg", None, {**TINY_SEG, "fit.init_encoder": str(tmp_path / "neu")})
    seg = build_seg(seg_cfg.model)
    encoder = [layer.name for layer in seg.layers if layer.name.startswith(ENCODER_PREFIX)]
    assert len(encoder) == 2 + 3 * 2 * 4  # stem conv + BN, then per stage two blocks of dw, dw_bn, pw, pw_bn
    load_encoder_weights(seg, str(tmp_path / "neu"))
    for name in encoder:
        for a, b in zip(src.get_layer(name).get_weights(), seg.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The heads start random; another width or depth is refused with the layer or the stage named.
    wider = build_seg(load_train_config("seg", None, {**TINY_SEG, "model.width": 12}).model)
    with pytest.raises(ValueError, match=r"layer enc_stem has shapes .* use the same model.width"):
        load_encoder_weights(wider, str(tmp_path / "neu"))
    deeper = build_seg(load_train_config("seg", None, {**TINY_SEG, "model.depth": 4}).model)
    with pytest.raises(ValueError, match=r"other stages .*enc_4a"):
        load_encoder_weights(deeper, str(tmp_path / "neu"))
    with pytest.raises(ValueError, match="has no seg encoder"):
        plain = load_train_config("cls", None, {"model.width": 8, "model.depth": 2, "model.input_height": 32,
                                                 "model.input_width": 32, "fit.epochs": 1})
        fit([data], plain, tmp_path / "plain")
        load_encoder_weights(seg, str(tmp_path / "plain"))
    fit([synth_dir], seg_cfg, tmp_path / "seg")  # the whole path: config -> fit -> run folder
    assert _check_run(tmp_path / "seg", "seg")["images"] > 0


def test_seg_out_of_fold_run(synth_dir: Path, tmp_path: Path) -> None:
    """data.oof_folds: fold models, nested tuning on out-of-fold predictions, a final model on every image."""
    from steel_edge.data.synth import write_dataset
    from steel_edge.postprocess import PostprocessParams
    from steel_train.config import load_train_config
    from steel_train.evaluate import evaluate_path
    from steel_train.oof import fit_oof

    second = tmp_path / "second"
    write_dataset(second, images=8, seed=4)
    # Tune on the second folder only (as with real frames beside synthetic ones); score both.
    cfg = load_train_config("seg", None, {**TINY_SEG, **NO_TEST, "data.oof_folds": 2, "postprocess.tune_on": [1]})
    result = fit_oof([synth_dir, second], cfg, tmp_path / "run")
    run = tmp_path / "run"
    metrics = _check_run(run, "seg")
    assert metrics == json.loads(json.dumps(result["metrics"], default=str))
    oof = metrics["oof"]
    # Every image scored exactly once, by the fold model that did not train on it.
    assert metrics["split"] == "out-of-fold" and metrics["images"] == 24
    assert oof["images"] == 8 and oof["tune_on"] == [1] and sum(f["images"] for f in oof["per_fold"]) == 8
    assert sorted(g["images"] for g in metrics["per_group"].values()) == [8, 16]
    held_out = []
    for f in range(2):
        fold_run = run / "folds" / f"fold{f}"
        info = json.loads((fold_run / "run.json").read_text())
        assert info["val_images"] + info["train_images"] == 24
        held_out += json.loads((fold_run / "split.json").read_text())["validation"]
    every = [*synth_dir.glob("train_images/*"), *second.glob("train_images/*")]
    assert sorted(held_out) == sorted(str(p) for p in every)
    # The final model trained on all 24 images, with no validation split.
    info = json.loads((run / "run.json").read_text())
    assert info["train_images"] == 24 and info["val_images"] == 0 and info["oof_folds"] == 2
    assert oof["postprocess"] in ("default", "tuned") and 0.0 <= oof["dice_default_params"] <= 1.0
    expected = oof["dice_tuned_on_other_folds"] if oof["postprocess"] == "tuned" else oof["dice_default_params"]
    assert metrics["dice_mean_estimate"] == expected
    # The gain over all-empty is over the tune_on folder's 8 images: the estimate minus their all-empty Dice.
    gain = oof["gain_over_all_empty"]
    tuned_group = next(g for name, g in metrics["per_group"].items() if name.startswith("1:"))
    assert gain["images"] == 8 and gain["mean"] == pytest.approx(expected - tuned_group["dice_all_empty"])
    assert gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    params = PostprocessParams.model_validate_json((run / "postprocess.json").read_text())
    if oof["postprocess"] == "default":
        assert list(params.min_area) == list(cfg.postprocess.min_area)
    assert (run / "plots" / "worst_oof.png").is_file()
    assert "oof_folds: 2" in (run / "config.yaml").read_text()
    assert evaluate_path(run, synth_dir)["images"] == 16
    bad = load_train_config("seg", None, {**TINY_SEG, **NO_TEST, "data.oof_folds": 2, "postprocess.tune_on": [2]})
    with pytest.raises(ValueError, match="tune_on"):
        fit_oof([synth_dir, second], bad, tmp_path / "bad")  # refused before any training


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


def test_soup_averages_fine_tunings(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fit.soup: several fine-tunings from one pre-trained model, differently seeded; the saved model is their mean."""
    import keras

    from steel_train import fit as fit_module
    from steel_train.config import load_train_config

    fit_module.fit([synth_dir], load_train_config("seg", None, TINY_SEG), tmp_path / "pre")
    seen: list[list[np.ndarray]] = []
    average = fit_module.average_weights

    def spy(members: list[list[np.ndarray]]) -> list[np.ndarray]:
        seen.extend(members)
        return average(members)

    monkeypatch.setattr(fit_module, "average_weights", spy)
    cfg = load_train_config("seg", None, {**TINY_SEG, "fit.epochs": 2, "fit.soup": 2,
                                          "fit.init_weights": str(tmp_path / "pre")})
    fit_module.fit([synth_dir], cfg, tmp_path / "soup")
    assert len(seen) == 2
    # Each member trained on its own crops from the same start, so they differ; the model kept is their mean.
    assert any(not np.allclose(a, b) for a, b in zip(*seen, strict=True))
    saved = keras.models.load_model(tmp_path / "soup" / "model.keras", compile=False).get_weights()
    for kept, a, b in zip(saved, *seen, strict=True):
        np.testing.assert_allclose(kept, (a + b) / 2 if np.issubdtype(a.dtype, np.floating) else b, rtol=1e-6)
    _check_run(tmp_path / "soup", "seg")
    with (tmp_path / "soup" / "history.csv").open() as fh:
        members = [row.split(",")[0] for row in fh.read().splitlines()[1:]]
    assert members == ["0", "0", "1", "1"]  # both members' epochs, in one history (the plot marks the join)
    assert not list((tmp_path / "soup").glob("history_member*.csv"))
    assert json.loads((tmp_path / "soup" / "run.json").read_text())["soup"] == 2


def test_test_split_kept_apart_and_evaluate_scores_the_same_frames(synth_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """data.test_fraction: frames never trained, stopped or tuned on, scored at the end; evaluate --split test
    finds the same frames from the folder alone."""
    from steel_train.cli import main
    from steel_train.config import load_train_config
    from steel_train.fit import fit

    cfg = load_train_config("seg", None, {**TINY_SEG, "data.test_fraction": 0.25})
    fit([synth_dir], cfg, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["test"] and not set(split["test"]) & set(split["validation"])
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["images"] == len(split["test"]) and test["split"] == "test"
    for key in ("dice_mean", "dice_per_class", "precision_per_class", "recall_per_class", "dice_defective_pairs",
                "empty_pairs_predicted_empty", "gain_over_all_empty"):
        assert key in test, key
    assert (tmp_path / "run" / "plots" / "worst_test.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(synth_dir), "--split", "test",
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["images"] == test["images"] and again["test_split"] == {"fraction": 0.25, "seed": 0}
    assert again["dice_mean"] == pytest.approx(test["dice_mean"], abs=1e-6)

    # steel-train tune: the same run re-tuned with precision/recall floors on its own validation frames, no refit
    weights_before = (tmp_path / "run" / "model.keras").read_bytes()
    assert main(["tune", str(tmp_path / "run"), "--set", "postprocess.tune_min_recall=0.5",
                 "--set", "postprocess.tune_min_precision=0.5", "--json"]) == 0
    retuned = json.loads(capsys.readouterr().out)
    assert retuned["split"] == "validation" and retuned["images"] == len(split["validation"])
    assert retuned["test"]["images"] == test["images"]  # the same test frames, scored once more
    assert retuned["retuned"] == {"postprocess.tune_min_recall": 0.5, "postprocess.tune_min_precision": 0.5}
    assert {"precision", "recall", "floors_met"} <= set(retuned["tuning"][0])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["dice_mean"] == pytest.approx(retuned["dice_mean"])
    assert "tune_min_recall: 0.5" in (tmp_path / "run" / "config.yaml").read_text()
    assert (tmp_path / "run" / "model.keras").read_bytes() == weights_before
    assert main(["tune", str(tmp_path)]) == 2  # not a run folder: a clear error, exit 2
    assert "no model.keras" in capsys.readouterr().err
    # The tuned post-processing carries the skip rule (postprocess.tune_skip), what a cascade export needs.
    assert json.loads((tmp_path / "run" / "postprocess.json").read_text())["skip_below"] is not None
    # split.json holds absolute paths; a run written before that held them relative to where fit ran (as given on
    # the command line, e.g. ../shared/data/...): tune from that directory still finds its frames.
    assert all(Path(p).is_absolute() for p in split["validation"] + split["test"])
    relative = {k: [os.path.relpath(p, synth_dir.parent) for p in v] for k, v in split.items()}
    (tmp_path / "run" / "split.json").write_text(json.dumps(relative))
    monkeypatch.chdir(synth_dir.parent)
    assert main(["tune", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(split["validation"])


def test_interrupted_fit_resumes_at_its_last_epoch(synth_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from steel_train import fit as fit_module
    from steel_train.config import load_train_config

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    cfg = load_train_config("seg", None, {**TINY_SEG, "fit.epochs": 3})
    plain = fit_module.callbacks
    monkeypatch.setattr(fit_module, "callbacks", lambda *a, **k: [*plain(*a, **k), Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        fit_module.fit([synth_dir], cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "resume" / "training_metadata.json").read_text())["epoch"] == 2
    monkeypatch.setattr(fit_module, "callbacks", plain)
    other = load_train_config("seg", None, {**TINY_SEG, "fit.epochs": 4})
    with pytest.raises(ValueError, match="interrupted run of another config"):
        fit_module.fit([synth_dir], other, tmp_path / "run")
    result = fit_module.fit([synth_dir], cfg, tmp_path / "run")
    assert result["run"]["epochs_run"] == 1  # only the third epoch was left
    with (tmp_path / "run" / "history.csv").open() as fh:
        assert [row.split(",")[0] for row in fh.read().split()[1:]] == ["0", "1", "2"]
    assert not (tmp_path / "run" / "resume").exists()


def test_cross_validation_scores_every_image_once(tmp_path: Path) -> None:
    from steel_train.config import load_train_config
    from steel_train.cv import cross_validate

    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    for label in ("dark", "bright"):
        for i in range(6):
            (data / label).mkdir(parents=True, exist_ok=True)
            write_jpeg(data / label / f"{i}.jpg", rng.normal(80 if label == "dark" else 170, 10, (32, 32)).clip(0, 255)
                       .astype(np.uint8))
    cfg = load_train_config("cls", None, {"model.input_height": 32, "model.input_width": 32, "model.width": 8,
                                          "model.depth": 2, "data.batch_size": 4, "fit.epochs": 2})
    summary = cross_validate([data], cfg, tmp_path / "cv", folds=3)
    assert summary["images"] == 12 and len(summary["per_fold"]) == 3
    assert sum(row["images"] for row in summary["per_fold"]) == 12
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["accuracy_pooled"] == summary["accuracy_pooled"]
    for k in range(3):  # each fold ran its whole schedule and kept its last weights
        run_cfg = (tmp_path / "cv" / f"fold{k}" / "config.yaml").read_text()
        assert "restore_best: false" in run_cfg and f"fold: {k}" in run_cfg
    with pytest.raises(ValueError, match="cls and baseline"):
        cross_validate([data], load_train_config("seg"), tmp_path / "x")


def test_patch_stem_keeps_the_network_shape() -> None:
    """model.stem=patch: a learned stride-(2 x input_downsample) stem on full-resolution pixels, same outputs."""
    from steel_train.config import load_train_config
    from steel_train.models import build_seg

    pooled = build_seg(load_train_config("seg", None, {"model.width": 8, "model.depth": 3}).model)
    patch = build_seg(load_train_config("seg", None, {"model.width": 8, "model.depth": 3, "model.stem": "patch"}).model)
    x = np.random.default_rng(0).uniform(0, 255, (1, 256, 1600, 1)).astype(np.float32)
    a, b = pooled(x, training=False), patch(x, training=False)
    assert a["masks"].shape == b["masks"].shape == (1, 32, 200, 4) and b["presence"].shape == (1, 4)
    kernel = patch.get_layer("enc_stem").kernel
    assert tuple(kernel.shape) == (4, 4, 1, 8)  # sees every full-resolution pixel of its 4x4 patch
    assert "downsample" not in [layer.name for layer in patch.layers]
