"""fit.soup's parts that need no TensorFlow: the weight average, the merged history, the config rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steel_edge.configfile import ConfigError
from steel_train.config import load_train_config
from steel_train.fit import average_weights, merge_histories


def test_average_weights_means_floats_and_keeps_counters() -> None:
    a = [np.array([[1.0, 2.0]], np.float32), np.array(7, np.int64)]
    b = [np.array([[3.0, 6.0]], np.float32), np.array(9, np.int64)]
    c = [np.array([[5.0, 1.0]], np.float32), np.array(11, np.int64)]
    mean, counter = average_weights([a, b, c])
    np.testing.assert_array_equal(mean, np.array([[3.0, 3.0]], np.float32))
    assert mean.dtype == np.float32
    assert counter == 11 and counter.dtype == np.int64  # not averaged: a step counter or seed state
    with pytest.raises(ValueError, match="no models"):
        average_weights([])
    with pytest.raises(ValueError):  # models of different architectures do not average
        average_weights([a, a[:1]])


def test_merge_histories_keeps_every_member_in_order(tmp_path: Path) -> None:
    parts = []
    for member, loss in enumerate(("0.9,0.5", "0.8,0.4")):
        part = tmp_path / f"history_member{member}.csv"
        rows = [f"{epoch},{value}" for epoch, value in enumerate(loss.split(","))]
        part.write_text("epoch,loss\n" + "\n".join(rows) + "\n")
        parts.append(part)
    merge_histories(parts, tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_text().splitlines() == [
        "member,epoch,loss", "0,0,0.9", "0,1,0.5", "1,0,0.8", "1,1,0.4"]
    assert not any(p.exists() for p in parts)


def test_soup_needs_a_pretrained_seg_model() -> None:
    assert load_train_config("seg", None, {"fit.soup": 3, "fit.init_weights": "pre"}).fit.soup == 3
    assert load_train_config("seg").fit.soup == 1
    with pytest.raises(ConfigError, match="needs fit.init_weights"):
        load_train_config("seg", None, {"fit.soup": 3})
    with pytest.raises(ConfigError, match="is for the seg model"):
        load_train_config("cls", None, {"fit.soup": 2, "fit.init_weights": "pre"})
    with pytest.raises(ConfigError, match="fit.soup"):
        load_train_config("seg", None, {"fit.soup": 0, "fit.init_weights": "pre"})
