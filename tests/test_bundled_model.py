"""The committed default model loads and runs where only the edge extra is installed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import steel_edge

MODELS = Path(steel_edge.__file__).parent / "models"

# Run in a fresh interpreter that cannot import the heavy packages at all, as on an edge box.
PROBE = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
from steel_edge.data.synth import generate
from steel_edge.model import load_model
from steel_edge.postprocess import postprocess
model = load_model(sys.argv[1], expect_kind="seg")
sample = generate(seed=0, index=1)
probs, presence = model.predict_seg(sample.image[None])
result = postprocess(probs[0], presence[0], model.contract.postprocess)
print(json.dumps({"sha256": model.sha256, "probs": list(probs.shape), "defects": len(result.defects),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnx"))}))
"""


def test_bundled_model_loads_without_tensorflow() -> None:
    path = MODELS / "default_seg.onnx"
    record = json.loads((MODELS / "default_seg.json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), "default_seg.json is stale"
    assert path.stat().st_size < 5 * 2**20
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sha256"] == record["sha256"] and result["heavy"] == []
    assert result["probs"][:2] == [1, 4]


def test_bundled_record_states_real_frame_quality_and_demo_says_it(tmp_path: Path) -> None:
    """The record holds the protocol's figures on real frames the model never trained on; the demo prints them."""
    from steel_edge.demo import real_frame_quality

    record = json.loads((MODELS / "default_seg.json").read_text())
    test = record["real_test"]
    assert test["images"] >= 100 and set(test["recall_per_class"]) == {"1", "2", "3", "4"}
    assert test["gain_over_all_empty"]["mean"] == pytest.approx(test["dice_mean"] - test["dice_all_empty"], abs=1e-6)
    line = real_frame_quality(MODELS / "default_seg.onnx", record["sha256"])
    assert line and f"on {test['images']} real Severstal frames it never trained on" in line
    assert f"{test['dice_mean']:.3f} vs {test['dice_all_empty']:.3f}" in line
    # A record that is not this file's says nothing rather than something false.
    assert real_frame_quality(MODELS / "default_seg.onnx", "0" * 64) is None
    assert real_frame_quality(tmp_path / "other.onnx", record["sha256"]) is None
    out = subprocess.run([sys.executable, "-m", "steel_edge.cli", "demo", "--frames", "3", "--seed", "0"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert line in out.stderr
