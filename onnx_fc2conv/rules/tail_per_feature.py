"""Binary ops and BatchNormalization on the FC output, with constant operands.

On `[N, M]` a constant `[M]` or `[1, M]` broadcasts along the last axis: one value per feature.
On `[N, M, *S]` the same constant must be `[M, 1, ..]` (one value per channel at every
location); scalars broadcast as before. BatchNormalization on `[N, M]` normalises per feature
(axis 1), as it does on `[N, M, *S]`: its parameters stay.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant, constant_shape, constant_source, node_label, reshape_in_place
from .base import Action, Code, Refusal, TailOp, TailWalk, per_feature_operand

_AFFINE = frozenset({"Add", "Sub", "BatchNormalization", "Mul"})


class PerFeature:
    ops = frozenset({"Add", "Sub", "Mul", "Div", "PRelu", "Pow", "Max", "Min", "Sum", "BatchNormalization"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        label = node_label(node)
        per_feature: list[int] = []
        head_inputs = 0
        for i, inp in enumerate(node.inputs):
            if not inp.name:
                continue
            if inp is tensor or walk.from_head(inp):
                head_inputs += 1
                continue
            shape = constant_shape(inp)
            if shape is None:
                raise Refusal(
                    Code.NON_CONSTANT_OPERAND, f"{label} combines the head with non-constant tensor '{inp.name}'"
                )
            if node.op == "BatchNormalization":
                if shape != (width,):
                    raise Refusal(
                        Code.CONSTANT_SHAPE,
                        f"{label}: parameter '{inp.name}' has shape {list(shape)}, expected [{width}]",
                    )
                continue
            if per_feature_operand(label, inp, shape, width):
                per_feature.append(i)
        first = node.inputs[0]
        affine = head_inputs == 1 and (
            node.op in _AFFINE or (node.op == "Div" and (first is tensor or walk.from_head(first)))
        )
        action = Action.PER_FEATURE if per_feature else Action.KEEP
        return TailOp(self, node, action, (node.outputs[0],), affine=affine, inputs=tuple(per_feature))

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        node = op.node
        for i in op.inputs:
            old = node.inputs[i]
            shape = constant_shape(old) or ()
            new_shape = (shape[-1], *([1] * spatial))
            src = constant_source(old)
            readers = sum(1 for t in node.inputs if t is old)
            if src is old and len(old.outputs) == readers and reshape_in_place(src, new_shape):
                continue
            value = constant(old)
            assert value is not None
            node.inputs[i] = edit.constant(f"{old.name}_conv", np.reshape(value, new_shape))


RULES = [PerFeature()]
