"""The edge's model loader: an ONNX file -> an onnxruntime session plus the contract it carries.

A model is refused at load time, never at the first frame, when it is not ONNX, is corrupt, carries no
steel-edge contract or one this runtime does not understand, or when its graph disagrees with its own
contract (input size, output names). The refusal is a ``ModelContractError`` naming the file and what is
wrong. The file is read once: the sha256 reported in every event is the hash of exactly the bytes the
session was built from.

Threads: onnxruntime sizes its pool from the host's physical cores, not from the process's CPU affinity
or container quota (docs/design.md), so the default here is ``len(os.sched_getaffinity(0))``. Execution is
sequential (one conv net is a chain; parallel branches buy nothing and cost a second pool).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from steel_edge.contract import ModelContract, ModelContractError, parse_contract
from steel_edge.heads import Head, head_for
from steel_edge.postprocess import PostprocessParams

__all__ = ["EdgeModel", "ModelContractError", "available_threads", "load_model"]

# Serialized ONNX models start with field 1 (ir_version, varint): tag byte 0x08. Used only to word the
# error for a file onnxruntime cannot parse: "not ONNX at all" versus "corrupt ONNX".
_ONNX_FIRST_BYTE = 0x08


def available_threads() -> int:
    """CPUs this process may run on (affinity), which is what a container or taskset grants."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EdgeModel:
    """A loaded, validated model. ``predict_*`` take raw uint8 gray frames at the contract's input size."""

    path: Path
    sha256: str
    contract: ModelContract
    session: Any = field(repr=False)  # onnxruntime.InferenceSession (untyped package)
    threads: int

    @property
    def kind(self) -> str:
        return self.contract.kind

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        """Check and feed (N, H, W) uint8 (a single (H, W) image is taken as N = 1); outputs in contract order."""
        spec = self.contract.input
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (spec.height, spec.width):
            raise ValueError(f"{self.path.name}: expected images of shape (N, {spec.height}, {spec.width}), "
                             f"got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{self.path.name}: expected uint8 gray levels, got {images.dtype}")
        if images.shape[0] == 0:  # onnxruntime rejects some zero-sized tensors; an empty batch has empty answers
            return [np.zeros((0, *shape), np.float32) for shape in self._output_shapes()]
        return self.run_tensor(self.to_tensor(images))

    def to_tensor(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 -> the float32 input tensor in the contract's layout (one conversion, one copy).

        Separate from ``run_tensor`` so a pipeline can convert on another thread than the one running
        the model (the daemon converts each frame on its capture thread).
        """
        x = np.asarray(images).astype(np.float32)
        return x[:, None] if self.contract.input.layout == "NCHW" else x[..., None]

    def run_tensor(self, x: np.ndarray, params: PostprocessParams | None = None, *,
                   decode_all: bool = False) -> list[np.ndarray]:
        """Run on a tensor made by ``to_tensor`` (or stacked from several); outputs in contract order.

        A cascade model skips its mask decoder by the skip rule of ``params`` (default: the contract's
        post-processing; masks of skipped tiles are zeros, which that rule never reads); ``decode_all`` runs
        it on every tile. A single-graph model ignores both.
        """
        names = [o.name for o in self.contract.outputs]
        feed = {self.contract.input.name: x, **self.head.feeds(self.contract, params, decode_all)}
        return list(self.session.run(names, feed))

    @property
    def head(self) -> Head:
        """What is specific to this model's kind (``steel_edge.heads``)."""
        return head_for(self.contract.kind)

    def _output_shapes(self) -> list[tuple[int, ...]]:
        return self.head.output_shapes(self.contract)

    def predict_seg(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) uint8 tiles -> probabilities (N, 4, h, w) float32 and presence (N, 4) float32."""
        self._expect("seg")
        masks, presence = self._run(images)
        return masks, presence

    def predict_cls(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 images at the input size -> (N, C) float32 class probabilities."""
        self._expect("cls")
        (probs,) = self._run(images)
        return probs

    def fit_input(self, image: np.ndarray) -> np.ndarray:
        """One (h, w) uint8 image brought to the input size the way training did (``input.resize``).

        Raises for a seg model given a frame of another size: resizing a tile would change the pixel
        scale the post-processing areas are tuned in, so tiling is the caller's job.
        """
        spec = self.contract.input
        if image.shape[:2] == (spec.height, spec.width):
            return image
        if spec.resize == "none":
            raise ValueError(f"{self.path.name}: frames must be {spec.width}x{spec.height} (width x height), "
                             f"got {image.shape[1]}x{image.shape[0]}; this model does not resize")
        return cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)

    def _expect(self, kind: str) -> None:
        if self.contract.kind != kind:
            raise ValueError(f"{self.path.name} is a {self.contract.kind} model; predict_{kind} needs a {kind} model")


