"""Quantized FC layers in onnxruntime's QOperator form: integers in, integers out.

`QGemm(a, a_s, a_z, B, b_s, b_z, C, y_s, y_z)` (com.microsoft) computes
`y = requantize(a_s * b_s * ((a - a_z) @ (B' - b_z) + C))` in integers; `QLinearConv` takes the
same nine operands (bias last) and computes the same per window, so the integer weight is
rearranged like a float one and every scale and zero point is carried over. A QGemm without
`y_s` has a float output, which `QLinearConv` has no form of: refused.

`QLinearMatMul(a, a_s, a_z, B, b_s, b_z, y_s, y_z)` with `B` `[K, M]` is the same without a
bias, and its operands are already in `QLinearConv`'s order: `B.T` rearranged to
`[M, C, *S]` as integers, `b_s` and `b_z` (one value, or one per column of `B`: per output
feature) become the kernel's per-output-channel scale and zero point unchanged.

`MatMulInteger(a, B, a_z, b_z)` computes `(a - a_z) @ (B - b_z)` in int32, exactly; `ConvInteger(x,
w, x_z, w_z)` computes the same per window. onnxruntime's `ConvInteger` takes one weight zero
point only: per-column zero points that are all equal become that one value; differing ones
are refused. The scale arithmetic after it (`Cast -> Mul -> Add`) stays as it is.

A bias added in the quantized domain after `QLinearMatMul` (`QLinearAdd`, com.microsoft) is an
elementwise op on the FC output: rules/tail_qlinear_binary moves its integers onto the channel axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .graph import Edit, constant, constant_shape
from .rules.base import Code, Refusal

INTEGER_FC_OPS = frozenset({"QGemm", "QLinearMatMul", "MatMulInteger"})
QGEMM_FLOAT_OUTPUT = "float output"
_WEIGHT_INDEX = {"QGemm": 3, "QLinearMatMul": 3, "MatMulInteger": 1}
_WEIGHT_QUANTIZATION = {"QGemm": (4, 5), "QLinearMatMul": (4, 5), "MatMulInteger": (None, 3)}


@dataclass(frozen=True)
class IntegerFc:
    """An integer FC layer's weight and how it is stored."""

    weight: gs.Tensor
    weight_is_mk: bool  # QGemm transB=1: [M, K]; otherwise [K, M]
    bias: gs.Tensor | None  # QGemm's int32 C, carried into QLinearConv
    out_features: int
    in_features: int


def is_integer_fc(node: gs.Node) -> bool:
    if node.op == "QGemm":
        return node.domain == "com.microsoft"
    return node.op in ("QLinearMatMul", "MatMulInteger") and node.domain in (None, "", "ai.onnx")


def weight_operand(node: gs.Node) -> gs.Tensor | None:
    index = _WEIGHT_INDEX[node.op]
    return node.inputs[index] if len(node.inputs) > index else None


def _operand(node: gs.Node, index: int | None) -> gs.Tensor | None:
    if index is None or len(node.inputs) <= index or not node.inputs[index].name:
        return None
    return node.inputs[index]


def match_integer_fc(node: gs.Node, data: gs.Tensor, label: str) -> IntegerFc:
    """The integer FC layer `node` reading `data`, or a refusal saying why it has no exact Conv form."""
    if node.inputs[0] is not data:
        raise Refusal(Code.WEIGHT_OPERAND, f"{label} reads the head tensor as its weight operand")
    if node.op == "QGemm":
        return _match_qgemm(node, label)
    weight = weight_operand(node)
    wshape = None if weight is None else constant_shape(weight)
    if wshape is None or len(wshape) != 2:
        raise Refusal(Code.NOT_CONSTANT, f"{label}: its weight is not a constant 2-D tensor")
    k, m = wshape
    scale, zero = (_operand(node, i) for i in _WEIGHT_QUANTIZATION[node.op])
    for name, tensor in (("scale", scale), ("zero point", zero)):
        if tensor is None:
            continue
        found = constant_shape(tensor)
        if found is None:
            raise Refusal(Code.NOT_CONSTANT, f"{label}: its weight {name} '{tensor.name}' is not a constant")
        if found not in ((), (1,), (m,)):
            raise Refusal(
                Code.QUANT_AXIS, f"{label}: weight {name} of shape {list(found)} is not per-tensor or per column"
            )
    if node.op == "QLinearMatMul" and (scale is None or zero is None or len(node.inputs) < 8):
        raise Refusal(Code.QUANTIZED_OPERATOR, f"{label} lacks an operand: QLinearConv needs every one")
    if node.op == "MatMulInteger" and zero is not None and len(np.unique(constant(zero))) > 1:
        raise Refusal(
            Code.QUANTIZED_OPERATOR,
            f"{label}: its weight zero points differ per column, and onnxruntime's ConvInteger takes one",
        )
    return IntegerFc(weight, False, None, m, k)


