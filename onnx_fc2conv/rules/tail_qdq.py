"""`QuantizeLinear` / `DequantizeLinear` after an FC layer (QDQ-quantized heads).

Per-tensor, each maps every element alone with one scale and zero point: the same on
`[N, M]` and on `[N, M, *S]`, so it stays. Per-channel along the features would be exact with
its axis moved to 1, but onnxruntime fuses `Conv -> QuantizeLinear` into a QLinearConv, which
takes one output scale only: the written model would not run. Refused with that reason.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import Edit, constant_shape, node_label
from .base import Action, Code, Refusal, TailOp, TailWalk


class QuantizeDequantize:
    ops = frozenset({"QuantizeLinear", "DequantizeLinear"})

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None:
        label = node_label(node)
        if node.inputs[0] is not tensor or any(walk.from_head(t) for t in node.inputs[1:]):
            raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label} takes its scale or zero point from the head")
        scale = constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if scale is None:
            raise Refusal(Code.NON_CONSTANT_OPERAND, f"{label}: its scale is not a constant")
        if node.attrs.get("block_size", 0):
            raise Refusal(Code.BLOCK_QUANTIZED, f"{label} quantizes the FC output block-wise")
        if math.prod(scale) != 1:
            raise Refusal(
                Code.QDQ_PER_CHANNEL,
                f"{label} quantizes the FC output per channel: onnxruntime's QLinearConv takes one output scale",
            )
        return TailOp(self, node, Action.KEEP, (node.outputs[0],), affine=False)

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None:
        """Nothing to change."""


RULES = [QuantizeDequantize()]
