"""A Reshape that keeps its input's leading dims and merges all its spatial dims into one
(`x.view(B, C, H * W)`: the context pooling of global-context and non-local attention blocks),
written with the constant product H * W by a static export, gets `-1` for that product and the
leading dims from `Shape(x)` at run time: the same target at the exported size, and at every other
size the same merge the framework's code does.

target = Concat(Shape(x)[0:k], [-1]) for an input of rank k + spatial and a target of rank k + 1.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant, node_id, shape
from .backbone_base import BackboneContext, BackboneFix, resolves


class SpatialMergeReshape:
    ops = frozenset({"Reshape"})
    order = 30  # after a target that is the input's own shape, before the channel-shuffle rule's refusals

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not ctx.fed(id(node)) or len(node.inputs) < 2:
            return None
        value, in_shape = constant(node.inputs[1]), shape(node.inputs[0])
        k = len(in_shape) - ctx.spatial if in_shape is not None else 0
        if value is None or k < 1 or value.size != k + 1 or not all(isinstance(d, int) for d in in_shape[k:]):
            return None
        target, copies = [int(d) for d in value.reshape(-1)], not node.attrs.get("allowzero", 0)
        leading = all(t == d or (t == 0 and copies) or (i == 0 and not isinstance(d, int)) for i, (t, d) in enumerate(
            zip(target[:k], in_shape[:k], strict=True)
        ))  # fmt: skip
        if not leading or target[k] != math.prod(in_shape[k:]) or target[k] == 1:
            return None
        if resolves(target, ctx.probe(node.inputs[0]), not copies):
            return None  # the spatial dims do not grow here
        change = f"target {target} now Shape(input)[0:{k}] + [-1]: the spatial dims merged at every size"
        return BackboneFix(node_id(node), "Reshape", change, self, node, k)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node, k = fix.target, fix.data
        base = node.name or node.outputs[0].name
        dims, lead, target = (edit.variable(f"{base}_fc2conv_{key}") for key in ("shape", "leading", "target"))

        def ints(key: str, value: list[int]) -> gs.Constant:
            return edit.constant(f"{base}_fc2conv_{key}", np.array(value, np.int64))

        edit.add_node("Shape", f"{base}_fc2conv_Shape", [node.inputs[0]], [dims], at=node)
        edit.add_node("Slice", f"{base}_fc2conv_leading", [dims, ints("l0", [0]), ints("l1", [k])], [lead], at=node)
        edit.add_node("Concat", f"{base}_fc2conv_Concat", [lead, ints("rest", [-1])], [target], axis=0, at=node)
        node.inputs[1] = target


RULES = [SpatialMergeReshape()]