def _match_qgemm(node: gs.Node, label: str) -> IntegerFc:
    """A QGemm with a quantized output."""
    operands = [t.name for t in node.inputs] + [""] * (9 - len(node.inputs))
    if node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0:
        raise Refusal(Code.QUANTIZED_SCALING, f"{label} has transA or alpha: no QLinearConv form")
    if not operands[7]:
        raise Refusal(Code.QUANTIZED_OPERATOR, f"{label} has a {QGEMM_FLOAT_OUTPUT}: no QLinearConv form")
    if not all(operands[i] for i in (1, 2, 4, 5, 8)):
        raise Refusal(Code.QUANTIZED_OPERATOR, f"{label} lacks a zero point: QLinearConv needs every one")
    if any(constant_shape(node.inputs[i]) is None for i in (3, 4, 5)):
        raise Refusal(Code.NOT_CONSTANT, f"{label}: its weight, scale or zero point is not a constant")
    trans_b = bool(node.attrs.get("transB", 0))
    wshape = constant_shape(node.inputs[3]) or (0, 0)
    m, k = (wshape[0], wshape[1]) if trans_b else (wshape[1], wshape[0])
    return IntegerFc(node.inputs[3], trans_b, node.inputs[6] if operands[6] else None, m, k)


def integer_quantization(node: gs.Node) -> str:
    """How an integer FC layer's weight is quantized, for reports (read before the rewrite)."""
    scale_index, zero_index = _WEIGHT_QUANTIZATION[node.op]
    values = constant(weight_operand(node))
    dtype = "?" if values is None else str(values.dtype)
    scale, zero = _operand(node, scale_index), _operand(node, zero_index)
    if scale is None:  # MatMulInteger: the scale is applied after it, by the graph
        zshape = (constant_shape(zero) or ()) if zero is not None else ()
        return f"{dtype} integer product, zero point {list(zshape)}, scaled after"
    sshape = constant_shape(scale) or ()
    kind = "per-tensor" if int(np.prod(sshape)) == 1 else "per-channel"
    return f"{dtype} {kind}, scales {list(sshape)}"


def integer_conv(edit: Edit, fc: gs.Node, data: gs.Tensor, kernel: gs.Tensor, window: list[int]) -> gs.Node:
    """The QLinearConv or ConvInteger of an integer FC layer; `kernel` is its rearranged weight."""
    attrs = {"kernel_shape": window, "strides": [1] * len(window), "pads": [0] * 2 * len(window)}
    operands = [*fc.inputs, *[None] * (9 - len(fc.inputs))]
    if fc.op == "QGemm":
        _, a_s, a_z, _, b_s, b_z, bias, y_s, y_z = operands
        inputs = [data, a_s, a_z, kernel, b_s, b_z, y_s, y_z, *([bias] if bias is not None and bias.name else [])]
        return gs.Node("QLinearConv", fc.name, attrs, inputs=inputs)
    if fc.op == "QLinearMatMul":  # the same operands in the same order
        return gs.Node("QLinearConv", fc.name, attrs, inputs=[data, *operands[1:3], kernel, *operands[4:8]])
    a_z, b_z = _operand(fc, 2), _operand(fc, 3)
    if b_z is not None and constant_shape(b_z) not in ((), (1,)):  # equal per column: one value
        b_z = edit.constant(f"{b_z.name}_conv", np.asarray(constant(b_z)).reshape(-1)[:1])
    inputs = [data, kernel, a_z or gs.Variable.empty(), *([b_z] if b_z is not None else [])]
    if b_z is None and a_z is None:
        inputs = inputs[:2]
    return gs.Node("ConvInteger", fc.name, attrs, inputs=inputs)
