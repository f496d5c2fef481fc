"""A Reshape whose target resolves to `[N, C*prod(S)]` for every batch the model allows.

Constant targets (`[-1, K]`, `[0, -1]`, `[1, K]` with the batch baked: the Reshape goes, so a
baked batch does not matter) or targets computed from `Shape` (`x.view(x.size(0), -1)`),
read from the inferred shapes; before opset 5 the target is an attribute.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import constant, node_label, shape
from .base import Code, Refusal
from .flatten_base import FlattenKind


def is_flatten(node: gs.Node, src_shape: tuple) -> bool:
    """`[N, *tail] -> [N, prod(tail)]`: from a constant target resolved here, else from the shape
    inference's symbolic result for the output (a target computed from `Shape`)."""
    k = math.prod(src_shape[1:])
    target = constant(node.inputs[1]) if len(node.inputs) > 1 else np.array(node.attrs.get("shape", []), np.int64)
    if target is None:
        return shape(node.outputs[0]) == (src_shape[0], k)
    dims = [int(d) for d in target.reshape(-1)]
    if len(dims) != 2 or dims.count(-1) > 1:
        return False
    if not node.attrs.get("allowzero", 0):
        dims = [(src_shape[0], k)[i] if d == 0 else d for i, d in enumerate(dims)]
    n = src_shape[0]
    if not isinstance(n, int):  # any batch: [-1, K], or [N, -1] / [N, K] with N copied by a 0
        return dims in ([-1, k], [n, k], [n, -1])
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known <= 0 or (n * k) % known:
            return False
        dims[dims.index(-1)] = (n * k) // known
    return dims == [n, k]


class ReshapeOp:
    ops = frozenset({"Reshape"})
    kind = FlattenKind.RESHAPE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        if not is_flatten(node, src_shape):
            raise Refusal(
                Code.RESHAPE_NOT_FLATTEN, f"{node_label(node)} before {fc_label} is not a flatten to [N, C*H*W]"
            )


RULES = [ReshapeOp()]
