"""Softmax, LogSoftmax and Hardmax before opset 13 on a map.

Before opset 13 these coerce their input to 2-D at `axis`: with `axis=1` on `[N, M, H, W]` they
would normalise over `M*H*W` jointly. Moving the classes last (`Transpose [0, 2, .., 1]`),
normalising over the last axis, and moving them back normalises over `M` at every location.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit
from .base import Action, TailOp, TailWalk
from .tail_class_axis import NORMALISING, require_class_axis


class LegacySoftmax:
    ops = NORMALISING

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        if walk.opset >= 13 or walk.spatial == 0:
            return None
        require_class_axis(node, walk.opset)
        return TailOp(self, node, Action.LEGACY_SOFTMAX, (node.outputs[0],), affine=False)

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        node = op.node
        rank = spatial + 2
        out = node.outputs[0]
        moved = edit.variable(f"{out.name}_classes_last")
        result = edit.variable(f"{out.name}_per_pixel")
        edit.add_node(
            "Transpose", f"{node.name}_to_last", [node.inputs[0]], [moved], at=node, perm=[0, *range(2, rank), 1]
        )
        node.inputs[0] = moved
        node.outputs[0] = result
        edit.add_node(
            "Transpose", f"{node.name}_to_first", [result], [out], at=node, perm=[0, rank - 1, *range(1, rank - 1)]
        )
        node.attrs["axis"] = rank - 1


RULES = [LegacySoftmax()]
