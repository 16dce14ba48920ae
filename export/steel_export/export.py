"""One export, top to bottom: load, convert, write the contract, prove parity, optionally INT8.

The fp32 file is staged beside ``out`` and renamed into place only after parity has passed, so a failed
export leaves no file (and never a half-written one) where the edge might pick it up. The INT8 file, when
asked for, goes beside it as ``<stem>.int8.onnx``, and only when it earns its place (``quantize.judge``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steel_edge.contract import ModelContract
from steel_edge.model import EdgeModel, load_model
from steel_export import cascade, convert, quantize
from steel_export.images import PARITY_IMAGES, REAL_LIMIT, evaluation_set, real_images
from steel_export.parity import TOLERANCE, check_parity
from steel_export.report import contract_json, describe_io, graph_summary
from steel_export.source import ExportError, ExportInputError, KerasSource, load_source

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 32
# Measured (issue #4, onnxslim 0.1.98, one thread, interleaved runs): onnxslim folds the 11 BatchNorm
# Mul/Add pairs tf2onnx leaves after depthwise convs (99 -> 76 nodes on a seg model), but onnxruntime's
# ORT_ENABLE_ALL folds the same pairs into the convs when it loads the file: outputs bit-identical, run
# time ratio 1.00-1.05 on seg and 1.00 on cls, within noise. Not worth a dependency, so no clean-up runs.
CLEANUP_NOTE = ("none: onnxslim measured no speed change (onnxruntime folds the same BatchNorm Mul/Add pairs "
                "into the convs at load; outputs were bit-identical)")


Form = Literal["auto", "single", "cascade"]


def int8_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.int8.onnx")


def export_model(
    model_path: Path | str, out: Path | str, *, data: Path | None = None, parity_images: int = PARITY_IMAGES,
    real_limit: int = REAL_LIMIT, tolerance: float = TOLERANCE, int8: bool = False, calibration: Path | None = None,
    calibration_images: int = CALIBRATION_IMAGES, min_speedup: float = quantize.MIN_SPEEDUP,
    max_loss: float = quantize.MAX_LOSS, activation: quantize.ActivationType = "uint8", threads: int | None = None,
    form: Form = "auto",
) -> dict[str, Any]:
    """Export ``model_path`` (run folder or .keras) to ``out``; returns the JSON report.

    ``form``: ``cascade`` writes a seg model whose mask decoder runs only on tiles that pass the skip rule
    (``steel_export.cascade``), ``single`` the plain graph, ``auto`` the cascade where the run's tuned
    post-processing has a skip rule (``skip_below``). Raises ``ExportError`` (nothing written) when parity
    fails beyond ``tolerance``.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportInputError(f"{out}: the output file must end in .onnx")
    if int8 and calibration is None:
        raise ExportInputError("--int8 needs --calibration DIR (real-format images to calibrate ranges on)")
    source = load_source(model_path)
    loaded = time.perf_counter()
    proto = convert.convert(source)
    h, w = source.input_size
    stride = convert.mask_stride_of(proto, h) if source.kind == "seg" else None
    contract = convert.build_contract(source, stride)
    chosen = _form(form, contract)
    stages: dict[str, Any] = {}
    if chosen == "cascade":
        if int8:
            raise ExportInputError("--int8 is for the single form only so far: add --form single")
        assert contract.postprocess is not None and contract.postprocess.skip_below is not None
        assert contract.mask_size is not None
        stages = cascade.cascade_summary(proto)
        proto = cascade.to_cascade(proto, contract.postprocess.skip_below, contract.mask_size)
        contract = contract.model_copy(update={"form": "cascade"})
    convert.attach_contract(proto, contract)
    converted = time.perf_counter()

    images, note = evaluation_set(source.kind, (h, w), source.class_names, data, parity_images,
                                  min(real_limit, parity_images))
    with convert.staged_file(out) as staged:
        staged.write_bytes(proto.SerializeToString())
        edge = load_model(staged, expect_kind=contract.kind, threads=threads)
        parity = check_parity(source.model, source.kind, edge, images, tolerance, note)
        if not parity.passed:
            per = ", ".join(f"{k} {v:.3g}" for k, v in parity.max_abs_diff_per_output.items())
            raise ExportError(f"parity failed: max abs diff {parity.max_abs_diff:.3g} > tolerance {tolerance:g} "
                              f"on {parity.images} images ({per}); no file written")
        gated = {**_check_cascade(edge, images, tolerance), **stages} if chosen == "cascade" else None
    checked = time.perf_counter()
    report: dict[str, Any] = {
        "model": str(source.path), "out": str(out), "sha256": edge.sha256, "bytes": out.stat().st_size,
        "kind": contract.kind, "train_kind": source.kind, **graph_summary(proto), **describe_io(edge),
        "contract": contract_json(contract), "parity": parity.to_dict(), "max_abs_diff": parity.max_abs_diff,
        "cleanup": CLEANUP_NOTE, "int8": None, "form": chosen, "cascade": gated,
    }
    if int8:
        assert calibration is not None
        report["int8"] = _int8(source, contract, out, edge, images, calibration, calibration_images,
                               min_speedup, max_loss, activation, threads)
    report["seconds"] = {"load": round(loaded - started, 2), "convert": round(converted - loaded, 2),
                         "parity": round(checked - converted, 2), "total": round(time.perf_counter() - started, 2)}
    return report


