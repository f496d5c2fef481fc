"""`QLinearAdd` / `QLinearMul` (com.microsoft) on the FC output: a bias or scale in the quantized domain.

`QLinearAdd(a, a_s, a_z, b, b_s, b_z, c_s, c_z)` dequantizes both operands with their one scale
and zero point, adds them elementwise with broadcasting and requantizes: per element, as on
`[N, M]`. A constant integer operand `[M]` (or `[1, M]`) holds one value per feature; on
`[N, M, *S]` its integers move to `[M, 1, ..]` unchanged, as a float per-feature constant does
(rules/tail_per_feature). Scales and zero points must be per-tensor: the op takes no axis.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import Edit, constant_shape, node_label
from .base import Action, Code, Refusal, TailOp, TailWalk, per_feature_shape, scalar_shape
from .tail_per_feature import PerFeature

_DATA = (0, 3)  # the two integer operands; the others are scales and zero points


class QLinearBinary:
    ops = frozenset({"QLinearAdd", "QLinearMul"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        if node.domain != "com.microsoft":
            return None
        label = node_label(node)
        per_feature: list[int] = []
        for i, inp in enumerate(node.inputs):
            if inp is tensor or not inp.name:
                continue
            shape = constant_shape(inp)
            if shape is None or walk.from_head(inp):
                raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label} combines the head with non-constant '{inp.name}'")
            if i not in _DATA:
                if math.prod(shape) != 1:
                    raise Refusal(Code.QDQ_PER_CHANNEL, f"{label}: scale or zero point '{inp.name}' is not one value")
            elif per_feature_shape(shape, width) and width > 1:
                per_feature.append(i)
            elif not scalar_shape(shape):
                raise Refusal(
                    Code.CONSTANT_SHAPE,
                    f"{label}: constant '{inp.name}' of shape {list(shape)} is neither per-feature nor scalar",
                )
        if sum(1 for i in _DATA if i < len(node.inputs) and node.inputs[i] is tensor) != 1:
            raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label} reads the head tensor in place of a scale")
        action = Action.PER_FEATURE if per_feature else Action.KEEP
        return TailOp(self, node, action, (node.outputs[0],), affine=False, inputs=tuple(per_feature))

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        """The per-feature integers move to the channel axis, as a float constant's would."""
        PerFeature().rewrite(op, edit, spatial)


RULES = [QLinearBinary()]
