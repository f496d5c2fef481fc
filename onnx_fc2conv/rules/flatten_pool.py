"""A global pool producing the head's `[N, C, 1, ..]` map (what `--dense` moves the head before).

Dense mode runs the `1 x 1` head on the map before the pool, which is dropped: a class map. A
linear head on an averaging pool averages back to the original logits.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import producer, static_tail
from .base import GLOBAL_POOLS, axes_of
from .flatten_base import Pool
from .flatten_reduce import SPATIAL_REDUCES

RULES: list = []  # a step of the head walker
LINEAR_POOLS = frozenset({"GlobalAveragePool", "ReduceMean", "ReduceSum"})


def match_pool(feature: gs.Tensor) -> Pool | None:
    node = producer(feature)
    if node is None or not node.inputs:
        return None
    source = node.inputs[0]
    src_shape = static_tail(source)
    if src_shape is None or len(src_shape) < 2:
        return None
    rank = len(src_shape) + 1
    if node.op in GLOBAL_POOLS:
        return Pool(node, source, src_shape)
    if node.op in SPATIAL_REDUCES and node.attrs.get("keepdims", 1) and axes_of(node, rank) == set(range(2, rank)):
        return Pool(node, source, src_shape)
    return None
