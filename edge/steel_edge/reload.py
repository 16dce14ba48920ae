"""Model hot reload: the model file is watched; a changed file is loaded and validated in the background
(same kind and input size, the pinned sha256 if any), then swapped in between two batches. A file that
fails is refused with an ``error`` event and the old model keeps running.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from steel_edge.config import EdgeConfig
from steel_edge.model import EdgeModel, ModelContractError, load_model
from steel_edge.stages import ErrorItem, Shared, StateItem

log = logging.getLogger("steel_edge.daemon")


def check_pin(model: EdgeModel, pinned: str | None) -> None:
    if pinned is not None and model.sha256 != pinned:
        raise ModelContractError(f"{model.path}: sha256 is {model.sha256}, but security.model_sha256 pins {pinned}; "
                                 "refusing to run a model other than the pinned one")


def load_checked(path: Path, cfg: EdgeConfig, threads: int) -> EdgeModel:
    """The model file as the daemon runs it: loaded with the config's inference settings, pin checked."""
    model = load_model(path, threads=threads, spinning=cfg.inference.spinning, providers=cfg.inference.providers)
    check_pin(model, cfg.security.model_sha256)
    return model


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ModelReloader:
    def __init__(self, path: Path, cfg: EdgeConfig, threads: int, shared: Shared) -> None:
        self.path = path
        self.cfg = cfg
        self.threads = threads
        self.shared = shared

    def run(self) -> None:
        last = _stat(self.path)
        pending = None
        while not self.shared.stop_event.wait(self.cfg.reload.poll_s):
            now = _stat(self.path)
            if now == last or now is None:
                pending = None
                continue
            if now != pending:  # changed since the last look: wait one more poll for the writer to finish
                pending = now
                continue
            last, pending = now, None
            self.reload()

    def reload(self) -> None:
        shared = self.shared
        try:
            new = load_checked(self.path, self.cfg, self.threads)
            old = shared.model.contract
            if new.contract.kind != old.kind or new.contract.input != old.input:
                raise ModelContractError(
                    f"{self.path}: the new model is a {new.contract.kind} model with input "
                    f"{new.contract.input.width}x{new.contract.input.height}; the running one is a {old.kind} model "
                    f"with input {old.input.width}x{old.input.height} (restart the daemon to change either)")
        except (ModelContractError, OSError) as err:
            shared.post(ErrorItem("inference", f"model reload refused, the old model keeps running: {err}"))
            return
        if new.sha256 == shared.model.sha256:
            return
        shared.model = new  # one reference assignment: the next batch uses it, the current one finishes
        shared.stats.reloads += 1
        shared.stats.set_model(new.sha256)
        log.info("model reloaded: %s (sha256 %s)", self.path, new.sha256[:12])
        shared.post(StateItem(shared.state))
