"""`Flatten(axis=1)` of `x[N, C, *S]`: the row-major `[N, C*prod(S)]` the FC layer reads."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import node_label
from .base import Code, Refusal
from .flatten_base import FlattenKind


class FlattenOp:
    ops = frozenset({"Flatten"})
    kind = FlattenKind.FLATTEN

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        axis = node.attrs.get("axis", 1)
        if axis % len(src_shape) != 1:
            raise Refusal(Code.FLATTEN_AXIS, f"{node_label(node)} flattens at axis {axis}, not 1")


RULES = [FlattenOp()]
