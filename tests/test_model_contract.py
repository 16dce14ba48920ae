"""The edge's model loader and the contract it reads: no TensorFlow, small ONNX graphs built by hand.

Every way a model file can be wrong must end in a ``ModelContractError`` that names the file and what is
wrong, at load time: not ONNX, corrupt, no contract, a foreign or newer contract, a contract that lies
about its own graph.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from steel_edge.contract import (
    CONTRACT_SCHEMA,
    METADATA_KEY,
    InputSpec,
    ModelContract,
    ModelContractError,
    OutputSpec,
    parse_contract,
)
from steel_edge.model import load_model
from steel_edge.postprocess import PostprocessParams

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SEG_H, SEG_W, STRIDE = 64, 256, 4
CLS_SIZE = 32
CLASSES = ("a", "b", "c")


def seg_contract(**changes: Any) -> ModelContract:
    base = ModelContract(
        kind="seg", architecture="toy_seg", class_ids=(1, 2, 3, 4), class_names=("1", "2", "3", "4"),
        input=InputSpec(height=SEG_H, width=SEG_W),
        outputs=(OutputSpec(name="masks", layout="NCHW", activation="sigmoid"),
                 OutputSpec(name="presence", layout="NC", activation="sigmoid")),
        mask_stride=STRIDE, postprocess=PostprocessParams(), data_fingerprint="f" * 64, code_version="test",
        created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    return base.model_copy(update=changes)


def cls_contract() -> ModelContract:
    return ModelContract(
        kind="cls", architecture="toy_cls", class_ids=(0, 1, 2), class_names=CLASSES,
        input=InputSpec(height=CLS_SIZE, width=CLS_SIZE, resize="area"),
        outputs=(OutputSpec(name="probs", layout="NC", activation="softmax"),),
        data_fingerprint="f" * 64, code_version="test", created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any],
           metadata: dict[str, str] | None) -> Any:
    model = helper.make_model(helper.make_graph(nodes, "toy", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    return model


def seg_onnx(metadata: dict[str, str] | None, layout: str = "NCHW", height: int = SEG_H) -> Any:
    """Scale, average-pool by the stride, 1x1 conv to four sigmoid masks; presence = max over each mask."""
    shape = ["batch", 1, height, SEG_W] if layout == "NCHW" else ["batch", height, SEG_W, 1]
    nodes = [helper.make_node("Mul", ["image", "scale"], ["scaled"])]
    src = "scaled"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("AveragePool", [src], ["pooled"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["masks"]),
        helper.make_node("GlobalMaxPool", ["masks"], ["gmp"]),
        helper.make_node("Flatten", ["gmp"], ["presence"]),
    ]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
             numpy_helper.from_array(np.array([1, -1, 2, -2], np.float32).reshape(4, 1, 1, 1), "w"),
             numpy_helper.from_array(np.array([-0.5, 0.5, -1, 1], np.float32), "b")]
    h, w = height // STRIDE, SEG_W // STRIDE
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", 4, h, w]),
                   helper.make_tensor_value_info("presence", TensorProto.FLOAT, ["batch", 4])], inits, metadata)


def cls_onnx(metadata: dict[str, str] | None) -> Any:
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    inits = [numpy_helper.from_array(np.array([[0.01, 0.0, -0.01]], np.float32), "w")]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, CLS_SIZE, CLS_SIZE])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])], inits, metadata)


def save(model: Any, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def seg_file(tmp_path: Path) -> Path:
    return save(seg_onnx(seg_contract().to_metadata()), tmp_path / "seg.onnx")


# ---------------------------------------------------------------- good files


def test_seg_model_loads_and_predicts(seg_file: Path) -> None:
    model = load_model(seg_file, expect_kind="seg")
    assert model.contract == seg_contract()
    assert model.contract.mask_size == (SEG_H // STRIDE, SEG_W // STRIDE)
    assert model.sha256 == hashlib.sha256(seg_file.read_bytes()).hexdigest()
    assert model.path == seg_file
    assert model.threads == len(os.sched_getaffinity(0))
    images = np.random.default_rng(0).integers(0, 256, (3, SEG_H, SEG_W), dtype=np.uint8)
    probs, presence = model.predict_seg(images)
    assert probs.shape == (3, 4, SEG_H // STRIDE, SEG_W // STRIDE) and probs.dtype == np.float32
    assert presence.shape == (3, 4) and presence.dtype == np.float32
    np.testing.assert_allclose(presence, probs.max(axis=(2, 3)), rtol=1e-6)
    tile = images[0]
    assert model.fit_input(tile) is tile
    one, _ = model.predict_seg(tile)
    np.testing.assert_array_equal(one, probs[:1])
    empty, no_presence = model.predict_seg(images[:0])
    assert empty.shape == (0, 4, SEG_H // STRIDE, SEG_W // STRIDE) and no_presence.shape == (0, 4)


def test_threads_override_and_contract_frozen(seg_file: Path) -> None:
    model = load_model(seg_file, threads=1, spinning=False)
    assert model.threads == 1
    with pytest.raises(ValidationError):
        model.contract.kind = "cls"  # type: ignore[misc]
    with pytest.raises(ValueError, match="threads"):
        load_model(seg_file, threads=0)


def test_nhwc_input_layout_is_understood(tmp_path: Path) -> None:
    contract = seg_contract(input=InputSpec(layout="NHWC", height=SEG_H, width=SEG_W))
    model = load_model(save(seg_onnx(contract.to_metadata(), layout="NHWC"), tmp_path / "nhwc.onnx"))
    probs, _ = model.predict_seg(np.zeros((2, SEG_H, SEG_W), np.uint8))
    assert probs.shape == (2, 4, SEG_H // STRIDE, SEG_W // STRIDE)


def test_cls_model_loads_predicts_and_resizes(tmp_path: Path) -> None:
    model = load_model(save(cls_onnx(cls_contract().to_metadata()), tmp_path / "cls.onnx"), expect_kind="cls")
    image = model.fit_input(np.full((200, 200), 100, np.uint8))
    assert image.shape == (CLS_SIZE, CLS_SIZE)
    probs = model.predict_cls(np.stack([image, image]))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.contract.class_names == CLASSES
    assert model.predict_cls(np.zeros((0, CLS_SIZE, CLS_SIZE), np.uint8)).shape == (0, 3)
    with pytest.raises(ValueError, match="predict_seg needs a seg model"):
        model.predict_seg(np.stack([image]))


def test_wrong_frames_are_refused_with_sizes(seg_file: Path) -> None:
    model = load_model(seg_file)
    with pytest.raises(ValueError, match=rf"expected images of shape \(N, {SEG_H}, {SEG_W}\)"):
        model.predict_seg(np.zeros((1, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        model.predict_seg(np.zeros((1, SEG_H, SEG_W), np.float32))
    with pytest.raises(ValueError, match="does not resize"):
        model.fit_input(np.zeros((10, 10), np.uint8))


# ---------------------------------------------------------------- refused files


def test_kind_mismatch_is_refused(seg_file: Path) -> None:
    with pytest.raises(ModelContractError, match="a seg model, but a cls model is needed"):
        load_model(seg_file, expect_kind="cls")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="not found"):
        load_model(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelContractError, match=r"empty\.onnx: empty file"):
        load_model(empty)


def test_text_file_renamed_onnx_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 20)
    with pytest.raises(ModelContractError, match=r"notes\.onnx: not an ONNX file"):
        load_model(path)


def test_truncated_onnx_is_corrupt(seg_file: Path, tmp_path: Path) -> None:
    data = seg_file.read_bytes()
    path = tmp_path / "broken.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelContractError, match=r"broken\.onnx: a corrupt or truncated ONNX file"):
        load_model(path)


def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    path = save(seg_onnx(None), tmp_path / "bare.onnx")
    with pytest.raises(ModelContractError, match=rf"bare\.onnx: no steel-edge contract .*{METADATA_KEY}.*none"):
        load_model(path)


def test_foreign_metadata_is_refused_and_listed(tmp_path: Path) -> None:
    # e.g. what another exporter writes: class names under its own keys
    path = save(seg_onnx({"names": "{0: 'scratch'}", "stride": "32"}), tmp_path / "yolo.onnx")
    with pytest.raises(ModelContractError, match="keys present: names, stride"):
        load_model(path)


@pytest.mark.parametrize("schema", ["steel-edge.model/2", "other-tool/1"])
def test_foreign_or_newer_schema_is_refused(tmp_path: Path, schema: str) -> None:
    data = json.loads(seg_contract().model_dump_json(by_alias=True))
    data["schema"] = schema
    path = save(seg_onnx({METADATA_KEY: json.dumps(data)}), tmp_path / "future.onnx")
    with pytest.raises(ModelContractError, match=rf"has schema '{schema}'; this runtime understands "
                                                 rf"'{CONTRACT_SCHEMA}' only"):
        load_model(path)


def test_contract_without_schema_field(tmp_path: Path) -> None:
    data = json.loads(seg_contract().model_dump_json(by_alias=True))
    del data["schema"]
    with pytest.raises(ModelContractError, match="has no 'schema' field"):
        load_model(save(seg_onnx({METADATA_KEY: json.dumps(data)}), tmp_path / "x.onnx"))


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object, got list"),
])
def test_unreadable_contract(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ModelContractError, match=message):
        load_model(save(seg_onnx({METADATA_KEY: value}), tmp_path / "bad.onnx"))


def test_contract_missing_key_is_named(tmp_path: Path) -> None:
    data = json.loads(seg_contract().model_dump_json(by_alias=True))
    del data["class_names"]
    data["input"]["height"] = -3
    with pytest.raises(ModelContractError, match=r"invalid contract .*class_names: Field required.*input\.height"):
        load_model(save(seg_onnx({METADATA_KEY: json.dumps(data)}), tmp_path / "bad.onnx"))


def test_contract_that_disagrees_with_its_graph(tmp_path: Path) -> None:
    lying = seg_contract(input=InputSpec(height=SEG_H * 2, width=SEG_W), mask_stride=STRIDE)
    with pytest.raises(ModelContractError, match=r"graph input 'image' has shape \['batch', 1, 64, 256\]"):
        load_model(save(seg_onnx(lying.to_metadata()), tmp_path / "lie.onnx"))
    renamed = seg_contract(input=InputSpec(name="pixels", height=SEG_H, width=SEG_W))
    with pytest.raises(ModelContractError, match="contract input 'pixels' is not a graph input"):
        load_model(save(seg_onnx(renamed.to_metadata()), tmp_path / "renamed.onnx"))


# ---------------------------------------------------------------- the contract model itself


def test_contract_round_trips_through_metadata() -> None:
    contract = seg_contract()
    meta = contract.to_metadata()
    assert list(meta) == [METADATA_KEY]
    assert json.loads(meta[METADATA_KEY])["schema"] == CONTRACT_SCHEMA
    assert parse_contract(meta, "x.onnx") == contract


def test_contract_rules() -> None:
    good = json.loads(seg_contract().model_dump_json(by_alias=True))
    with pytest.raises(ValidationError, match="needs mask_stride and postprocess"):
        ModelContract.model_validate({**good, "postprocess": None})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelContract.model_validate({**good, "colour": "blue"})
    with pytest.raises(ValidationError, match="outputs"):
        ModelContract.model_validate({**good, "outputs": [{"name": "probs", "layout": "NC", "activation": "softmax"}]})
    with pytest.raises(ValidationError, match="class_names"):
        ModelContract.model_validate({**good, "class_names": ["1", "2"]})
    with pytest.raises(ValidationError, match="does not divide"):
        ModelContract.model_validate({**good, "mask_stride": 3})
    cls = json.loads(cls_contract().model_dump_json(by_alias=True))
    with pytest.raises(ValidationError, match="seg models only"):
        ModelContract.model_validate({**cls, "mask_stride": 4})
    with pytest.raises(ValidationError, match="single form only"):
        ModelContract.model_validate({**cls, "form": "cascade"})
    with pytest.raises(ValidationError, match="cascade seg model needs a hard gate and postprocess.skip_below"):
        ModelContract.model_validate({**good, "form": "cascade"})
    cascade = {**good, "form": "cascade", "postprocess": {**good["postprocess"], "skip_below": [0.5, 0.5, 0.5, 0.5]}}
    assert ModelContract.model_validate(cascade).form == "cascade"
    with pytest.raises(ValidationError, match="form"):
        ModelContract.model_validate({**good, "form": "two-stage"})


def test_cascade_contract_on_a_graph_without_the_skip_input_is_refused(tmp_path: Path) -> None:
    params = PostprocessParams(skip_below=(0.5, 0.5, 0.5, 0.5))
    contract = seg_contract(form="cascade", postprocess=params)
    path = save(seg_onnx(contract.to_metadata()), tmp_path / "cascade.onnx")
    with pytest.raises(ModelContractError, match=r"a cascade seg model needs the graph input 'skip_below' "
                                                 r"of shape \[4\]"):
        load_model(path)
