"""A global pool written as a reduce over all spatial axes with `keepdims=0`: `[N, C, *S] -> [N, C]`.

The reduce is both the pool and the flatten. With `keepdims=1` it gives `[N, C, 1, ..]`, on
which the FC layer is a `1 x 1` convolution. tf2onnx writes Keras' GlobalAveragePooling2D as a
reduce over axes `1..r-2` of the channel-last `Transpose(perm=[0, 2, .., 1])` of the map: the same
reduce over axes `2..` of the map before the Transpose gives the same `[N, C]` values. Between that
Transpose and the reduce there may be layers that map each location alone (a Keras Dense on the
map, written as a Tensordot: flatten_channel_last.py); the reduce then reads their output
transposed back to channel-first.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import node_label
from .base import Code, Refusal, axes_of
from .flatten_base import FlattenKind
from .flatten_channel_last import channel_last_map

SPATIAL_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"})


class ReduceOp:
    ops = SPATIAL_REDUCES
    kind = FlattenKind.REDUCE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        rank = len(src_shape)
        try:
            spatial = map_spatial_axes(node, rank)
        except Refusal as refusal:
            raise Refusal(
                refusal.code, f"{refusal.reason}: {node_label(node)} before {fc_label} is no global pool"
            ) from None
        if node.attrs.get("keepdims", 1) or axes_of(node, rank) != spatial:
            raise Refusal(
                Code.REDUCE_NOT_SPATIAL,
                f"{node_label(node)} before {fc_label} is not a keepdims=0 reduce over the spatial axes",
            )


RULES = [ReduceOp()]


def map_spatial_axes(node: gs.Node, rank: int) -> set[int]:
    """The spatial axes of the map a reduce reads: 2.. channel-first, 1..-2 where it reads the map
    channel-last (channel_last_map; Refusal: through a Tensordot that is not pointwise)."""
    return set(range(2, rank)) if channel_last_map(node.inputs[0], rank) is None else set(range(1, rank - 1))
