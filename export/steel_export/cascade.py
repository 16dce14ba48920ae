"""The cascade form of a seg model: the mask decoder runs only on tiles where some class may be present.

The single graph computes presence and masks for every tile. On a line most tiles are clean, and the
post-processing's skip rule (``PostprocessParams.skip_below``, rule 0 in ``steel_edge.postprocess``) reads
no mask of a tile where every class's presence is under its ``skip_below`` value. The cascade form moves
that test into the graph: the encoder and presence head run on every batch, and an ONNX ``If`` runs the
decoder only when some tile of the batch passes; otherwise the masks are zeros, which the skip rule never
reads. So both forms give the same answers, in one file and one onnxruntime call (docs/design.md "Cascade").

The skip values are a second graph input, ``skip_below`` (4,): the edge feeds the values of the
post-processing it runs (the contract's tuned ones, or a config override), and zeros make the decoder run on
every tile (how export proves parity). An input, not a constant, so an override needs no new file; and not an
initializer doubling as an input, which onnxruntime warns keeps it from optimising the graph.

The split is found from the graph itself: the encoder is everything ``presence`` depends on, the decoder
everything else ``masks`` depends on. Initializers only the decoder uses move into the decoder's subgraph,
so onnxruntime's fusions (batch norm into convolutions) see them as the subgraph's own constants.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from steel_edge.contract import SKIP_INPUT
from steel_export.source import ExportError

MASKS, PRESENCE = "masks", "presence"


def _fan_in(graph: onnx.GraphProto, outputs: Iterable[str]) -> set[int]:
    """Indices of the nodes the named tensors depend on."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    seen: set[int] = set()
    stack = list(outputs)
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in seen:
            continue
        seen.add(i)
        stack.extend(graph.node[i].input)
    return seen


def split_nodes(graph: onnx.GraphProto) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(encoder and presence head, mask decoder) nodes, each in the graph's order."""
    names = {o.name for o in graph.output}
    if names != {MASKS, PRESENCE}:
        raise ExportError(f"a cascade needs a seg graph with outputs {MASKS!r} and {PRESENCE!r}, got {sorted(names)}")
    encoder = _fan_in(graph, [PRESENCE])
    decoder = _fan_in(graph, [MASKS]) - encoder
    if not decoder:
        raise ExportError("the masks output depends on nothing the presence output does not: no decoder to skip")
    return ([n for i, n in enumerate(graph.node) if i in encoder],
            [n for i, n in enumerate(graph.node) if i in decoder])


def to_cascade(proto: onnx.ModelProto, skip_below: Sequence[float], mask_size: tuple[int, int]) -> onnx.ModelProto:
    """A copy of the single-graph seg model ``proto`` in cascade form (module docstring)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    encoder, decoder = split_nodes(graph)
    n_classes = len(skip_below)

    # Initializers the decoder alone reads become the then-branch's own.
    enc_inputs = {name for node in encoder for name in node.input}
    dec_inputs = {name for node in decoder for name in node.input}
    dec_only = {init.name for init in graph.initializer} & (dec_inputs - enc_inputs)
    dec_inits = [init for init in graph.initializer if init.name in dec_only]
    keep_inits = [init for init in graph.initializer if init.name not in dec_only]

    decoded = "masks_decoded"
    then_nodes = []
    for node in decoder:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.output[:] = [decoded if out == MASKS else out for out in copy.output]
        then_nodes.append(copy)
    masks_type = helper.make_tensor_value_info(decoded, TensorProto.FLOAT, None)
    then_branch = helper.make_graph(then_nodes, "mask_decoder", [], [masks_type], initializer=dec_inits)

    h, w = mask_size
    zeros = "masks_skipped"
    else_branch = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["cascade_zero_shape"], [zeros],
                          value=numpy_helper.from_array(np.zeros(1, np.float32)))],
        "skipped", [], [helper.make_tensor_value_info(zeros, TensorProto.FLOAT, None)])

    gate = [
        # Does any class of any tile in the batch reach its skip value? Then the decoder runs for the batch.
        helper.make_node("GreaterOrEqual", [PRESENCE, SKIP_INPUT], ["cascade_pass"]),
        helper.make_node("Cast", ["cascade_pass"], ["cascade_pass_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["cascade_pass_f"], ["cascade_any"], keepdims=0),
        helper.make_node("Cast", ["cascade_any"], ["cascade_run_decoder"], to=TensorProto.BOOL),
        # The skipped branch's zeros: (batch, classes, h, w).
        helper.make_node("Shape", [PRESENCE], ["cascade_batch"], end=1),
        helper.make_node("Concat", ["cascade_batch", "cascade_mask_dims"], ["cascade_zero_shape"], axis=0),
        helper.make_node("If", ["cascade_run_decoder"], [MASKS], then_branch=then_branch, else_branch=else_branch),
    ]
    keep_inits += [
        numpy_helper.from_array(np.array([n_classes, h, w], np.int64), "cascade_mask_dims"),
    ]
    del graph.node[:]
    graph.node.extend([*encoder, *gate])
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    graph.input.append(helper.make_tensor_value_info(SKIP_INPUT, TensorProto.FLOAT, [n_classes]))
    # Value infos of tensors that moved into the subgraph would describe names the main graph no longer has.
    moved = {out for node in decoder for out in node.output}
    kept_info = [vi for vi in graph.value_info if vi.name not in moved]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    onnx.checker.check_model(model)
    return model


def to_single(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The single graph back from a cascade model (its decoder put back in line); a single graph unchanged.
    For measurements that compare the forms or count a stage's work."""
    if_node = next((n for n in proto.graph.node if n.op_type == "If"), None)
    if if_node is None:
        return proto
    then = next(a.g for a in if_node.attribute if a.name == "then_branch")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    # The gate's nodes are the ones whose outputs to_cascade named cascade_*.
    nodes = [n for n in g.node if n.op_type != "If" and not any(o.startswith("cascade_") for o in n.output)]
    decoder = []
    for node in then.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.output[:] = [MASKS if o == then.output[0].name else o for o in copy.output]
        decoder.append(copy)
    del g.node[:]
    g.node.extend(nodes + decoder)
    inits = [i for i in g.initializer if i.name != "cascade_mask_dims"]
    del g.initializer[:]
    g.initializer.extend([*inits, *then.initializer])
    inputs = [i for i in g.input if i.name != SKIP_INPUT]
    del g.input[:]
    g.input.extend(inputs)
    return out


def cascade_summary(proto: onnx.ModelProto) -> dict[str, Any]:
    """Node counts of the two stages, for the export report."""
    encoder, decoder = split_nodes(proto.graph)
    return {"encoder_nodes": len(encoder), "decoder_nodes": len(decoder)}
