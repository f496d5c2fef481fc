"""A final Flatten, Reshape or Squeeze that leaves `[N, M]` as it is.

On `[N, M]` it changes nothing; on `[N, M, *S]` it would destroy the map. It becomes an
Identity, so the output is the map `[N, M, *S]`. (A `Shape` of a head tensor may feed its
target; the walker checks that it feeds nothing else.)
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit, shape
from .base import Action, TailOp, TailWalk


class FinalFlatten:
    ops = frozenset({"Flatten", "Reshape", "Squeeze"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        out_shape, in_shape = shape(node.outputs[0]), shape(tensor)
        if out_shape is None or in_shape is None or len(out_shape) != 2 or len(in_shape) != 2 or out_shape[1] != width:
            return None
        return TailOp(self, node, Action.TO_IDENTITY, (node.outputs[0],), affine=True)

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        node = op.node
        node.op = "Identity"
        while len(node.inputs) > 1:
            node.inputs.pop()
        node.attrs.clear()


RULES = [FinalFlatten()]
