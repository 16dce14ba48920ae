"""What an export starts from: a Keras model plus what its training run recorded about it.

A run folder (``steel-train fit`` output) holds ``model.keras``, ``run.json`` (model kind, class names,
data fingerprint, code version) and, for seg, ``postprocess.json`` with the tuned per-class rules. A bare
``.keras`` file also exports, with the kind taken from the model's name and the provenance fields marked
unknown, so that an experiment can be tried on the edge; the contract says so rather than guessing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steel_edge.contract import SEVERSTAL_CLASS_IDS
from steel_edge.data.rle import HEIGHT, WIDTH
from steel_edge.postprocess import PostprocessParams

log = logging.getLogger(__name__)

TrainKind = Literal["seg", "cls", "baseline"]
UNKNOWN = "unknown"
# Keras model names (steel_train.models) -> training kind, for a bare .keras file without run.json.
_KIND_BY_NAME: dict[str, TrainKind] = {"steel_seg": "seg", "steel_cls": "cls", "steel_baseline": "baseline"}


class ExportError(RuntimeError):
    """An export that failed: conversion error, parity beyond tolerance (exit status 1)."""


class ExportInputError(ExportError):
    """An export that cannot start: a missing or unreadable model, data or calibration folder (exit status 2)."""


@dataclass(frozen=True)
class KerasSource:
    """A loaded Keras model and the facts the contract needs about it."""

    path: Path  # the run folder or .keras file given
    model: Any  # keras.Model
    kind: TrainKind
    class_names: tuple[str, ...]
    data_fingerprint: str
    code_version: str
    postprocess: PostprocessParams | None  # seg only

    @property
    def edge_kind(self) -> Literal["seg", "cls"]:
        """The baseline is a whole-image classifier: to the edge it is a cls model."""
        return "seg" if self.kind == "seg" else "cls"

    @property
    def architecture(self) -> str:
        return str(self.model.name)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the export: seg runs on full tiles, classifiers at their own input size."""
        if self.kind == "seg":
            return HEIGHT, WIDTH
        _, h, w, _ = self.model.input_shape
        return int(h), int(w)

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Seg and baseline speak Severstal class ids 1..4; a cls model's ids are its output indices."""
        if self.kind in ("seg", "baseline"):
            return SEVERSTAL_CLASS_IDS[: len(self.class_names)]
        return tuple(range(len(self.class_names)))


def _load_keras(path: Path) -> Any:
    import keras

    from steel_train import losses  # noqa: F401  (registers BceDiceLoss, which model.keras names)

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        raise ExportInputError(f"{path}: cannot load the Keras model ({type(err).__name__}: {err})") from err


def load_source(path: Path | str) -> KerasSource:
    """A run folder or a ``.keras`` file -> ``KerasSource``; ``ExportError`` naming what is missing."""
    path = Path(path)
    run: dict[str, Any] = {}
    params: PostprocessParams | None = None
    if path.is_dir():
        model_file = path / "model.keras"
        if not model_file.is_file():
            raise ExportInputError(f"{path}: not a run folder (no model.keras)")
        run_file = path / "run.json"
        if run_file.is_file():
            run = json.loads(run_file.read_text())
        else:
            log.warning("%s: no run.json; data fingerprint and code version will read %r", path, UNKNOWN)
        pp_file = path / "postprocess.json"
        if pp_file.is_file():
            params = PostprocessParams.model_validate_json(pp_file.read_text())
    elif path.suffix == ".keras" and path.is_file():
        model_file = path
    else:
        raise ExportInputError(f"{path}: expected a run folder or a .keras file")

    model = _load_keras(model_file)
    kind = run.get("model_kind") or _KIND_BY_NAME.get(model.name)
    if kind not in ("seg", "cls", "baseline"):
        raise ExportInputError(f"{path}: cannot tell the model kind (run.json model_kind {run.get('model_kind')!r}, "
                          f"Keras name {model.name!r})")
    if kind == "seg":
        names = tuple(run.get("class_names") or ("1", "2", "3", "4"))
        if params is None:
            log.warning("%s: no postprocess.json; the contract carries the default post-processing", path)
            params = PostprocessParams()
    else:
        n_out = int(model.output_shape[-1])
        names = tuple(run.get("class_names") or (("1", "2", "3", "4") if kind == "baseline"
                                                 else tuple(str(i) for i in range(n_out))))
        if len(names) != n_out:
            raise ExportInputError(f"{path}: run.json names {len(names)} classes, the model has {n_out} outputs")
        params = None
    return KerasSource(
        path=path, model=model, kind=kind, class_names=tuple(str(n) for n in names),
        data_fingerprint=str(run.get("data_fingerprint") or UNKNOWN),
        code_version=str(run.get("code_version") or UNKNOWN), postprocess=params,
    )
