"""Rewrite matched heads into Conv nodes, in place on the graph.

The algebra (DESIGN.md): a Gemm `y = alpha * x @ B' + beta * C` on `x = flatten(f)`, `f` of shape
`[N, C, *S]`, equals `Conv(f, W, b)` with `W = alpha * B'` (as `[M, K]`) reshaped to `[M, C, *S]`
and `b = beta * C` broadcast to `[M]`. Behind an NHWC flatten the `[M, K]` rows are laid out as
`[M, *S, C]` and are permuted back to `[M, C, *S]`. Later FC layers see `[N, K]` and become `1 x 1`
convolutions. The ops after the FC layers are rewritten by their own rules (rules/tail_*).

Weights are not copied when they need not be: a `[M, K]` initializer used by one node with
`alpha == 1` only gets new dims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .dense_prefix import move_onto_map
from .fc import FcLayer
from .graph import Edit, constant, constant_source, reshape_in_place, shape
from .heads import Head
from .quantized import kernel_after_dequantize, kernel_behind_dequantize, value_shape
from .quantized_qoperator import INTEGER_FC_OPS, integer_conv
from .rules.flatten_channel_last import channel_first_perm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRewrite:
    """What one FC layer became."""

    nodes: tuple[str, ...]
    old_op: str
    old_weight_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    parameters: int
    weight_copied: bool


def kernel_from_weight(weight: np.ndarray, layer: FcLayer, perm: tuple[int, ...] | None) -> np.ndarray:
    """The Conv kernel `[M, C, *S]` equal to the FC weight (pure function, for tests and reuse)."""
    w = weight if layer.weight_is_mk else weight.T
    if layer.alpha != 1.0:
        w = (w.astype(np.float64) * layer.alpha).astype(weight.dtype)
    m, c, *spatial = layer.kernel_shape
    if perm is None:
        return np.ascontiguousarray(w).reshape(layer.kernel_shape)
    channel_first = (c, *spatial)
    stored = w.reshape(m, *(channel_first[p - 1] for p in perm[1:]))
    inverse = np.argsort(perm)
    return np.ascontiguousarray(stored.transpose([0, *(int(inverse[j]) for j in range(1, len(perm)))]))


def bias_from_constant(value: np.ndarray, beta: float, out_features: int) -> np.ndarray:
    b = np.broadcast_to(value.reshape(-1) if value.size != 1 else value.reshape(()), (out_features,))
    if beta != 1.0:
        b = (b.astype(np.float64) * beta).astype(value.dtype)
    return np.ascontiguousarray(b)


def rewrite_head(edit: Edit, head: Head) -> list[LayerRewrite]:
    """Replace one head's FC layers with Conv nodes and rewrite its tail ops by their rules."""
    if head.flatten.channel_last is not None and head.pool is not None:  # the map, channel-first again
        perm = channel_first_perm(len(shape(head.flatten.channel_last) or ()))
        at = head.pool.node
        edit.add_node(
            "Transpose", f"{at.name}_channel_first", [head.flatten.channel_last], [head.pool.source], at=at, perm=perm
        )
    reduce = head.flatten.keepdims
    if reduce is not None:
        reduce.attrs["keepdims"] = 1
        if head.flatten.reduce_source is not None:  # reduce the channel-first map, not its Transpose
            _reduce_spatial_axes(edit, reduce, head.flatten.reduce_source)
    done = []
    # ops between the map and the FC layers (elementwise, or pointwise layers in dense mode) now work on the map
    first_input = move_onto_map(edit, head.flatten.between, head.flatten.feature)
    for i, layer in enumerate(head.layers):
        source = first_input if i == 0 else None
        done.append(_layer_to_conv(edit, layer, source, head.perm if i == 0 else None))
    for op in head.tail:
        op.rule.rewrite(op, edit, head.spatial_rank)
    return done


def _kernel(edit: Edit, layer: FcLayer, perm: tuple[int, ...] | None) -> tuple[gs.Tensor, bool]:
    if layer.quant is not None and layer.quant.block_size:  # dequantized as stored, then rearranged
        return kernel_after_dequantize(
            edit, layer.weight, layer.weight_is_mk, layer.kernel_shape, perm, layer.nodes[0]
        ), True
    if layer.quant is not None:  # the integers are rearranged, the DequantizeLinear moves its axis
        ints = constant(layer.quant.values)
        assert ints is not None
        kernel = kernel_from_weight(ints, layer, perm)
        return kernel_behind_dequantize(edit, layer.quant, kernel, layer.nodes[0]), True
    src = constant_source(layer.weight)
    zero_copy = layer.weight_is_mk and layer.alpha == 1.0 and perm is None
    if zero_copy and src is layer.weight and len(src.outputs) == 1 and reshape_in_place(src, layer.kernel_shape):
        return src, False
    weight = constant(layer.weight)
    assert weight is not None
    return edit.constant(f"{layer.weight.name}_conv", kernel_from_weight(weight, layer, perm)), True


def _layer_to_conv(edit: Edit, layer: FcLayer, source: gs.Tensor | None, perm: tuple[int, ...] | None) -> LayerRewrite:
    fc = layer.nodes[0]
    data = source if source is not None else fc.inputs[0]
    old_shape = value_shape(layer.weight) or ()
    kernel, copied = _kernel(edit, layer, perm)
    k = list(layer.kernel_shape[2:])
    inputs = [data, kernel]
    if layer.bias is not None and layer.op not in INTEGER_FC_OPS:
        if layer.beta == 1.0 and value_shape(layer.bias) == (layer.out_features,):
            inputs.append(layer.bias)
        else:
            value = constant(layer.bias)
            assert value is not None
            inputs.append(
                edit.constant(f"{layer.bias.name}_conv", bias_from_constant(value, layer.beta, layer.out_features))
            )
    output = layer.output
    if layer.op in INTEGER_FC_OPS:
        conv = integer_conv(edit, fc, data, kernel, k)
        inputs = list(conv.inputs)
        conv.inputs.clear()
    else:
        conv = gs.Node("Conv", fc.name, {"kernel_shape": k, "strides": [1] * len(k), "pads": [0] * 2 * len(k)})
    edit.insert(conv, fc)
    for node in layer.nodes:  # the FC (and the bias Add of MatMul+Add) go; the Conv takes the output
        node.outputs.clear()
        node.inputs.clear()
    conv.inputs.extend(inputs)
    conv.outputs.append(output)
    log.debug("%s %s -> Conv %s", layer.op, fc.name, layer.kernel_shape)
    return LayerRewrite(layer.names, layer.op, tuple(old_shape), layer.kernel_shape, layer.parameters, copied)


def _reduce_spatial_axes(edit: Edit, reduce: gs.Node, source: gs.Tensor) -> None:
    """The reduce reads `source` ([N, C, *S]) and reduces its axes 2.. (attribute or input)."""
    rank = len(shape(source) or ())
    axes = list(range(2, rank))
    reduce.inputs[0] = source
    if len(reduce.inputs) > 1 and reduce.inputs[1].name:
        reduce.inputs[1] = edit.constant(f"{reduce.name}_spatial_axes", np.array(axes, np.int64))
    else:
        reduce.attrs["axes"] = axes