def _form(form: Form, contract: ModelContract) -> str:
    params = contract.postprocess
    skip = params.skip_below if params is not None and params.gate == "hard" else None
    if form == "auto":
        return "cascade" if contract.kind == "seg" and skip is not None else "single"
    if form == "cascade" and (contract.kind != "seg" or skip is None):
        raise ExportInputError("--form cascade needs a seg run whose tuned post-processing has a skip rule "
                               "(postprocess.json skip_below: `steel-train tune RUN` adds it)")
    return form


def _check_cascade(edge: EdgeModel, images: list[Any], tolerance: float) -> dict[str, Any]:
    """The cascade's gate, image by image: skipped tiles have zero masks and are ones the skip rule skips;
    the others have the masks of the decoder run on every tile."""
    assert edge.contract.postprocess is not None
    params = edge.contract.postprocess
    skipped = 0
    for e in images:
        x = edge.to_tensor(e.image[None])
        full_masks, presence = edge.run_tensor(x, decode_all=True)
        masks, _ = edge.run_tensor(x)
        if not masks.any():
            if not params.skips(presence[0]) and full_masks.max() > 0:
                raise ExportError(f"cascade: the decoder was skipped on {e.name} but the skip rule reads its masks")
            skipped += 1
        elif float(np.abs(masks - full_masks).max()) > tolerance:
            raise ExportError(f"cascade: the gated masks of {e.name} differ from the decoder's on every tile")
    return {"images": len(images), "skipped": skipped, "skip_below": list(params.skip_below or ())}


def _int8(
    source: KerasSource, contract: ModelContract, out: Path, fp32: EdgeModel, images: list[Any], calibration: Path,
    calibration_images: int, min_speedup: float, max_loss: float, activation: quantize.ActivationType,
    threads: int | None,
) -> dict[str, Any]:
    """Quantize ``out``, judge it on ``images`` against the fp32 file, keep it beside ``out`` if it earns it."""
    import onnx

    calib = real_images(calibration, source.kind, source.input_size, source.class_names, calibration_images)
    target = int8_path(out)
    with tempfile.TemporaryDirectory(prefix="steel-int8-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        how = quantize.quantize_file(out, raw, [c.image for c in calib], contract.input.name,
                                     contract.input.layout, activation)
        proto = onnx.load(str(raw))
        int8_contract = contract.model_copy(update={"precision": "int8"})
        convert.attach_contract(proto, int8_contract)
        final = Path(tmp) / "int8.onnx"
        onnx.save(proto, str(final))
        model = load_model(final, expect_kind=contract.kind, threads=threads)
        verdict = quantize.judge(fp32, model, images, min_speedup=min_speedup, max_loss=max_loss)
        path = None
        if verdict["kept"]:
            with convert.staged_file(target) as staged:
                shutil.copyfile(final, staged)
            path = str(target)
        elif target.exists():
            # An INT8 file from an earlier export beside this fp32 file would be a different model.
            target.unlink()
            verdict["decision"] += f"; removed the stale {target.name} of an earlier export"
    overlap = {c.path.resolve() for c in calib if c.path} & {e.path.resolve() for e in images if e.path}
    return quantize.Int8Report(
        path=path, calibration_images=len(calib), calibration_dir=str(calibration), activation_type=activation,
        preprocess=how, calibration_overlap_with_eval=len(overlap), sha256=model.sha256 if path else None,
        **verdict,
    ).to_dict()
