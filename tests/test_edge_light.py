"""The edge side must never pull in TensorFlow, Keras or tf2onnx, directly or through what it imports."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import steel_edge

HEAVY = ("tensorflow", "keras", "tf2onnx", "torch")


def test_edge_package_imports_no_tensorflow() -> None:
    modules = sorted(
        m.name for m in pkgutil.walk_packages(steel_edge.__path__, prefix="steel_edge.")
    )
    assert "steel_edge.data.rle" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"edge modules imported heavy packages: {out.stdout.strip()}"


def test_no_heavy_import_statement_in_edge_sources() -> None:
    """Also the dynamic routes import-linter cannot see: ``importlib.import_module("tensorflow")`` and
    ``__import__``, with a heavy package or the training and export packages named anywhere in the call."""
    root = Path(steel_edge.__file__).parent
    dynamic = re.compile(r"(import_module|__import__|find_spec)\(\s*[\"'](\w+)")
    forbidden = (*HEAVY, "steel_train", "steel_export")
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            for name in forbidden:
                assert not stripped.startswith((f"import {name}", f"from {name}")), f"{path}:{number}: {line}"
            for match in dynamic.finditer(line):
                assert match.group(2).split(".")[0] not in forbidden, f"{path}:{number}: {line}"
