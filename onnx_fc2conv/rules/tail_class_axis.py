"""Ops over the class axis: Softmax, LogSoftmax, Hardmax, ArgMax, ArgMin, TopK.

On `[N, M]` the class axis is `1` (or `-1`); on `[N, M, *S]` it is `1`, per location. Index ops
end a branch: what reads their indices cannot be proven to work on a map. Softmax-family ops
before opset 13 coerce to 2-D at `axis` and are handled by the legacy Softmax rule instead.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit, is_output, node_label
from .base import Action, Code, Refusal, TailOp, TailWalk

NORMALISING = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
INDEX = frozenset({"ArgMax", "ArgMin", "TopK"})


def require_class_axis(node: gs.Node, opset: int) -> None:
    if node.op in NORMALISING:
        default = -1 if opset >= 13 else 1
    else:
        default = -1 if node.op == "TopK" else 0
    axis = node.attrs.get("axis", default)
    if axis not in (-1, 1):
        raise Refusal(Code.CLASS_AXIS, f"{node_label(node)} works on axis {axis}, not the class axis")


class ClassAxis:
    ops = NORMALISING | INDEX

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        if node.op in NORMALISING and walk.opset < 13 and walk.spatial > 0:
            return None  # the legacy Softmax rule
        require_class_axis(node, walk.opset)
        if node.op in NORMALISING:
            return TailOp(self, node, Action.CLASS_AXIS, (node.outputs[0],), affine=False)
        ends = []
        for out in node.outputs:
            if out.name and out.outputs:
                raise Refusal(Code.INDEX_USED, f"the output of {node_label(node)} is used by further nodes")
            if is_output(walk.graph, out):
                ends.append(out)
        return TailOp(self, node, Action.CLASS_AXIS, (), affine=False, outputs=tuple(ends))

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        op.node.attrs["axis"] = 1


RULES = [ClassAxis()]
