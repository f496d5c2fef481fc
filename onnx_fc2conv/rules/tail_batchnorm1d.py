"""BatchNorm1d after an FC layer, as torch exports it: `Unsqueeze(2) -> BatchNormalization -> Squeeze(2)`.

The Unsqueeze makes `[N, M]` into `[N, M, 1]` for a BatchNormalization over axis 1; on
`[N, M, *S]` BatchNormalization already normalises axis 1 at every location, so the Unsqueeze
and Squeeze go and the BatchNormalization reads and writes the map directly.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit, is_constant, node_label, sole_user
from .base import Action, Code, Refusal, TailOp, TailWalk, axes_of


class BatchNorm1d:
    ops = frozenset({"Unsqueeze"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        bn = sole_user(walk.graph, node.outputs[0])
        squeeze = sole_user(walk.graph, bn.outputs[0]) if bn is not None and bn.op == "BatchNormalization" else None
        if (
            bn is None
            or axes_of(node, 3) != {2}
            or squeeze is None
            or squeeze.op != "Squeeze"
            or axes_of(squeeze, 3) != {2}
        ):
            raise Refusal(
                Code.BATCHNORM_PATTERN,
                f"{node_label(node)} after the FC layers is not part of Unsqueeze -> BatchNormalization -> Squeeze",
            )
        for inp in bn.inputs[1:]:
            if not is_constant(inp):
                raise Refusal(Code.NOT_CONSTANT, f"{node_label(bn)}: parameter '{inp.name}' is not a constant")
        walk.visited.update({id(bn), id(squeeze)})
        return TailOp(self, bn, Action.BN_UNWRAP, (squeeze.outputs[0],), affine=True, extra=(node, squeeze))

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        unsqueeze, squeeze = op.extra
        bn = op.node
        source, result = unsqueeze.inputs[0], squeeze.outputs[0]
        squeeze.outputs.clear()
        bn.inputs[0] = source
        bn.outputs[0] = result
        unsqueeze.outputs.clear()


RULES = [BatchNorm1d()]
