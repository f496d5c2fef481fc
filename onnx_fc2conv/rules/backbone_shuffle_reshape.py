"""A Reshape whose target copies its input's batch and spatial dims (the channel shuffle of
ShuffleNet: `[N, G, C/G, H, W]`) is rebuilt from `Shape(x)` at run time: exact at every size.
A constant target that still fits the input at a larger probe size (GroupNorm's `[0, 1, -1]`)
needs nothing; any other constant target pins the size and is refused.

target = Concat(Shape(x)[0:1], middle, Shape(x)[-s:]), with `middle` the target's other dims.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant, node_id, node_label, shape
from .backbone_base import BackboneContext, BackboneFix, resolves
from .base import Code, Refusal

_BIG = 2**31 - 1


class ShuffleReshape:
    ops = frozenset({"Reshape"})

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not ctx.fed(id(node)):
            return None  # a weight reshaped at run time: no input size reaches it
        spatial = ctx.spatial
        if len(node.inputs) < 2:  # a Reshape before opset 5: its target is an attribute
            old = list(node.attrs.get("shape") or [])
            if old and any(d > 1 for d in old[-spatial:]) and len(old) >= spatial + 2:
                raise Refusal(Code.BAKED_SIZE, f"{node_label(node)} bakes the spatial size into its target shape {old}")
            return None
        target, in_shape = constant(node.inputs[1]), shape(node.inputs[0])
        if target is None or in_shape is None or len(in_shape) < spatial + 1:
            return None
        dims = [int(d) for d in target.reshape(-1)]
        spatial_in = list(in_shape[-spatial:])
        if all(d == 1 for d in spatial_in):
            return None
        if len(dims) >= spatial + 2 and dims[-spatial:] == spatial_in and dims[0] in (in_shape[0], -1, 0):
            change = f"target {dims} now built from Shape(input)"
            return BackboneFix(node_id(node), "Reshape", change, self, node, (dims[1:-spatial], spatial))
        if resolves(dims, ctx.probe(node.inputs[0]), bool(node.attrs.get("allowzero", 0))):
            return None  # the target fits larger inputs as it is (a -1 takes the spatial dims)
        raise Refusal(
            Code.BAKED_SIZE,
            f"{node_label(node)} bakes the spatial size into its target shape {dims}; "
            "the model cannot run at other sizes",
        )

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        middle, s = fix.data
        base = node.name or node.outputs[0].name
        shape_out = edit.variable(f"{base}_fc2conv_shape")
        batch, tail, target = (edit.variable(f"{base}_fc2conv_{k}") for k in ("batch", "spatial", "target"))

        def ints(key: str, value: list[int]) -> gs.Constant:
            return edit.constant(f"{base}_fc2conv_{key}", np.array(value, np.int64))

        edit.add_node("Shape", f"{base}_fc2conv_Shape", [node.inputs[0]], [shape_out], at=node)
        edit.add_node("Slice", f"{base}_fc2conv_batch", [shape_out, ints("b0", [0]), ints("b1", [1])], [batch], at=node)
        edit.add_node(
            "Slice", f"{base}_fc2conv_spatial", [shape_out, ints("s0", [-s]), ints("s1", [_BIG])], [tail], at=node
        )
        edit.add_node(
            "Concat", f"{base}_fc2conv_Concat", [batch, ints("middle", middle), tail], [target], axis=0, at=node
        )
        node.inputs[1] = target


RULES = [ShuffleReshape()]
