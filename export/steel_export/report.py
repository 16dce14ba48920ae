"""What an exported ONNX file is (graph, inputs, outputs, contract), for the export report and for
``steel-export check``.

``check_file`` opens the file with the edge's own loader first, so a file the daemon would refuse is
refused here with the same message. With ``--keras`` the parity check of the export runs again (on ``--data`` or
the shared sample, topped up with synthetic frames); with ``--data`` alone the model is scored against
that folder's truth (Kaggle Dice or accuracy).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from steel_edge.contract import ModelContract
from steel_edge.model import EdgeModel, load_model
from steel_export.images import PARITY_IMAGES, REAL_LIMIT, evaluation_set, real_images
from steel_export.parity import TOLERANCE, check_parity, onnx_outputs, truth_score
from steel_export.source import load_source


def describe_io(model: EdgeModel) -> dict[str, Any]:
    """Inputs and outputs as the session sees them: name, shape (``batch`` for the dynamic dim), type."""
    def spec(args: Any) -> list[dict[str, Any]]:
        return [{"name": a.name, "shape": list(a.shape), "type": a.type} for a in args]

    return {"inputs": spec(model.session.get_inputs()), "outputs": spec(model.session.get_outputs())}


def graph_summary(proto: Any) -> dict[str, Any]:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    ops = Counter(n.op_type for n in proto.graph.node)
    return {"opset": opset, "nodes": len(proto.graph.node), "op_counts": dict(sorted(ops.items())),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip()}


def contract_json(contract: ModelContract) -> dict[str, Any]:
    return contract.model_dump(mode="json", by_alias=True)


def check_file(
    path: Path | str, keras: Path | str | None = None, data: Path | None = None, images: int = PARITY_IMAGES,
    tolerance: float = TOLERANCE, threads: int | None = None, real_limit: int = REAL_LIMIT,
) -> dict[str, Any]:
    """One JSON-ready dict about ``path``; ``passed`` is False when a parity check ran and failed."""
    import onnx

    path = Path(path)
    edge = load_model(path, threads=threads)  # ModelContractError for anything the edge would refuse
    proto = onnx.load(str(path), load_external_data=False)
    contract = edge.contract
    summary = graph_summary(proto)
    report: dict[str, Any] = {
        "file": str(path), "sha256": edge.sha256, "bytes": path.stat().st_size, "kind": contract.kind,
        "precision": contract.precision, **summary, **describe_io(edge),
        "contract": contract_json(contract), "passed": True,
    }
    size = (contract.input.height, contract.input.width)
    if keras is not None:
        source = load_source(keras)
        if source.edge_kind != contract.kind or source.input_size != size:
            raise ValueError(f"{keras} is a {source.edge_kind} model at {source.input_size}, {path.name} a "
                             f"{contract.kind} model at {size}: not the same model")
        chosen, note = evaluation_set(source.kind, size, contract.class_names, data, images, min(images, real_limit))
        # An INT8 file is compared at its own precision: the figure is then a size of the quantization error.
        parity = check_parity(source.model, source.kind, edge, chosen, tolerance, note)
        report["max_abs_diff"] = parity.max_abs_diff
        report["parity"] = parity.to_dict()
        report["passed"] = parity.passed or contract.precision == "int8"
        report["provenance_matches"] = (source.data_fingerprint == contract.data_fingerprint
                                        and source.code_version == contract.code_version)
    elif data is not None:
        kind = "seg" if contract.kind == "seg" else "cls"
        if contract.kind == "cls" and contract.architecture == "steel_baseline":
            kind = "baseline"
        chosen = real_images(data, kind, size, contract.class_names, images)
        out = onnx_outputs(edge, np.stack([e.image for e in chosen]))
        score, n = truth_score(out, chosen, contract)
        report["truth"] = {"data": str(data), "images": len(chosen), "scored_images": n,
                           "metric": "kaggle_dice" if contract.kind == "seg" else "accuracy", "value": score}
    return report
