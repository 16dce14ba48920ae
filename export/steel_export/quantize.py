"""INT8: static QDQ per-channel quantization, judged against fp32 on the same images in the same run.

``quantize_dynamic`` made conv nets slower (docs/design.md), so only static quantization is offered: ranges
are calibrated on real-format images, weights per output channel. Whether INT8 pays depends on the
model's size and on the CPU (VNNI), so nothing is assumed: both files run on the same images, timed
interleaved (so a neighbour's load hits both alike), and INT8 is kept only when it is faster by at least
``min_speedup`` and loses at most ``max_loss`` of Dice (seg) or accuracy (cls) against the truth, or,
without truth, agrees with fp32 at least that well.

Activations are uint8 and weights int8 (U8S8) by default: on this project's CPUs (AVX-512 VNNI) S8S8
ran 2-3x slower than U8S8 on both seg models tried, and slower than fp32.

``quant_pre_process`` (shape inference, graph optimisation) wants ``sympy`` for its symbolic shape
inference. Our graphs have static shapes except the batch, so plain ONNX shape inference suffices: with
and without sympy the INT8 files gave bit-identical outputs. sympy is therefore optional; when it is
installed the symbolic pass runs (it needs ``auto_merge``), and the report says which ran.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steel_edge.contract import ModelContract
from steel_edge.heads import head_for
from steel_edge.model import EdgeModel
from steel_export.images import EvalImage
from steel_export.parity import BATCH, Outputs, agreement, max_abs_diffs, onnx_outputs, truth_score

MIN_SPEEDUP = 1.1
MAX_LOSS = 0.01
TIMING_ROUNDS = 5
ROUND_SECONDS = 0.25
Stage = Literal["all", "encoder", "decoder"]
ActivationType = Literal["uint8", "int8"]


def have_sympy() -> bool:
    return importlib.util.find_spec("sympy") is not None


def _reader(images: Sequence[np.ndarray], input_name: str, layout: str) -> Any:
    """A CalibrationDataReader feeding one image at a time (ranges are per tensor, batch size is moot)."""
    from onnxruntime.quantization import CalibrationDataReader

    def feed(img: np.ndarray) -> dict[str, np.ndarray]:
        x = img.astype(np.float32)
        return {input_name: x[None, None] if layout == "NCHW" else x[None, :, :, None]}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([feed(img) for img in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return Reader()


@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` for Python 3.10 (the CLI is single-threaded, so a process-wide chdir is safe)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def quantize_file(
    fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray], input_name: str, layout: str = "NCHW",
    activation: ActivationType = "uint8", stage: Stage = "all",
) -> str:
    """Write the INT8 QDQ model of ``fp32_path`` to ``out_path``; returns how pre-processing ran.

    ``stage`` (seg): ``encoder`` quantizes the encoder and presence head only, ``decoder`` the mask decoder
    only (``steel_export.cascade.split_nodes``), the other stage staying fp32; ``all`` both.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("INT8 calibration needs at least one image")
    how = "onnx shape inference, optimisation (symbolic shape inference skipped: sympy not installed)"
    with tempfile.TemporaryDirectory(prefix="steel-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        done = False
        if have_sympy():
            # auto_merge: without it the symbolic pass gives up on our graphs ("Incomplete symbolic shape
            # inference") where the dynamic batch meets the decoder's Resize. When it gives up it dumps
            # sym_shape_infer_temp.onnx and a .data file into the working directory: run it in tmp.
            try:
                with _working_dir(Path(tmp)):
                    quant_pre_process(str(fp32_path.resolve()), str(pre), auto_merge=True)
                how, done = "symbolic and onnx shape inference, optimisation", True
            except Exception as err:  # onnxruntime raises a bare Exception here
                how = f"onnx shape inference, optimisation (symbolic shape inference failed: {err})"
        if not done:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        exclude = _other_stage(pre, stage)
        quantize_static(
            str(pre), str(out_path), _reader(calibration, input_name, layout),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
        )
    return how if stage == "all" else f"{how}; {stage} only ({len(exclude)} nodes of the other stage kept fp32)"


def _other_stage(path: Path, stage: Stage) -> list[str]:
    """Names of the nodes quantization leaves alone for ``stage``; unnamed nodes get names (rewritten in place)."""
    if stage == "all":
        return []
    import onnx

    from steel_export.cascade import split_nodes

    proto = onnx.load(str(path))
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"node_{i}_{node.op_type}"
    onnx.save(proto, str(path))
    encoder, decoder = split_nodes(proto.graph)
    return [n.name for n in (decoder if stage == "encoder" else encoder)]


def _pass_seconds(model: EdgeModel, images: np.ndarray, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        onnx_outputs(model, images, BATCH)
    return time.perf_counter() - start


def time_pair(fp32: EdgeModel, int8: EdgeModel, images: np.ndarray, rounds: int | None = None) -> tuple[float, float]:
    """Median seconds per image of each model over ``rounds`` interleaved rounds (after a warm-up each).

    A round repeats the pass over ``images`` until it lasts about ``ROUND_SECONDS``, so a small model on
    a few images is not timed on a few milliseconds of noise; interleaving puts any load from outside
    on both models alike.
    """
    first = min(_pass_seconds(fp32, images), _pass_seconds(int8, images))
    repeats = max(1, int(np.ceil(ROUND_SECONDS / max(first, 1e-6))))
    a, b = [], []
    for _ in range(rounds or TIMING_ROUNDS):
        a.append(_pass_seconds(fp32, images, repeats))
        b.append(_pass_seconds(int8, images, repeats))
    n = len(images) * repeats
    return float(np.median(a)) / n, float(np.median(b)) / n


@dataclass(frozen=True)
class Int8Report:
    kept: bool
    decision: str  # why kept or not, with the thresholds
    path: str | None  # the INT8 file, when kept
    calibration_images: int
    calibration_dir: str
    activation_type: str
    preprocess: str
    eval_images: int
    threads: int
    fp32_ms_per_image: float
    int8_ms_per_image: float
    speedup: float  # fp32 time / int8 time: above 1 means INT8 is faster
    metric: str  # "kaggle_dice" (seg) or "accuracy" (cls), against the truth
    metric_images: int  # images with truth the metric was computed on
    fp32_metric: float | None
    int8_metric: float | None
    metric_change: float | None  # int8 - fp32
    agreement_with_fp32: float  # seg: Dice of INT8 masks vs fp32 masks; cls: same top-1 share
    max_abs_diff_vs_fp32: float
    min_speedup: float
    max_loss: float
    calibration_overlap_with_eval: int  # calibration images that are also among the evaluation images
    sha256: str | None  # of the INT8 file, when kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    fp32: EdgeModel, int8: EdgeModel, images: Sequence[EvalImage], *, min_speedup: float = MIN_SPEEDUP,
    max_loss: float = MAX_LOSS, rounds: int | None = None,
) -> dict[str, Any]:
    """Speed and accuracy of ``int8`` against ``fp32`` on ``images``; the fields of ``Int8Report`` bar the
    calibration and file facts, plus ``kept`` and ``decision``."""
    batch = np.stack([e.image for e in images])
    ref: Outputs = onnx_outputs(fp32, batch)
    got: Outputs = onnx_outputs(int8, batch)
    contract: ModelContract = fp32.contract
    fp32_score, n_truth = truth_score(ref, images, contract)
    int8_score, _ = truth_score(got, images, contract)
    agree = agreement(got, ref, contract)
    t_fp32, t_int8 = time_pair(fp32, int8, batch, rounds)
    speedup = t_fp32 / t_int8 if t_int8 > 0 else float("inf")
    metric = head_for(contract.kind).metric
    change = None if fp32_score is None or int8_score is None else int8_score - fp32_score
    faster = speedup >= min_speedup
    if change is not None:
        close = -change <= max_loss
        accuracy = f"{metric} change {change:+.4f} on {n_truth} images (a loss of at most {max_loss} allowed)"
    else:  # no truth: judge by how often INT8 gives what fp32 gives
        close = 1.0 - agree <= max_loss
        accuracy = f"agreement with fp32 {agree:.4f} without truth (at least {1 - max_loss:.4f} required)"
    verdict = "kept" if faster and close else "not kept"
    decision = f"{verdict}: speedup {speedup:.2f}x (at least {min_speedup}x required), {accuracy}"
    return {
        "kept": faster and close, "decision": decision, "eval_images": len(images), "threads": fp32.threads,
        "fp32_ms_per_image": round(t_fp32 * 1e3, 3), "int8_ms_per_image": round(t_int8 * 1e3, 3),
        "speedup": round(speedup, 3), "metric": metric,
        "metric_images": n_truth, "fp32_metric": fp32_score, "int8_metric": int8_score, "metric_change": change,
        "agreement_with_fp32": agree, "max_abs_diff_vs_fp32": max(max_abs_diffs(ref, got).values()),
        "min_speedup": min_speedup, "max_loss": max_loss,
    }
