"""A Reshape whose target resolves to `[N, C*prod(S)]` for every batch the model allows.

Constant targets (`[-1, K]`, `[0, -1]`, `[1, K]` with the batch baked: the Reshape goes, so a
baked batch does not matter) or targets computed from `Shape` (`x.view(x.size(0), -1)`),
evaluated at two batches; before opset 5 the target is an attribute.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import node_label
from ..shape_eval import evaluate_int_tensor
from .base import Code, Refusal
from .flatten_base import FlattenKind


def is_flatten(node: gs.Node, src_shape: tuple) -> bool:
    k = math.prod(src_shape[1:])
    batches = [src_shape[0]] if isinstance(src_shape[0], int) else [1, 3]
    allowzero = node.attrs.get("allowzero", 0)
    for n in batches:
        if len(node.inputs) > 1:
            target = evaluate_int_tensor(node.inputs[1], n)
        else:
            shape_attr = node.attrs.get("shape")
            target = None if shape_attr is None else np.array(shape_attr, np.int64)
        if target is None or target.ndim != 1 or len(target) != 2:
            return False
        resolved = [(n, k)[i] if (int(d) == 0 and not allowzero) else int(d) for i, d in enumerate(target)]
        if resolved.count(-1) > 1:
            return False
        if -1 in resolved:
            known = math.prod(d for d in resolved if d != -1)
            if known <= 0 or (n * k) % known:
                return False
            resolved[resolved.index(-1)] = (n * k) // known
        if resolved != [n, k]:
            return False
    return True


class ReshapeOp:
    ops = frozenset({"Reshape"})
    kind = FlattenKind.RESHAPE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        if not is_flatten(node, src_shape):
            raise Refusal(
                Code.RESHAPE_NOT_FLATTEN, f"{node_label(node)} before {fc_label} is not a flatten to [N, C*H*W]"
            )


RULES = [ReshapeOp()]
