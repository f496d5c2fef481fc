"""Expand and ConstantOfShape to a constant shape with spatial dims above 1 pin the input size:
refused, naming the node (nothing to rewrite)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import constant, node_label
from .backbone_base import BackboneContext, BackboneFix
from .base import Code, Refusal


class ShapeConstant:
    ops = frozenset({"Expand", "ConstantOfShape"})

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        spatial = ctx.spatial
        value = constant(node.inputs[1] if node.op == "Expand" else node.inputs[0])
        if value is None:
            return None
        dims = [int(d) for d in value.reshape(-1)]
        if len(dims) >= spatial + 2 and any(d > 1 for d in dims[-spatial:]):
            raise Refusal(
                Code.FIXED_EXPAND,
                f"{node_label(node)} expands to the fixed shape {dims}; the model cannot run at other sizes",
            )
        return None

    def rewrite(self, fix: BackboneFix, edit: object) -> None:
        """Never matched with a fix."""


RULES = [ShapeConstant()]
