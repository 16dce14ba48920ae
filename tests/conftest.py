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


# --- isolation: the suite passes while a real steel-edge daemon runs on this box --------------------------
DEFAULT_PORTS = (5555, 5556, 5557, 5558)  # publish, proxy frontend and backend, replay


@pytest.fixture(scope="session", autouse=True)
def _isolated_from_a_real_daemon(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Hold the default ports for the whole session, as a daemon and a proxy running on this box would, and
    point the default state folder (XDG_STATE_HOME, inherited by every subprocess) into the session's
    temporary folder: a test that used a default port fails at once, and none writes the user's journal.
    The user's real state folder is checked to be untouched at the end."""
    import socket

    held = []
    for port in DEFAULT_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
            held.append(sock)
        except OSError:  # already taken, perhaps by a real daemon: as good for this purpose
            sock.close()
    real_state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "steel-edge"

    def snapshot() -> set[str]:  # names, not times: a real daemon running here keeps writing its own journal
        return {p.name for p in real_state.glob("*")} if real_state.is_dir() else set()

    before = snapshot()
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
    for sock in held:
        sock.close()
    created = snapshot() - before
    assert not created, f"the test suite wrote {sorted(created)} into the user's state folder {real_state}"
