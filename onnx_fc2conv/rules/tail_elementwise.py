"""Elementwise ops after an FC layer stay as they are.

`f(x)` applied to every element of `[N, M]` is the same `f` applied to every element of
`[N, M, *S]`: at each location the values are those of the FC output on that window.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit
from .base import Action, TailOp, TailWalk

LINEAR = frozenset({"Dropout", "Identity", "Cast", "Neg"})


class Elementwise:
    ops = frozenset(
        {
            "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu",
            "Celu", "Gelu", "Erf", "Dropout", "Identity", "Cast", "Softplus", "Softsign", "Mish",
            "ThresholdedRelu", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil",
            "Round", "Sign", "Swish", "Shrink",
        }
    )  # fmt: skip

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        return TailOp(self, node, Action.KEEP, (node.outputs[0],), affine=node.op in LINEAR)

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        """Nothing to change."""


RULES = [Elementwise()]
