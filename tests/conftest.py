"""Shared fixtures: the real sample data beside the checkout, and the TensorFlow marker's skip."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STEEL_SHARED_DATA", REPO.parent / "shared" / "data"))
HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_tf = pytest.mark.skip(reason="TensorFlow not installed (install the `train` extra)")
    for item in items:
        if "tf" in item.keywords and not HAVE_TF:
            item.add_marker(skip_tf)


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (set STEEL_SHARED_DATA or place shared/ beside the repo)")
    return path


@pytest.fixture(scope="session")
def severstal_dir() -> Path:
    """The 31 real labelled Severstal images (../shared/data/severstal)."""
    return _shared("severstal")


@pytest.fixture(scope="session")
def neu_dir() -> Path:
    """The 1,080 real NEU images (../shared/data/neu_det)."""
    return _shared("neu_det")
