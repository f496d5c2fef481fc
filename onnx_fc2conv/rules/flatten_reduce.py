"""A global pool written as a reduce over all spatial axes with `keepdims=0`: `[N, C, *S] -> [N, C]`.

The reduce is both the pool and the flatten. With `keepdims=1` it gives `[N, C, 1, ..]`, on
which the FC layer is a `1 x 1` convolution. tf2onnx writes Keras' GlobalAveragePooling2D as a
reduce over axes `1..r-2` of the channel-last `Transpose(perm=[0, 2, .., 1])` of the map: the same
reduce over axes `2..` of the map before the Transpose gives the same `[N, C]` values.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import node_label, producer
from .base import Code, Refusal, axes_of
from .flatten_base import FlattenKind
from .flatten_nhwc import channel_last_perm

SPATIAL_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"})


class ReduceOp:
    ops = SPATIAL_REDUCES
    kind = FlattenKind.REDUCE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        rank = len(src_shape)
        spatial = set(range(2, rank)) if channel_last_source(node, rank) is None else set(range(1, rank - 1))
        if node.attrs.get("keepdims", 1) or axes_of(node, rank) != spatial:
            raise Refusal(
                Code.REDUCE_NOT_SPATIAL,
                f"{node_label(node)} before {fc_label} is not a keepdims=0 reduce over the spatial axes",
            )


RULES = [ReduceOp()]


def channel_last_source(node: gs.Node, rank: int) -> gs.Tensor | None:
    """The channel-first map when the reduce reads it through a channel-last Transpose."""
    transpose = producer(node.inputs[0])
    if transpose is None or transpose.op != "Transpose":
        return None
    if tuple(transpose.attrs.get("perm", ())) != channel_last_perm(rank):
        return None
    return transpose.inputs[0]
