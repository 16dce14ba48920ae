"""``steel-export``: a trained Keras model to an ONNX file carrying its contract (issue #4)."""

from __future__ import annotations

import argparse
import sys

NOT_BUILT = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steel-export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder or .keras file")
    parser.add_argument("--out", help="output .onnx file")
    parser.add_argument("--int8", action="store_true", help="static INT8 quantization")
    parser.add_argument("--calibration", help="folder of calibration images for --int8")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("steel-export: not built yet (arrives with issue #4)", file=sys.stderr)
    return NOT_BUILT


if __name__ == "__main__":
    sys.exit(main())
