"""What a run folder records besides the model: code version, data fingerprint, environment."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from steel_edge import __version__
from steel_edge.data.imageio import is_image_file

REPO = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` from git when running from a checkout, else the version."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


def data_fingerprint(folders: Sequence[Path | str]) -> str:
    """sha256 over each folder's label files and its image names and sizes.

    Cheap (no image bytes are read) yet changes whenever a label, an image set or an image file changes
    size; two runs with the same fingerprint saw the same data.
    """
    digest = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        for label_file in sorted([*root.glob("*.csv")]):
            digest.update(label_file.name.encode())
            digest.update(label_file.read_bytes())
        for path in sorted(p for p in root.rglob("*") if is_image_file(p)):
            digest.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def environment() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": f"{platform.machine()} {platform.system()}",
    }
