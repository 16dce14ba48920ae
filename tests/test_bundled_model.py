"""The committed default model loads and runs where only the edge extra is installed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

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
