"""A global pool written as a reduce over all spatial axes with `keepdims=0`: `[N, C, *S] -> [N, C]`.

The reduce is both the pool and the flatten. With `keepdims=1` it gives `[N, C, 1, ..]`, on
which the FC layer is a `1 x 1` convolution.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import node_label
from .base import Code, Refusal, axes_of
from .flatten_base import FlattenKind

SPATIAL_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"})


class ReduceOp:
    ops = SPATIAL_REDUCES
    kind = FlattenKind.REDUCE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        rank = len(src_shape)
        if node.attrs.get("keepdims", 1) or axes_of(node, rank) != set(range(2, rank)):
            raise Refusal(
                Code.REDUCE_NOT_SPATIAL,
                f"{node_label(node)} before {fc_label} is not a keepdims=0 reduce over the spatial axes",
            )


RULES = [ReduceOp()]
