"""Keras -> ONNX with tf2onnx, and the contract written into the file's metadata.

The recipe (docs/design.md, "Toolchain facts"): wrap the model in a ``tf.function`` with an explicit input
signature, convert with ``tf2onnx.convert.from_function`` at opset 17, rename the dynamic batch dimension
to ``batch``. Height and width stay fixed: a dynamic spatial size adds ~180 shape operations and ran ~8x
slower. The ONNX input is NCHW (N, 1, H, W) (tf2onnx ``inputs_as_nchw``), though the Keras model is NHWC:
onnxruntime's element-wise kernels are ~40x slower on a tensor whose last dimension is 1 (32 ms against
0.9 ms for the scaling Mul+Add of four 256x1600 tiles), and with an NHWC input the in-graph Rescaling
took 77% of the seg model's time; NCHW made the whole model 4x faster (10.3 -> 2.6 ms a tile, one thread).

The seg masks leave the graph as NCHW (N, 4, h, w), the layout the post-processing reads. The transpose
is written into the ``tf.function``; tf2onnx folds it away against its own NHWC<->NCHW transposes, so it
costs nothing at run time (the converted graph has no Transpose node at all).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from steel_edge import __version__
from steel_edge.contract import CLS_OUTPUTS, NORMALISATION, InputSpec, ModelContract, OutputSpec
from steel_export.source import ExportError, KerasSource

OPSET = 17
BATCH_DIM = "batch"
INPUT_NAME = "image"


def convert(source: KerasSource, opset: int = OPSET) -> Any:
    """The Keras model as an ``onnx.ModelProto`` (no contract yet), input ``image`` NCHW float32 0..255."""
    import tensorflow as tf
    import tf2onnx

    model = source.model
    h, w = source.input_size
    spec = tf.TensorSpec((None, h, w, 1), tf.float32, name=INPUT_NAME)

    if source.kind == "seg":
        @tf.function(input_signature=[spec])
        def serve(image: Any) -> dict[str, Any]:
            out = model(image, training=False)
            return {"masks": tf.transpose(out["masks"], (0, 3, 1, 2)), "presence": out["presence"]}
    else:
        @tf.function(input_signature=[spec])
        def serve(image: Any) -> dict[str, Any]:
            return {CLS_OUTPUTS[0]: model(image, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset,
                                                 inputs_as_nchw=[INPUT_NAME])
    except Exception as err:  # tf2onnx raises anything from ValueError to its own errors
        raise ExportError(f"{source.path}: tf2onnx conversion failed ({type(err).__name__}: {err})") from err
    name_batch_dim(proto)
    proto.producer_name = "steel-export"
    proto.producer_version = __version__
    proto.doc_string = (f"steel-edge {source.edge_kind} model ({source.architecture}) exported from "
                        f"{source.path.name} with tf2onnx {tf2onnx.__version__}")
    return proto


def name_batch_dim(proto: Any) -> None:
    """tf2onnx names every unknown dimension ``unk__N``; the only one we have is the batch."""
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


def build_contract(
    source: KerasSource, mask_stride: int | None, precision: Literal["fp32", "int8"] = "fp32",
    created_at: datetime | None = None,
) -> ModelContract:
    """The contract for ``source``; ``mask_stride`` (seg) comes from the converted graph's output size."""
    h, w = source.input_size
    seg = source.kind == "seg"
    if seg:
        outputs: tuple[OutputSpec, ...] = (OutputSpec(name="masks", layout="NCHW", activation="sigmoid"),
                                           OutputSpec(name="presence", layout="NC", activation="sigmoid"))
    else:
        outputs = (OutputSpec(name=CLS_OUTPUTS[0], layout="NC", activation="softmax"),)
    return ModelContract(
        kind=source.edge_kind,
        architecture=source.architecture,
        class_ids=source.class_ids,
        class_names=source.class_names,
        input=InputSpec(name=INPUT_NAME, layout="NCHW", height=h, width=w, resize="none" if seg else "area"),
        normalisation=NORMALISATION,
        outputs=outputs,
        mask_stride=mask_stride if seg else None,
        postprocess=source.postprocess if seg else None,
        precision=precision,
        data_fingerprint=source.data_fingerprint,
        code_version=source.code_version,
        created_at=created_at or datetime.now(timezone.utc).replace(microsecond=0),
    )



def mask_stride_of(proto: Any, input_height: int) -> int:
    """Frame pixels per mask pixel, from the static shape of the ``masks`` output (N, 4, h, w)."""
    for value in proto.graph.output:
        if value.name == "masks":
            h = value.type.tensor_type.shape.dim[2].dim_value
            if h <= 0 or input_height % h:
                raise ExportError(f"masks output height {h} does not divide the input height {input_height}")
            return input_height // h
    raise ExportError("the converted graph has no 'masks' output")


def attach_contract(proto: Any, contract: ModelContract) -> None:
    """Write the contract into ``metadata_props``, replacing any earlier steel-edge entries."""
    entries = contract.to_metadata()
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*keep, *entries.items()]:
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


@contextlib.contextmanager
def staged_file(out: Path) -> Iterator[Path]:
    """A temp path beside ``out``, renamed onto ``out`` only if the block succeeds; removed otherwise.

    Beside, not in /tmp, so that the final rename is atomic (same file system): a reader never sees
    half a model, and a failed export leaves no file behind.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".onnx.part", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp makes it 0600; a model is meant to be read by the daemon's user too
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
