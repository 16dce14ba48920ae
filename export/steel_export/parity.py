"""Parity: the exported file must compute what the Keras model computes, on real and synthetic images.

The ONNX side runs through ``steel_edge.model.load_model``, the loader the daemon uses, so parity also
proves that the edge accepts the file and reads its contract. Two figures: the max absolute difference
of the raw outputs (the gate: above the tolerance the export fails), and the Kaggle Dice between the
masks both sides give after the edge's post-processing (seg), or the share of images where both pick
the same label (cls): what a difference would mean on the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from steel_edge.contract import ModelContract
from steel_edge.heads import head_for
from steel_edge.model import EdgeModel
from steel_export.images import EvalImage

Outputs = dict[str, np.ndarray]
TOLERANCE = 1e-4
BATCH = 4


def _batches(images: np.ndarray, size: int) -> list[np.ndarray]:
    return [images[i:i + size] for i in range(0, len(images), size)]


def keras_outputs(model: Any, kind: str, images: np.ndarray, batch: int = BATCH) -> Outputs:
    """Raw Keras outputs in the exported layout: seg masks (N, 4, h, w) and presence (N, 4); cls probs (N, C)."""
    parts: list[Outputs] = []
    for chunk in _batches(images, batch):
        out = model(chunk.astype(np.float32)[..., None], training=False)
        if kind == "seg":
            parts.append({"masks": np.transpose(np.asarray(out["masks"]), (0, 3, 1, 2)),
                          "presence": np.asarray(out["presence"])})
        else:
            parts.append({"probs": np.asarray(out)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def onnx_outputs(model: EdgeModel, images: np.ndarray, batch: int = BATCH, decode_all: bool = False) -> Outputs:
    """Raw onnxruntime outputs through the edge's own loader, named by the model's head (``decode_all``: a
    cascade model's decoder runs on every tile)."""
    parts: list[Outputs] = []
    for chunk in _batches(images, batch):
        parts.append(model.head.named(model.run_tensor(model.to_tensor(chunk), decode_all=decode_all)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def agreement(a: Outputs, b: Outputs, contract: ModelContract) -> float:
    """How far two runs agree after post-processing: seg, Kaggle Dice between the final masks; cls, the
    share of equal top-1 labels (the head of the contract's kind decides)."""
    return head_for(contract.kind).agreement(a, b, contract)


def truth_score(out: Outputs, images: Sequence[EvalImage], contract: ModelContract) -> tuple[float | None, int]:
    """The head's metric (seg: Kaggle Dice against the truth masks; cls: accuracy against the labels) and how
    many images had truth. Images without truth are left out; (None, 0) when none has it."""
    found = [(n, e.masks if contract.kind == "seg" else e.label) for n, e in enumerate(images)]
    truth: list[tuple[int, np.ndarray | int]] = [(n, t) for n, t in found if t is not None]
    if not truth:
        return None, 0
    keep = [n for n, _ in truth]
    score = head_for(contract.kind).truth_score({k: v[keep] for k, v in out.items()}, [t for _, t in truth], contract)
    return score, len(truth)


def max_abs_diffs(a: Outputs, b: Outputs) -> dict[str, float]:
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"output {name!r}: shapes differ, {a[name].shape} vs {b[name].shape}")
    return {name: float(np.max(np.abs(a[name].astype(np.float64) - b[name]))) for name in a}


@dataclass(frozen=True)
class ParityReport:
    images: int
    real_images: int
    synthetic_images: int
    max_abs_diff: float
    max_abs_diff_per_output: dict[str, float]
    tolerance: float
    passed: bool
    postprocessed_dice: float | None  # seg: Kaggle Dice of ONNX masks against Keras masks
    label_agreement: float | None  # cls: share of images with the same top-1 label
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    keras_model: Any, train_kind: str, edge_model: EdgeModel, images: Sequence[EvalImage],
    tolerance: float = TOLERANCE, note: str | None = None,
) -> ParityReport:
    """Run both sides on ``images`` and compare; the caller decides what a failed report means."""
    if not images:
        raise ValueError("parity needs at least one image")
    batch = np.stack([e.image for e in images])
    ref = keras_outputs(keras_model, train_kind, batch)
    got = onnx_outputs(edge_model, batch, decode_all=True)  # raw parity covers a cascade's decoder on every image
    diffs = max_abs_diffs(ref, got)
    worst = max(diffs.values())
    agree = agreement(got, ref, edge_model.contract)
    seg = edge_model.kind == "seg"
    return ParityReport(
        images=len(images), real_images=sum(e.origin == "real" for e in images),
        synthetic_images=sum(e.origin == "synthetic" for e in images), max_abs_diff=worst,
        max_abs_diff_per_output=diffs, tolerance=tolerance, passed=bool(worst <= tolerance),
        postprocessed_dice=agree if seg else None, label_agreement=None if seg else agree, note=note,
    )
