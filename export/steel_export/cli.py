"""``steel-export``: a trained Keras model to an ONNX file carrying its contract (issue #4).

    steel-export --model RUN_OR_KERAS --out FILE.onnx [--int8 --calibration DIR] [--json]
    steel-export check FILE.onnx [--keras RUN_OR_KERAS] [--data DIR] [--json]

Exit status: 0 done; 1 the export or check failed (parity beyond tolerance, conversion error);
2 bad arguments, a missing or unreadable model or data folder, or a file the edge refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from steel_edge.contract import ModelContractError
from steel_export.export import CALIBRATION_IMAGES
from steel_export.images import PARITY_IMAGES, REAL_LIMIT
from steel_export.parity import TOLERANCE
from steel_export.quantize import MAX_LOSS, MIN_SPEEDUP
from steel_export.source import ExportError, ExportInputError

FAILED = 1
BAD_INPUT = 2
_QUIET_LOGGERS = ("tf2onnx", "absl", "tensorflow", "onnxruntime")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="real images for parity/scoring (Severstal layout, labelled "
                                                  "layout or an image folder); default: the shared sample")
    parser.add_argument("--images", type=int, default=PARITY_IMAGES,
                        help="parity images in all: real first, then synthetic ones")
    parser.add_argument("--real-images", type=int, default=REAL_LIMIT, help="at most this many of them real")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="max abs diff of raw outputs allowed")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: CPU affinity)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="show converter logs")


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steel-export", description="Export a trained Keras model to an ONNX file carrying its contract, "
        "prove parity with Keras, optionally make an INT8 copy.",
        usage="%(prog)s --model RUN_OR_KERAS --out FILE.onnx [--int8 --calibration DIR] [options]\n"
              "       %(prog)s check FILE.onnx [--keras RUN_OR_KERAS] [--data DIR] [--json]",
        epilog="run `steel-export check -h` for the check command")
    parser.add_argument("--model", type=Path, required=True, help="run folder or .keras file")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file")
    parser.add_argument("--form", choices=["auto", "single", "cascade"], default="auto",
                        help="seg: cascade = the mask decoder runs only on tiles some class may be on (same answers); "
                             "auto (default) = cascade when the run's tuned post-processing has a skip rule")
    parser.add_argument("--int8", action="store_true", help="also make a static INT8 (QDQ, per-channel) file")
    parser.add_argument("--calibration", type=Path, help="images to calibrate INT8 ranges on")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, help="calibration images to use")
    parser.add_argument("--min-speedup", type=float, default=MIN_SPEEDUP, help="INT8 kept only if this much faster")
    parser.add_argument("--max-loss", type=float, default=MAX_LOSS, help="INT8 kept only if Dice/accuracy drops less")
    parser.add_argument("--activation", choices=["uint8", "int8"], default="uint8", help="INT8 activation type")
    _common(parser)
    return parser


def check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steel-export check", description="inspect an exported ONNX file; "
                                     "with --keras, re-run the parity check against the Keras model")
    parser.add_argument("file", type=Path, help="the .onnx file")
    parser.add_argument("--keras", type=Path, help="run folder or .keras file to compare against")
    _common(parser)
    return parser


def _quiet(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: "
                                                                                   "%(message)s")
    if not verbose:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _human_export(r: dict[str, Any]) -> str:
    p = r["parity"]
    agree = (f"post-processed Dice {p['postprocessed_dice']:.4f}" if p["postprocessed_dice"] is not None
             else f"label agreement {p['label_agreement']:.4f}")
    lines = [f"wrote {r['out']} ({r['bytes'] / 1e6:.2f} MB, {r['kind']}, opset {r['opset']}, {r['nodes']} nodes)",
             f"  sha256 {r['sha256']}",
             f"  parity on {p['images']} images ({p['real_images']} real, {p['synthetic_images']} synthetic): "
             f"max abs diff {p['max_abs_diff']:.3g} (tolerance {p['tolerance']:g}), {agree}"]
    if p.get("note"):
        lines.append(f"  note: {p['note']}")
    q = r.get("int8")
    if q:
        lines.append(f"  int8: {q['fp32_ms_per_image']:.2f} -> {q['int8_ms_per_image']:.2f} ms/image on {q['threads']} "
                     f"thread(s), {q['metric']} {_num(q['fp32_metric'])} -> {_num(q['int8_metric'])}")
        lines.append(f"  int8 {q['decision']}" + (f" -> {q['path']}" if q["path"] else ""))
    return "\n".join(lines)


def _human_check(r: dict[str, Any]) -> str:
    c = r["contract"]
    lines = [f"{r['file']}: {c['kind']} model ({c['architecture']}, {c['precision']}), opset {r['opset']}, "
             f"input {c['input']['height']}x{c['input']['width']}, classes {c['class_names']}",
             f"  sha256 {r['sha256']}",
             f"  inputs {[(i['name'], i['shape']) for i in r['inputs']]} outputs "
             f"{[(o['name'], o['shape']) for o in r['outputs']]}"]
    if "parity" in r:
        lines.append(f"  parity: max abs diff {r['max_abs_diff']:.3g} on {r['parity']['images']} images "
                     f"({'ok' if r['passed'] else 'FAILED'})")
    if "truth" in r:
        lines.append(f"  {r['truth']['metric']} on {r['truth']['scored_images']} images: {_num(r['truth']['value'])}")
    return "\n".join(lines)


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    print(f"steel-export: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    checking = bool(argv) and argv[0] == "check"
    args = (check_parser() if checking else export_parser()).parse_args(argv[1:] if checking else argv)
    _quiet(args.verbose)
    if args.images < 1 or args.real_images < 0:
        return _fail(args, BAD_INPUT, f"--images must be at least 1 and --real-images at least 0, got "
                                      f"{args.images} and {args.real_images}")
    try:
        if checking:
            from steel_export.report import check_file

            report = check_file(args.file, args.keras, args.data, args.images, args.tolerance, args.threads,
                                args.real_images)
            text = _human_check(report)
            ok = report["passed"]
        else:
            from steel_export.export import export_model

            report = export_model(
                args.model, args.out, data=args.data, parity_images=args.images, real_limit=args.real_images,
                tolerance=args.tolerance, form=args.form,
                int8=args.int8, calibration=args.calibration, calibration_images=args.calibration_images,
                min_speedup=args.min_speedup, max_loss=args.max_loss, activation=args.activation,
                threads=args.threads,
            )
            text = _human_export(report)
            ok = True
    except (ModelContractError, ExportInputError) as err:
        return _fail(args, BAD_INPUT, str(err))
    except ExportError as err:
        return _fail(args, FAILED, str(err))
    except (FileNotFoundError, ValueError) as err:
        return _fail(args, BAD_INPUT, str(err))
    print(json.dumps({"ok": ok, **report}, indent=2) if args.json else text)
    return 0 if ok else FAILED


if __name__ == "__main__":
    sys.exit(main())
