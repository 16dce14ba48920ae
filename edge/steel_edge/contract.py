"""The model contract: what an exported ONNX file promises the edge, stored inside the file itself.

``steel-export`` writes it and ``steel_edge.model.load_model`` reads it, both through this module, so
the two sides cannot disagree about a key or a field. It lives on the light side because the edge must
validate it without TensorFlow or the ``onnx`` package.

Storage: one entry in the ONNX ``metadata_props``, key ``steel_edge.contract``, whose value is the
contract as one JSON object (``ModelContract.model_dump_json()``). One key rather than one per field so
that the contract is read, validated and versioned as a unit: a file cannot carry half of one. The
JSON's ``schema`` field (``steel-edge.model/1``) is checked before anything else, so a file written by
a newer exporter is refused with a message about versions, not a list of unknown fields.

Example (seg)::

    {"schema": "steel-edge.model/1", "kind": "seg", "architecture": "steel_seg",
     "class_ids": [1, 2, 3, 4], "class_names": ["1", "2", "3", "4"],
     "input": {"name": "image", "layout": "NCHW", "height": 256, "width": 1600, "channels": 1,
               "dtype": "float32", "resize": "none"},
     "normalisation": "grayscale 0..255 as float32; scaling happens inside the graph",
     "outputs": [{"name": "masks", "layout": "NCHW", "activation": "sigmoid"},
                 {"name": "presence", "layout": "NC", "activation": "sigmoid"}],
     "mask_stride": 4, "postprocess": {"gate": "hard", ...}, "precision": "fp32",
     "data_fingerprint": "a87e...", "code_version": "0.1.0+gbdb3b2d3a8c6",
     "created_at": "2025-06-01T12:00:00Z"}
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steel_edge.heads import HEADS, head_for
from steel_edge.heads.seg import SKIP_INPUT  # a cascade seg model's second graph input
from steel_edge.postprocess import PostprocessParams

CONTRACT_SCHEMA: Final = "steel-edge.model/1"
# The one metadata_props key holding the contract JSON.
METADATA_KEY = "steel_edge.contract"
SEG_OUTPUTS = HEADS["seg"].outputs
CLS_OUTPUTS = HEADS["cls"].outputs
SEVERSTAL_CLASS_IDS = (1, 2, 3, 4)
NORMALISATION = "grayscale 0..255 as float32; scaling happens inside the graph"


class ModelContractError(ValueError):
    """A model file the edge refuses: unreadable, not ONNX, or without a contract this runtime understands."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Frozen):
    """The single image input. Batch is dynamic (ONNX dim ``batch``); height and width are fixed.

    steel-export writes NCHW (N, 1, H, W): with one channel it is the same bytes as NHWC, but
    onnxruntime's element-wise kernels run ~40x slower on a tensor whose last dimension is 1, and the
    in-graph scaling of an NHWC input made a whole seg model 4x slower (measured, issue #4).
    """

    name: str = Field("image", min_length=1, description="ONNX input name")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="order of the input's dimensions")
    height: int = Field(..., ge=1, description="input height in pixels")
    width: int = Field(..., ge=1, description="input width in pixels")
    channels: Literal[1] = Field(1, description="grayscale")
    dtype: Literal["float32"] = Field("float32", description="element type; values are raw gray levels 0..255")
    resize: Literal["none", "area"] = Field(
        "none", description="none: frames must already be height x width (seg tiles); area: resize any image to "
                            "the input with area averaging (cv2.INTER_AREA), as training did (cls)")


class OutputSpec(_Frozen):
    name: str = Field(..., min_length=1, description="ONNX output name")
    layout: Literal["NCHW", "NC"] = Field(..., description="NCHW: per-class maps; NC: one score per class")
    activation: Literal["sigmoid", "softmax"] = Field(..., description="already applied inside the graph")


class ModelContract(_Frozen):
    """Everything the edge needs to feed a model and read its outputs, and where the model came from."""

    schema_version: Literal["steel-edge.model/1"] = Field("steel-edge.model/1", alias="schema",
                                                          description="contract format version (CONTRACT_SCHEMA)")
    kind: Literal["seg", "cls"] = Field(..., description="seg: per-class masks + presence; cls: one label per image")
    architecture: str = Field(..., min_length=1, description="Keras model name, e.g. steel_seg, steel_cls")
    class_ids: tuple[int, ...] = Field(..., min_length=1, description="class id reported for output channel i")
    class_names: tuple[str, ...] = Field(..., min_length=1, description="human name of output channel i")
    input: InputSpec
    normalisation: str = Field(NORMALISATION, description="what the input values mean; for humans")
    outputs: tuple[OutputSpec, ...] = Field(..., min_length=1)
    mask_stride: int | None = Field(None, ge=1, description="seg: frame pixels per mask pixel, along y and x")
    postprocess: PostprocessParams | None = Field(None, description="seg: tuned per-class post-processing")
    precision: Literal["fp32", "int8"] = Field("fp32", description="int8: static QDQ quantization")
    form: Literal["single", "cascade"] = Field(
        "single", description="seg: single = presence and masks computed for every tile; cascade = the mask decoder "
        f"runs only when some class reaches postprocess.skip_below (second graph input {SKIP_INPUT!r}); same answers")
    data_fingerprint: str = Field(..., description="steel_train.runinfo.data_fingerprint of the training data")
    code_version: str = Field(..., description="code version that trained the model")
    created_at: datetime = Field(..., description="when the ONNX file was written (UTC)")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> ModelContract:
        n = len(self.class_ids)
        if len(self.class_names) != n:
            raise ValueError(f"{n} class_ids but {len(self.class_names)} class_names")
        if len(set(self.class_ids)) != n:
            raise ValueError(f"class_ids repeat: {list(self.class_ids)}")
        head_for(self.kind).check_contract(self)  # each kind's head knows what its contract needs
        return self

    @property
    def mask_size(self) -> tuple[int, int] | None:
        """(h, w) of the seg model's masks, None for cls."""
        if self.mask_stride is None:
            return None
        return self.input.height // self.mask_stride, self.input.width // self.mask_stride

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that carry this contract."""
        return {METADATA_KEY: self.model_dump_json(by_alias=True)}


def parse_contract(metadata: dict[str, str], source: str) -> ModelContract:
    """The contract from a model's metadata map; ``ModelContractError`` naming ``source`` and the problem.

    Checks in the order that gives the most useful message: key present, JSON object, schema version,
    then the fields.
    """
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        present = ", ".join(sorted(metadata)) or "none"
        raise ModelContractError(
            f"{source}: no steel-edge contract in the ONNX metadata (key {METADATA_KEY!r} missing; keys present: "
            f"{present}); export the model with steel-export")
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ModelContractError(f"{source}: metadata {METADATA_KEY!r} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ModelContractError(f"{source}: metadata {METADATA_KEY!r} must hold a JSON object, "
                                 f"got {type(data).__name__}")
    schema = data.get("schema")
    if schema != CONTRACT_SCHEMA:
        what = "has no 'schema' field" if schema is None else f"has schema {schema!r}"
        raise ModelContractError(f"{source}: the contract in {METADATA_KEY!r} {what}; this runtime understands "
                                 f"{CONTRACT_SCHEMA!r} only (re-export the model, or upgrade steel-edge)")
    try:
        return ModelContract.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'contract'}: {e['msg']}" for e in err.errors())
        raise ModelContractError(f"{source}: invalid contract in {METADATA_KEY!r}: {problems}") from err
