"""The README and docs/ as a new user meets them: short, links that resolve, commands that exist, and a
`make demo` that installs the edge extra only."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MODULES = {"steel-edge": "steel_edge.cli", "steel-train": "steel_train.cli", "steel-export": "steel_export.cli"}


def _code_lines(text: str) -> list[str]:
    """Shell lines inside the fenced ```bash blocks."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip():
            lines.append(line.split("  #")[0].strip())
    return lines


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 210


def test_design_lives_in_the_repository() -> None:
    assert (ROOT / "docs" / "design.md").is_file()
    for folder in ("edge", "train", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "../shared/DESIGN.md" not in path.read_text(), path
            assert not re.search(r"(?<!docs/)DESIGN\.md", path.read_text()), f"{path}: point to docs/design.md"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" in target:
            continue
        assert (doc.parent / target).exists(), f"{doc.name}: link to {target} does not resolve"


def test_readme_says_how_to_get_the_commands_on_path() -> None:
    text = README.read_text()
    makefile = (ROOT / "Makefile").read_text()
    for venv in re.findall(r"^(\.venv[\w-]*)/bin/activate", "\n".join(_code_lines(text)), re.M):
        assert re.search(rf"^\w*VENV \?= {re.escape(venv)}$", makefile, re.M), f"{venv} is not a Makefile venv"
    assert ". .venv/bin/activate" in text and ". .venv-edge/bin/activate" in text


def test_make_demo_installs_the_edge_extra_only(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run([make, "-n", "-B", "demo", f"EDGE_VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    installs = [line for line in out.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all("'.[edge]'" in line for line in installs), out


def _subcommands() -> set[tuple[str, str]]:
    found = set()
    for doc in (README, *DOCS):
        for line in _code_lines(doc.read_text()):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if words and words[0] in MODULES:
                sub = words[1] if len(words) > 1 and not words[1].startswith("-") else ""
                found.add((words[0], sub))
    return found


@pytest.mark.parametrize("program,sub", sorted(_subcommands()), ids=lambda v: v or "-")
def test_documented_commands_exist(program: str, sub: str) -> None:
    if program != "steel-edge":
        pytest.importorskip("tensorflow")
    args = [sys.executable, "-m", MODULES[program], *([sub] if sub else []), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{program} {sub} --help: {result.stderr[-500:]}"
