"""A Resize to constant `sizes` that are a whole multiple of its input becomes a Resize by
`scales` (sizes / input): the same output at the exported size, and it follows other sizes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant, node_id, node_label, shape
from .backbone_base import BackboneContext, BackboneFix
from .base import Code, Refusal


class ResizeBySizes:
    ops = frozenset({"Resize"})

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if len(node.inputs) < 4 or not node.inputs[3].name:
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


RULES = [ResizeBySizes()]
