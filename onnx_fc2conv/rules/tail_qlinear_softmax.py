"""`QLinearSoftmax` (com.microsoft) over the class axis: onnxruntime's quantized Softmax.

It dequantizes, normalises over `axis` and requantizes with one scale and zero point. Its `opset`
attribute picks the semantics: before 13 the input is coerced to 2-D at `axis`, so on
`[N, M, H, W]` an `axis=1` would normalise over `M*H*W` jointly; from 13 on it normalises over
`axis` alone. On `[N, M]` both normalise over the classes, so the rewrite writes `axis=1` with the
opset 13 semantics: per location on the map. (Moving the classes last instead, as for a float
Softmax before opset 13, is not safe: onnxruntime's transpose optimizer moves the Transposes
through a QLinearSoftmax of opset 12 as if it had the opset 13 semantics.)
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import Edit, constant_shape, node_label
from .base import Action, Code, Refusal, TailOp, TailWalk


class QLinearSoftmax:
    ops = frozenset({"QLinearSoftmax"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        if node.domain != "com.microsoft":
            return None
        label = node_label(node)
        if node.inputs[0] is not tensor:
            raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label} reads the head tensor in place of a scale")
        for inp in node.inputs[1:]:
            shape = constant_shape(inp) if inp.name else ()
            if shape is None or walk.from_head(inp) or math.prod(shape) != 1:
                raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label}: '{inp.name}' is not one constant value")
        axis = node.attrs.get("axis", -1)
        if axis not in (-1, 1):
            raise Refusal(Code.CLASS_AXIS, f"{label} works on axis {axis}, not the class axis")
        return TailOp(self, node, Action.CLASS_AXIS, (node.outputs[0],), affine=False)

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        op.node.attrs["axis"] = 1
        op.node.attrs["opset"] = max(int(op.node.attrs.get("opset", 13)), 13)


RULES = [QLinearSoftmax()]