def _session(data: bytes, path: Path, threads: int, spinning: bool, providers: tuple[str, ...]) -> Any:
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ModelContractError(
            f"{path}: execution provider(s) {missing} not available in this onnxruntime "
            f"({ort.__version__}: {available}); CUDA needs the onnxruntime-gpu package, OpenVINO onnxruntime-openvino")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers answer the next batch sooner but burn CPU while the pipeline idles.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own pybind exception types for a bad file
        what = "a corrupt or truncated ONNX file" if data[:1] == bytes([_ONNX_FIRST_BYTE]) else "not an ONNX file"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelContractError(f"{path}: {what}; onnxruntime cannot load it ({detail})") from err


def _check_graph(session: Any, contract: ModelContract, path: Path) -> None:
    """The graph must have the input and outputs its contract names, at the stated size."""
    inputs = {i.name: i for i in session.get_inputs()}
    spec = contract.input
    if spec.name not in inputs:
        raise ModelContractError(f"{path}: contract input {spec.name!r} is not a graph input "
                                 f"(graph inputs: {sorted(inputs)})")
    shape = list(inputs[spec.name].shape)
    hw = [spec.height, spec.width]
    want = [spec.channels, *hw] if spec.layout == "NCHW" else [*hw, spec.channels]
    if len(shape) != 4 or shape[1:] != want:
        raise ModelContractError(f"{path}: graph input {spec.name!r} has shape {shape}, its contract says "
                                 f"{['batch', *want]} ({spec.layout})")
    for name, extra in head_for(contract.kind).extra_inputs(contract).items():
        if name not in inputs or list(inputs[name].shape) != extra:
            raise ModelContractError(f"{path}: a {contract.form} {contract.kind} model needs the graph input {name!r} "
                                     f"of shape {extra} (graph inputs: {sorted(inputs)})")
    outputs = {o.name for o in session.get_outputs()}
    missing = [o.name for o in contract.outputs if o.name not in outputs]
    if missing:
        raise ModelContractError(f"{path}: contract outputs {missing} are not graph outputs "
                                 f"(graph outputs: {sorted(outputs)})")


def load_model(
    path: Path | str, expect_kind: str | None = None, threads: int | None = None, spinning: bool = True,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> EdgeModel:
    """Open ``path`` with onnxruntime (CPU) and validate its contract; ``ModelContractError`` if refused.

    ``expect_kind`` ("seg" or "cls") refuses a model of the other kind; ``threads`` overrides the
    affinity-derived intra-op thread count; ``spinning=False`` lets idle workers sleep; ``providers``
    are onnxruntime execution providers in order of preference (e.g. ``("CUDAExecutionProvider",
    "CPUExecutionProvider")`` with the onnxruntime-gpu package).
    """
    if expect_kind not in (None, "seg", "cls"):
        raise ValueError(f"expect_kind must be 'seg', 'cls' or None, got {expect_kind!r}")
    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"{path}: model file not found")
    data = path.read_bytes()
    if not data:
        raise ModelContractError(f"{path}: empty file (0 bytes), not an ONNX model")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    n_threads = threads or available_threads()
    session = _session(data, path, n_threads, spinning, tuple(providers))
    contract = parse_contract(dict(session.get_modelmeta().custom_metadata_map), str(path))
    if expect_kind is not None and contract.kind != expect_kind:
        raise ModelContractError(f"{path}: a {contract.kind} model, but a {expect_kind} model is needed here")
    _check_graph(session, contract, path)
    return EdgeModel(path=path, sha256=hashlib.sha256(data).hexdigest(), contract=contract, session=session,
                     threads=n_threads)
