"""An opt-in batched head: a batch at the original size runs each head layer as one Gemm.

onnxruntime's CPU Conv runs one GEMM per image with the kernel as the streamed operand, so a
head Conv whose output is `1 x 1` reads its whole kernel once per image: at batch 8 the converted
model is slower than the original's single Gemm. Each rewritten head Conv `y = Conv(x, W, b)`
(`W` is `[M, C, *k]`, no padding, stride 1) becomes a route:

    n = batch of x;  route = (spatial dims of x == k) and (n > 1);  g = n if route else 0
    y = Concat(Reshape(Gemm(Reshape(x[:g], [g, C * prod(k)]), Reshape(W, [M, -1]), b, transB=1),
                       [g, *shape(y_conv)[1:]]),
               y_conv = Conv(x[g:], W, b),  axis=0)

Exact: when `x` is the kernel's window, `Conv(x, W, b)[n, m, 0, ..] = sum_K x[n].flat[K] W[m].flat[K] + b[m]`,
which is the Gemm on the flattened rows (the C-order flattening of `[C, *k]` is the same on
both sides). The path not taken gets an empty batch and contributes nothing to the Concat;
the Gemm path's Reshape takes the Conv path's trailing dims, so the two always agree. A single
image and every larger map take the Conv path (and its NCHWc kernels) unchanged.

Price: onnxruntime folds `Reshape(W, [M, -1])` into a second copy of each head weight when a
session is built, so session memory grows by the head's weights and build time with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import fresh_name

log = logging.getLogger(__name__)

_MIN_OPSET = 11  # Slice with inputs, Gemm without C, ReduceSum over everything
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class RoutedLayer:
    """One head Conv given a Gemm route: its output tensor and the weight bytes the route copies."""

    output: str
    weight_bytes: int


def route_batches(model: onnx.ModelProto, conv_outputs: Iterable[str]) -> tuple[list[RoutedLayer], list[str]]:
    """Give every head Conv producing one of `conv_outputs` its Gemm route (in place).

    Returns the routed layers and notices (layers left as they are, and why).
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        return [], [f"batched head needs opset >= {_MIN_OPSET} (the model has {opset}); not applied"]
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    names = _Names(graph)
    wanted = set(conv_outputs)
    routed: list[RoutedLayer] = []
    notices: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Conv" or not node.output or node.output[0] not in wanted:
            nodes.append(node)
            continue
        why = _unroutable(node, inits)
        if why:
            notices.append(f"batched head: Conv '{node.name or node.output[0]}' keeps its form ({why})")
            nodes.append(node)
            continue
        weight = inits[node.input[1]]
        nodes += _route(node, list(weight.dims), names, graph)
        routed.append(RoutedLayer(node.output[0], _nbytes(weight)))
    del graph.node[:]
    graph.node.extend(nodes)
    if routed:
        copied = sum(r.weight_bytes for r in routed) / 2**20
        notices.append(
            f"batched head: {len(routed)} head layer(s) run as one Gemm for a batch at the original size; "
            f"onnxruntime sessions hold one more copy of their weights ({copied:.0f} MiB)"
        )
    return routed, notices


def _unroutable(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str:
    """Why a Conv cannot take the Gemm route, or '' when it can."""
    weight = inits.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return "its kernel is not an initializer"
    if weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return f"{onnx.TensorProto.DataType.Name(weight.data_type).lower()} weights"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    rank = len(weight.dims) - 2
    plain = {
        "group": 1,
        "strides": [1] * rank,
        "dilations": [1] * rank,
        "pads": [0] * 2 * rank,
        "kernel_shape": list(weight.dims[2:]),
    }
    for key, value in attrs.items():
        if key == "auto_pad" and value in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            continue
        if plain.get(key) != (list(value) if isinstance(value, (list, tuple)) else value):
            return f"attribute {key}={value}"
    return ""


def _nbytes(t: onnx.TensorProto) -> int:
    return math.prod(t.dims) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


class _Names:
    """Fresh tensor names beside the graph's own."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {t.name for t in graph.initializer} | {v.name for v in graph.input}
        self.used |= {o for n in graph.node for o in n.output}

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.used)


def _route(node: onnx.NodeProto, dims: list[int], names: _Names, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes replacing `node` (see module docstring); the Conv itself is kept for its path."""
    x, w = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    y = node.output[0]
    m, k = dims[0], math.prod(dims[1:])
    rank = len(dims) - 2
    base = f"{y}_batch"

    def const(label: str, value: list[int]) -> str:
        name = names.fresh(f"{base}_{label}")
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
        return name

    def op(op_type: str, inputs: list[str], **attrs: object) -> tuple[onnx.NodeProto, str]:
        out = names.fresh(f"{base}_{op_type.lower()}")
        return helper.make_node(op_type, inputs, [out], name=out, **attrs), out

    zero, one, rank_end = const("zero", [0]), const("one", [1]), const("spatial_end", [2 + rank])
    window, big = const("window", dims[2:]), const("end", [_INT64_MAX])
    new: list[onnx.NodeProto] = []

    def add(op_type: str, inputs: list[str], **attrs: object) -> str:
        made, out = op(op_type, inputs, **attrs)
        new.append(made)
        return out

    shape = add("Shape", [x])
    n = add("Slice", [shape, zero, one])
    spatial = add("Slice", [shape, const("two", [2]), rank_end])
    off_window = add("ReduceSum", [add("Sub", [spatial, window])], keepdims=1)  # S >= k: 0 iff S == k
    route = add("And", [add("Equal", [off_window, zero]), add("Greater", [n, one])])
    g = add("Where", [route, n, zero])
    x_gemm = add("Slice", [x, zero, g, zero])
    x_conv = add("Slice", [x, g, big, zero])
    rows = add("Reshape", [x_gemm, add("Concat", [g, const("features", [k])], axis=0)])
    w_mk = add("Reshape", [w, const("weight_shape", [m, -1])])
    gemm = add("Gemm", [rows, w_mk, *([bias] if bias else [])], transB=1)
    y_conv = names.fresh(f"{base}_conv")
    conv = onnx.NodeProto()
    conv.CopyFrom(node)
    conv.input[0] = x_conv
    conv.output[0] = y_conv
    new.append(conv)
    trailing = add("Slice", [add("Shape", [y_conv]), one, big])
    gemm_map = add("Reshape", [gemm, add("Concat", [g, trailing], axis=0)])
    new.append(helper.make_node("Concat", [gemm_map, y_conv], [y], name=names.fresh(f"{base}_join"), axis=0))
    log.debug("batched head: %s routed (Gemm [%d, %d])", y, m, k)
    return new
