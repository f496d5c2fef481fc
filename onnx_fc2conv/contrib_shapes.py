"""Shapes of com.microsoft's operators (quantized ones, QLinearConv, onnxruntime's FusedConv and FusedGemm)
that onnxruntime's symbolic inference lacks.

`quantize_static(..., quant_format=QOperator)` writes a ResNet-style head as
`QLinearGlobalAveragePool -> Flatten -> QGemm`; without these the pooled shape is unknown and
the head cannot be matched. Each handler writes the output's value_info the way the symbolic
pass's own handlers do, from the input shapes it already knows.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper


def register(inference: Any) -> None:
    """Add the handlers to a `SymbolicShapeInference` (ones it has already are kept)."""
    handlers = {
        "QLinearGlobalAveragePool": _global_average_pool,
        "QLinearSigmoid": _same_as_input,
        "QLinearLeakyRelu": _same_as_input,
        "QLinearSoftmax": _same_as_input,
        "QGemm": _qgemm,
        "QLinearConv": _qlinear_conv,
        "QLinearAveragePool": _qlinear_average_pool,
        "FusedConv": _fused_conv,
        "FusedGemm": _fused_gemm,
    }
    for op, handler in handlers.items():
        inference.dispatcher_.setdefault(op, lambda node, handler=handler: handler(inference, node))


def _set(inference: Any, node: Any, elem_type: int, dims: list) -> None:
    inference.known_vi_[node.output[0]].CopyFrom(helper.make_tensor_value_info(node.output[0], elem_type, dims))


def _elem_type(inference: Any, node: Any, index: int) -> int:
    name = node.input[index]
    if name in inference.known_vi_:
        return inference.known_vi_[name].type.tensor_type.elem_type
    return inference.initializers_[name].data_type


def _same_as_input(inference: Any, node: Any) -> None:
    _set(inference, node, _elem_type(inference, node, 0), inference._get_shape(node, 0))


def _global_average_pool(inference: Any, node: Any) -> None:
    """Every spatial dim becomes 1: axes 2.. (channels first) or 1..-2 (`channels_last=1`)."""
    dims = list(inference._get_shape(node, 0))
    last = any(a.name == "channels_last" and a.i for a in node.attribute)
    spatial = range(1, len(dims) - 1) if last else range(2, len(dims))
    _set(inference, node, _elem_type(inference, node, 0), [1 if i in spatial else d for i, d in enumerate(dims)])


def _gemm_shape(inference: Any, node: Any, b_index: int) -> list:
    """`[M, N]` from A `[M, K]` (or `[K, M]`, transA) and B `[K, N]` (or `[N, K]`, transB)."""
    attrs = {a.name: a.i for a in node.attribute}
    a, b = inference._get_shape(node, 0), inference._get_shape(node, b_index)
    return [a[1] if attrs.get("transA") else a[0], b[0] if attrs.get("transB") else b[1]]


def _fused_gemm(inference: Any, node: Any) -> None:
    """Gemm and an elementwise activation: Gemm's shape and A's type."""
    _set(inference, node, _elem_type(inference, node, 0), _gemm_shape(inference, node, 1))


def _fused_conv(inference: Any, node: Any) -> None:
    """Conv (X, W), an optional sum of the same shape and an elementwise activation."""
    _conv_like(inference, node, "Conv", [node.input[0], node.input[1]], _elem_type(inference, node, 0))


def _qgemm(inference: Any, node: Any) -> None:
    """`[M, N]` from A `[M, K]` (or `[K, M]`, transA) and B `[K, N]` (or `[N, K]`, transB); the
    output is float without an output scale (input 7), else the type of A."""
    quantized_out = len(node.input) > 7 and node.input[7]
    elem = _elem_type(inference, node, 0) if quantized_out else onnx.TensorProto.FLOAT
    _set(inference, node, elem, _gemm_shape(inference, node, 3))


def _conv_like(inference: Any, node: Any, op: str, inputs: list[str], elem_type: int) -> None:
    """The float op's own shape arithmetic (`op` on `inputs`, the node's attributes) at any size."""
    from onnxruntime.tools.symbolic_shape_infer import get_shape_from_sympy_shape

    proxy = onnx.NodeProto()
    proxy.CopyFrom(node)
    proxy.op_type, proxy.domain = op, ""
    del proxy.input[:]
    proxy.input.extend(inputs)
    last = any(a.name == "channels_last" and a.i for a in node.attribute)
    known = inference.known_vi_.get(node.output[0])
    if known is None or not known.type.tensor_type.HasField("shape"):  # read there for static inputs
        _set(inference, node, elem_type, [])
    sympy_shape = inference._compute_conv_pool_shape(proxy, channels_last=last)
    inference._update_computed_dims(sympy_shape)
    _set(inference, node, elem_type, get_shape_from_sympy_shape(sympy_shape))


def _qlinear_conv(inference: Any, node: Any) -> None:
    """x (input 0), w (input 3); the output has the type of its zero point (input 7)."""
    elem = _elem_type(inference, node, 7 if len(node.input) > 7 and node.input[7] else 0)
    _conv_like(inference, node, "Conv", [node.input[0], node.input[3]], elem)


def _qlinear_average_pool(inference: Any, node: Any) -> None:
    _conv_like(inference, node, "AveragePool", [node.input[0]], _elem_type(inference, node, 0))
