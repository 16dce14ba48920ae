"""Heads: one object per model kind, owning everything specific to that kind (docs/design.md, "Heads").

A head checks a contract's outputs for its kind, splits a batch of raw onnxruntime outputs into one raw
answer per frame, turns a frame's raw answer into a ``TileResult`` (defects, presence, masks), and scores
outputs for export's parity and quality figures. The daemon, ``steel-train evaluate`` and ``steel-export``
call ``head_for(contract.kind)`` instead of branching on the kind, so adding a model kind is one module
here plus its entry in ``HEADS`` (and the kind's name in ``steel_edge.contract.ModelKind``).
"""

from __future__ import annotations

from steel_edge.heads.base import Head, Outputs, Raw
from steel_edge.heads.cls import ClsHead
from steel_edge.heads.seg import SegHead

HEADS: dict[str, Head] = {"seg": SegHead(), "cls": ClsHead()}


def head_for(kind: str) -> Head:
    """The head of a model kind; ``KeyError`` naming the kinds there are for an unknown one."""
    try:
        return HEADS[kind]
    except KeyError:
        raise KeyError(f"no head for model kind {kind!r} (kinds: {sorted(HEADS)})") from None


__all__ = ["HEADS", "ClsHead", "Head", "Outputs", "Raw", "SegHead", "head_for"]
