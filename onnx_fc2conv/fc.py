"""FC layers: `Gemm`, and `MatMul` with an optional bias `Add`, as exporters write them.

`Gemm(x, B, C, alpha, beta, transB)` computes `alpha * x @ B' + beta * C` with `B' = B` (stored
`[M, K]`) when transB=1 and `B.T` otherwise; `MatMul(x, W)` is `x @ W` with `W` `[K, M]`. The
layout is read from transB and the operand order, never guessed from the weight's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from .graph import node_id, node_label, rank, sole_user
from .quantized import Dequantized, check_quantized_bias, quantization_of, quantized_weight, value_shape
from .quantized_qoperator import (
    INTEGER_FC_OPS,
    integer_quantization,
    is_integer_fc,
    match_integer_fc,
    weight_operand,
)
from .rules.base import Code, Refusal, per_feature_shape, scalar_shape

FC_OPS = frozenset({"Gemm", "MatMul"}) | INTEGER_FC_OPS


@dataclass(frozen=True, eq=False)
class FcLayer:
    """One FC layer (Gemm, or MatMul with an optional bias Add) and the Conv it becomes."""

    nodes: tuple[gs.Node, ...]
    op: str
    weight: gs.Tensor
    weight_is_mk: bool  # True: stored [M, K] (Gemm transB=1); False: [K, M]
    alpha: float
    bias: gs.Tensor | None
    beta: float
    in_features: int
    out_features: int
    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    output: gs.Tensor
    quant: Dequantized | None = None  # the weight is DequantizeLinear of these integers
    quantization: str = ""  # for reports: integer type, per-tensor or per-channel, scales' shape

    @property
    def parameters(self) -> int:
        return math.prod(self.kernel_shape) + (self.out_features if self.bias is not None else 0)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node_id(n) for n in self.nodes)


def is_candidate(node: gs.Node) -> bool:
    """Gemm, QGemm, or a MatMul (QLinearMatMul, MatMulInteger) with a constant 2-D operand, on a
    rank-2 (or unknown-rank) input."""
    if node.op == "Gemm" or (node.op == "QGemm" and node.domain == "com.microsoft"):
        return True
    if node.op == "MatMul" and len(node.inputs) == 2:
        right = node.inputs[1]
    elif node.op != "QGemm" and is_integer_fc(node) and weight_operand(node) is not None:
        right = weight_operand(node)
    else:
        return False
    shapes = [value_shape(node.inputs[0]), value_shape(right)]
    if not any(s is not None and len(s) == 2 for s in shapes):
        return False
    data = node.inputs[0] if shapes[0] is None else right
    return rank(data) in (None, 2)


def data_operand(node: gs.Node) -> gs.Tensor:
    """The operand carrying the activations. For `MatMul(W, x)` with a constant W on the left this
    is `x`, so that matching refuses it for what it is (the weight on the left)."""
    right = weight_operand(node) if node.op in INTEGER_FC_OPS else (node.inputs[1] if node.op == "MatMul" else None)
    if right is not None and value_shape(node.inputs[0]) is not None and value_shape(right) is None:
        return right
    return node.inputs[0]


def match_fc(graph: gs.Graph, node: gs.Node, data: gs.Tensor, first_shape: tuple[int, ...]) -> FcLayer:
    """The FC layer `node` reading `data`; `first_shape` is the (C, *S) its kernel covers."""
    label = node_label(node)
    k_expected = math.prod(first_shape)
    quant = None
    if node.op in INTEGER_FC_OPS:  # integers in: QLinearConv or ConvInteger (quantized_qoperator.py)
        integer = match_integer_fc(node, data, label)
        weight, trans_b, bias, m, k = (
            integer.weight, integer.weight_is_mk, integer.bias, integer.out_features, integer.in_features
        )  # fmt: skip
        alpha, beta, nodes, output = 1.0, 1.0, (node,), node.outputs[0]
    elif node.op == "Gemm":
        m, k, weight, trans_b, alpha, bias, beta = _gemm(node, data, label)
        quant = quantized_weight(weight, 0 if trans_b else 1, alpha, label)
        nodes, output = (node,), node.outputs[0]
    else:
        if node.inputs[0] is not data:
            raise Refusal(Code.WEIGHT_OPERAND, f"{label}: the weight is the left operand (x @ W expected)")
        weight = node.inputs[1]
        wshape = value_shape(weight)
        if wshape is None or len(wshape) != 2:
            raise Refusal(Code.NOT_CONSTANT, f"{label}: weight '{weight.name}' is not a constant 2-D tensor")
        k, m = wshape
        trans_b, alpha, beta, bias = False, 1.0, 1.0, None
        quant = quantized_weight(weight, 1, alpha, label)
        nodes, output = (node,), node.outputs[0]
        add = sole_user(graph, output)
        if add is not None and add.op == "Add":
            other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
            oshape = value_shape(other)
            if oshape is not None and per_feature_shape(oshape, m):
                check_quantized_bias(other, m, 1.0, label)
                bias, nodes, output = other, (node, add), add.outputs[0]
    if k != k_expected:
        raise Refusal(
            Code.FEATURE_COUNT,
            f"{label}: weight has {k} input features but the feature map {list(first_shape)} has {k_expected}",
        )
    op = "MatMul+Add" if len(nodes) == 2 else node.op
    kernel = (m, first_shape[0], *first_shape[1:])
    return FcLayer(
        nodes=nodes, op=op, weight=weight, weight_is_mk=trans_b, alpha=alpha, bias=bias, beta=beta,
        in_features=k, out_features=m, input_shape=first_shape, kernel_shape=kernel, output=output,
        quant=quant, quantization=_quantization(node, weight, quant),
    )  # fmt: skip


def _quantization(node: gs.Node, weight: gs.Tensor, quant: Dequantized | None) -> str:
    """Read at match time: the rewrite empties the FC node."""
    if node.op in INTEGER_FC_OPS:
        return integer_quantization(node)
    return "" if quant is None else quantization_of(quant.values, quant.scale, quant.block_size)


def _gemm(node: gs.Node, data: gs.Tensor, label: str):
    if node.inputs[0] is not data:
        raise Refusal(Code.WEIGHT_OPERAND, f"{label} reads the head tensor as its weight operand")
    if node.attrs.get("transA", 0):
        raise Refusal(Code.TRANS_A, f"{label} has transA=1: its input is not a flattened feature map")
    weight = node.inputs[1]
    wshape = value_shape(weight)
    if wshape is None:
        raise Refusal(Code.NOT_CONSTANT, f"{label}: weight '{weight.name}' is not a constant")
    if len(wshape) != 2:
        raise Refusal(Code.WEIGHT_RANK, f"{label}: weight '{weight.name}' has rank {len(wshape)}, expected 2")
    trans_b = bool(node.attrs.get("transB", 0))
    m, k = (wshape[0], wshape[1]) if trans_b else (wshape[1], wshape[0])
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if bias is not None:
        bshape = value_shape(bias)
        if bshape is None:
            raise Refusal(Code.NOT_CONSTANT, f"{label}: bias '{bias.name}' is not a constant")
        if not (per_feature_shape(bshape, m) or scalar_shape(bshape)):
            raise Refusal(
                Code.BIAS_SHAPE, f"{label}: bias shape {list(bshape)} is not per-feature ([{m}] or [1, {m}]) or scalar"
            )
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    if bias is not None:
        check_quantized_bias(bias, m, beta, label)
    return m, k, weight, trans_b, alpha, bias, beta
