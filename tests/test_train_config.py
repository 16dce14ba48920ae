"""Training config and split: light, no TensorFlow needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from steel_edge.configfile import ConfigError
from steel_train.config import load_train_config
from steel_train.split import stratified_split


def test_kind_defaults_and_repo_yaml() -> None:
    seg = load_train_config("seg")
    assert seg.model_kind == "seg" and seg.model.input_width == 1600 and seg.data.crop_width == 512
    cls = load_train_config("cls")
    assert (cls.model.input_height, cls.model.input_width) == (128, 128)
    base = load_train_config("baseline")
    assert (base.model.input_height, base.model.input_width) == (120, 120)
    assert seg.postprocess.min_area == (600, 600, 900, 2000)


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("config_version: 1\ndata:\n  batch_size: 0\n  bogus: true\nmodel:\n  output_stride: 3\n")
    with pytest.raises(ConfigError) as info:
        load_train_config("seg", path)
    problems = info.value.problems
    assert any(p.startswith(f"{path}:3: data.batch_size:") for p in problems)
    assert any(p.startswith(f"{path}:4: data.bogus: Extra inputs") for p in problems)
    assert any(f"{path}:6: model" in p and "output_stride" in p for p in problems)


def test_flag_overrides_and_flag_errors(tmp_path: Path) -> None:
    cfg = load_train_config("seg", None, {"fit.epochs": 3, "fit.seed": None, "data.augment.hflip": False})
    assert cfg.fit.epochs == 3 and cfg.fit.seed == 0 and cfg.data.augment.hflip is False
    with pytest.raises(ConfigError, match="command line: fit.learning_rate"):
        load_train_config("seg", None, {"fit.learning_rate": -1})


def test_pretraining_and_tuning_keys() -> None:
    from steel_edge.configfile import parse_set_flags

    cfg = load_train_config("seg", None, parse_set_flags(["postprocess.tune_keys=[pixel_threshold, min_area]"]))
    assert cfg.postprocess.tune_keys == ["pixel_threshold", "min_area"]
    assert len(load_train_config("seg").postprocess.tune_keys) == 4  # the default searches all four
    for bad, message in (("[gate]", "tune_keys"), ("[]", "tune_keys")):
        with pytest.raises(ConfigError, match=message):
            load_train_config("seg", None, parse_set_flags([f"postprocess.tune_keys={bad}"]))
    assert load_train_config("cls", None, {"model.arch": "seg_encoder"}).model.arch == "seg_encoder"
    with pytest.raises(ConfigError, match="is for the cls model"):
        load_train_config("seg", None, {"model.arch": "seg_encoder"})
    with pytest.raises(ConfigError, match="is for the seg model"):
        load_train_config("cls", None, {"fit.init_encoder": "x"})
    with pytest.raises(ConfigError, match="not both"):
        load_train_config("seg", None, {"fit.init_encoder": "x", "fit.init_weights": "y"})


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  batch_size: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml:3: not valid YAML"):
        load_train_config("seg", path)


def test_stratified_split_is_deterministic_and_stratified() -> None:
    keys = [(3,)] * 50 + [(1,)] * 10 + [()] * 40 + [(2, 4)]
    train, val = stratified_split(keys, 0.2, seed=7)
    assert (train, val) == stratified_split(keys, 0.2, seed=7)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(keys)))
    val_keys = [keys[i] for i in val]
    assert val_keys.count((3,)) == 10 and val_keys.count((1,)) == 2 and val_keys.count(()) == 8
    assert (2, 4) not in val_keys  # a group of one stays in training
    assert stratified_split(keys, 0.2, seed=8) != (train, val)


def test_adding_a_group_leaves_other_groups_split_alone() -> None:
    real = [("real", (3,))] * 20 + [("real", ())] * 5
    synth = [("synth", (3,))] * 40 + [("synth", (1,))] * 10
    _, val_alone = stratified_split(real, 0.2, seed=0)
    _, val_mixed = stratified_split(synth + real, 0.2, seed=0)
    assert [i - len(synth) for i in val_mixed if i >= len(synth)] == val_alone


def test_kfold_covers_every_image_once() -> None:
    from steel_train.split import kfold_split

    keys = [("real", (3,))] * 13 + [("real", (4,))] * 7 + [("real", ())] * 3 + [("real", (1, 2))]
    seen: list[int] = []
    for fold in range(3):
        train, val = kfold_split(keys, 3, fold, seed=0)
        assert sorted(train + val) == list(range(len(keys))) and set(train).isdisjoint(val)
        assert 7 <= len(val) <= 9
        seen += val
    assert sorted(seen) == list(range(len(keys)))
    with pytest.raises(ValueError, match="fold 3"):
        kfold_split(keys, 3, 3, seed=0)
    with pytest.raises(ConfigError, match="fold 4 does not exist"):
        load_train_config("seg", None, {"data.folds": 3, "data.fold": 4})
    with pytest.raises(ConfigError, match="either folds"):
        load_train_config("seg", None, {"data.folds": 3, "data.oof_folds": 3})


def test_kfold_of_one_folder_ignores_other_folders() -> None:
    from steel_train.split import kfold_split

    real = [("real", (3,))] * 13 + [("real", (4,))] * 7 + [("real", ())] * 3
    synth = [("synth", (3,))] * 40 + [("synth", ())] * 35
    for fold in range(3):
        _, alone = kfold_split(real, 3, fold, seed=0)
        _, mixed = kfold_split(synth + real, 3, fold, seed=0)
        assert [i - len(synth) for i in mixed if i >= len(synth)] == alone


def test_seg_sizes_must_halve_exactly_through_the_network() -> None:
    """Pooled by 4 with 4 stages, a 1600-wide tile would reach an odd width and the decoder's skip additions
    would fail at the first full-size validation frame; the config says so before anything trains."""
    with pytest.raises(ConfigError, match=r"model\.input_width=1600 not a multiple of 128"):
        load_train_config("seg", None, {"model.input_downsample": 4})
    with pytest.raises(ConfigError, match=r"data\.crop_width=300 not a multiple of 64"):
        load_train_config("seg", None, {"model.input_downsample": 2, "data.crop_width": 300})
    ok = load_train_config("seg", None, {"model.input_downsample": 4, "model.depth": 3})
    assert ok.model.input_width % (4 * 2**4) == 0
    load_train_config("cls", None, {"model.input_width": 200, "model.input_height": 200})  # global pooling: any size


def test_test_split_is_fixed_by_folder_name_and_class_set() -> None:
    """The protocol's test set: the same frames wherever the folder lives and whatever other folders join."""
    from steel_train.split import test_split

    strata = [(3,)] * 40 + [(1,)] * 10 + [()] * 10
    kept, test = test_split(["more"] * 60, strata, 0.2, 0)
    assert len(test) == 12 and sorted(kept + test) == list(range(60))
    assert sum(strata[i] == (1,) for i in test) == 2  # stratified: 20% of each class set
    # Another folder in front shifts the indices, not the choice.
    _, test2 = test_split(["other"] * 5 + ["more"] * 60, [(3,)] * 5 + strata, 0.2, 0)
    assert [i - 5 for i in test2 if i >= 5] == test
    assert test_split(["more"] * 60, strata, 0.2, 1)[1] != test  # another seed, another protocol
    assert test_split(["more"] * 60, strata, 0.0, 0) == (list(range(60)), [])


def test_test_split_and_out_of_fold_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        load_train_config("seg", None, {"data.test_fraction": 0.2, "data.oof_folds": 3})
