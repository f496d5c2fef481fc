"""A Resize to `sizes` fixed at the exported size.

- Its output is combined by a broadcasting op with a tensor T of exactly that shape that does not
  depend on it (`x * interpolate(gate, size=x.shape[-2:])`, GhostNetV2's attention gate, folded to
  constant sizes by a static export): the sizes become `Shape(T)`. Equal at the exported size; at
  other sizes the Resize keeps matching T, which the op needs, at every size (a ratio would not:
  a gate pooled by 2 and scaled back by 2 misses an odd T by one).
- Otherwise, constant `sizes` that are a whole multiple of its input become a Resize by `scales`
  (sizes / input): the same output at the exported size, and it follows other sizes.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant, node_id, node_label, producer, shape
from .backbone_base import BackboneContext, BackboneFix
from .backbone_own_shape import broadcast_partner
from .base import Code, Refusal


def _sizes(node: gs.Node) -> bool:
    """Resize-11+ with its `sizes` input given, over every axis (no opset-18 `axes`)."""
    return len(node.inputs) >= 4 and bool(node.inputs[3].name) and node.attrs.get("axes") is None


class ResizeToOperand:
    ops = frozenset({"Resize"})
    order = 40  # before the ratio: a shape to follow is what the op reading the Resize needs

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        out = shape(node.outputs[0])
        if not ctx.fed(id(node)) or not _sizes(node) or out is None or not all(isinstance(d, int) for d in out):
            return None
        partner = broadcast_partner(node, [int(d) for d in out])
        source = producer(partner) if partner is not None else None
        if source is None or not ctx.fed(id(source)):
            return None  # a fixed-shape constant: following it changes nothing
        if constant(node.inputs[3]) is None and ctx.grows:
            return None  # sizes computed at run time, in a model that runs at other sizes: they follow
        change = f"sizes {list(out)} now Shape({partner.name}), the operand its output is combined with"
        return BackboneFix(node_id(node), "Resize", change, self, node, partner.name)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        base = node.name or node.outputs[0].name
        sizes = edit.variable(f"{base}_fc2conv_sizes")
        edit.add_node("Shape", f"{base}_fc2conv_Shape", [edit.graph.tensors()[fix.data]], [sizes], at=node)
        node.inputs[3] = sizes


class ResizeBySizes:
    ops = frozenset({"Resize"})

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not _sizes(node):
            return None
        sizes, in_shape = constant(node.inputs[3]), shape(node.inputs[0])
        label = node_label(node)
        if sizes is None or in_shape is None or not all(isinstance(d, int) for d in in_shape):
            raise Refusal(Code.FIXED_RESIZE, f"{label} resizes to fixed sizes; the model cannot run at other sizes")
        dims = [int(d) for d in sizes.reshape(-1)]
        if len(dims) != len(in_shape) or any(o % i for o, i in zip(dims, in_shape, strict=True)):
            raise Refusal(
                Code.FIXED_RESIZE,
                f"{label} resizes to fixed sizes {dims} that are not a whole multiple of its input "
                f"{list(in_shape)}; the model cannot run at other sizes",
            )
        ratios = [o / i for o, i in zip(dims, in_shape, strict=True)]
        return BackboneFix(node_id(node), "Resize", f"sizes {dims} -> scales {ratios}", self, node, ratios)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        scales = edit.constant(f"{node.name}_fc2conv_scales", np.array(fix.data, np.float32))
        while len(node.inputs) < 3:
            node.inputs.append(gs.Variable.empty())
        node.inputs[2] = scales
        del node.inputs[3]


RULES = [ResizeToOperand(), ResizeBySizes()]
