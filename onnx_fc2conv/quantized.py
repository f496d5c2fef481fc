"""Quantized heads in QDQ form: weights behind `DequantizeLinear`, activations through
`QuantizeLinear -> DequantizeLinear` pairs.

`DequantizeLinear(q, s, z, axis)` computes `(q - z) * s`, with `s` and `z` one value (per-tensor)
or one per index along `axis` (per-channel). A Gemm weight `W = DQ(Q)` stored `[M, K]` with its
scales along M (axis 0; axis 1 for a `[K, M]` MatMul weight) equals, as a Conv kernel,
`DQ(Q')` where `Q'` is `Q` rearranged exactly as a float weight would be (reshaped to
`[M, C, *S]`, transposed behind an NHWC flatten) and the axis is 0, the kernel's output axis:
each output feature keeps its own integers, scale and zero point. The integers are only moved.
The same holds for every type `DequantizeLinear` reads: int4/uint4 (opset 21; two values a byte,
unpacked on reading and packed again on writing by onnx's numpy_helper) and float8 (opset 19).

The integer operators of onnxruntime's QOperator format (QGemm, QLinearMatMul, MatMulInteger)
are in quantized_qoperator.py.

A per-tensor pair `DQ(Q(x))` maps every element alone with the same scale and zero point, so
`DQ(Q(flatten(f))) = flatten(DQ(Q(f)))`: the pair moves onto the map before the first Conv.
A per-channel pair on the flattened vector has one scale per `(c, h, w)` position, which no
per-channel pair on the map (one scale per channel) reproduces: refused.

Block-wise weight quantization (`block_size`, opset 21) gives the scales a second axis: one per
block of input features. Split into the kernel's channel and window axes the blocks would no
longer lie along one axis, which `DequantizeLinear` needs; so the `DequantizeLinear` stays on the
stored weight, integers untouched, and its float output is rearranged into the kernel by
`Transpose`/`Reshape`: the kernel holds the very values the FC layer multiplied by.

`DynamicQuantizeLinear` computes one scale from the whole tensor at run time; on a larger map
that scale comes from all windows at once, so no window sees the scale of the original: refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .graph import Edit, constant, constant_shape, node_id, node_label, producer
from .rules.base import Code, Refusal

# Operators that hold a quantized FC layer and are not rewritten (com.microsoft's fused
# MatMulInteger -> Cast -> Mul -> Add, written by onnxruntime's own graph optimizations).
QUANTIZED_FC_OPS = frozenset({"MatMulIntegerToFloat"})


@dataclass(frozen=True, eq=False)
class Dequantized:
    """A constant behind `DequantizeLinear`: its integers, scale, zero point and axis."""

    node: gs.Node
    values: gs.Tensor
    scale: gs.Tensor
    zero_point: gs.Tensor | None
    axis: int | None  # None: per-tensor
    block_size: int = 0  # > 0: block-wise along `axis`

    @property
    def per_channel(self) -> bool:
        return self.axis is not None and not self.block_size

    @property
    def dtype(self) -> str:
        value = constant(self.values)
        return "?" if value is None else str(value.dtype)

    @property
    def scale_shape(self) -> tuple[int, ...]:
        return constant_shape(self.scale) or ()


def dequantized(tensor: gs.Tensor) -> Dequantized | None:
    """`tensor` as `DequantizeLinear` of constant integers, or None."""
    node = producer(tensor)
    if node is None or node.op != "DequantizeLinear" or len(node.inputs) < 2:
        return None
    values, scale = node.inputs[0], node.inputs[1]
    vshape, sshape = constant_shape(values), constant_shape(scale)
    if vshape is None or sshape is None:
        return None
    zero = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    block = int(node.attrs.get("block_size", 0))
    axis = None if int(np.prod(sshape)) == 1 and not block else int(node.attrs.get("axis", 1)) % max(len(vshape), 1)
    return Dequantized(node, values, scale, zero, axis, block)


def quantization_of(values: gs.Tensor, scale: gs.Tensor, block_size: int = 0) -> str:
    """How a weight is quantized, for reports: its type, per-tensor, per-channel or block-wise,
    scales' shape."""
    ints, scales = constant(values), constant_shape(scale) or ()
    kind = "per-tensor" if int(np.prod(scales)) == 1 else "per-channel"
    if block_size:
        kind = f"block-wise ({block_size})"
    return f"{'?' if ints is None else ints.dtype} {kind}, scales {list(scales)}"


def value_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The shape of a constant, or of a constant behind `DequantizeLinear`."""
    found = constant_shape(tensor)
    if found is not None:
        return found
    node = producer(tensor)
    if node is None or node.op != "DequantizeLinear" or not node.inputs:
        return None
    return constant_shape(node.inputs[0])


def quantized_weight(weight: gs.Tensor, out_axis: int, alpha: float, label: str) -> Dequantized | None:
    """The FC weight's quantization, if any; per-channel must run along the output features."""
    quant = dequantized(weight)
    if quant is None:
        return None
    if alpha != 1.0:
        raise Refusal(Code.QUANTIZED_SCALING, f"{label} scales its quantized weight by alpha={alpha}")
    if quant.per_channel and quant.axis != out_axis:  # block-wise: dequantized before the rearrangement
        raise Refusal(
            Code.QUANT_AXIS,
            f"{label}: weight '{weight.name}' is quantized along axis {quant.axis}, not per output feature",
        )
    return quant


def check_quantized_bias(bias: gs.Tensor, m: int, beta: float, label: str) -> None:
    """A bias behind `DequantizeLinear` stays as it is: it must already be the Conv's `[M]`."""
    if producer(bias) is None or producer(bias).op != "DequantizeLinear":
        return
    if beta != 1.0:
        raise Refusal(Code.QUANTIZED_SCALING, f"{label} scales its quantized bias by beta={beta}")
    if value_shape(bias) != (m,):
        raise Refusal(Code.BIAS_SHAPE, f"{label}: quantized bias '{bias.name}' is not of shape [{m}]")


def kernel_behind_dequantize(edit: Edit, quant: Dequantized, kernel_ints: np.ndarray, at: gs.Node) -> gs.Variable:
    """`DequantizeLinear(kernel_ints, scale, zero_point)` with the axis on the kernel's axis 0."""
    ints = edit.constant(f"{quant.values.name}_conv", kernel_ints)
    scale = constant(quant.scale)
    dtype = np.float32 if scale is None else scale.dtype
    out = gs.Variable(edit.fresh(f"{quant.node.outputs[0].name}_conv"), dtype=dtype, shape=list(kernel_ints.shape))
    attrs = {k: v for k, v in quant.node.attrs.items() if k != "axis"}
    if quant.per_channel:
        attrs["axis"] = 0
    inputs = [ints, quant.scale, *([quant.zero_point] if quant.zero_point is not None else [])]
    edit.add_node("DequantizeLinear", f"{quant.node.name or 'DequantizeLinear'}_conv", inputs, [out], at=at, **attrs)
    return out


def kernel_after_dequantize(
    edit: Edit, weight: gs.Tensor, weight_is_mk: bool, kernel_shape: tuple[int, ...], perm: tuple[int, ...] | None,
    at: gs.Node,
) -> gs.Variable:  # fmt: skip
    """The float output of a block-wise `DequantizeLinear` rearranged into the kernel, as
    rewrite.kernel_from_weight rearranges a constant: `[K, M]` transposed, reshaped to the
    stored order `[M, *S', C']`, transposed back to `[M, C, *S]` behind a channel-last flatten."""
    m, c, *spatial = kernel_shape
    channel_first = (c, *spatial)
    stored = kernel_shape if perm is None else (m, *(channel_first[p - 1] for p in perm[1:]))
    out = weight
    if not weight_is_mk:
        out = _float_node(edit, "Transpose", [out], (m, int(np.prod(channel_first))), at, perm=[1, 0])
    target = edit.constant(f"{weight.name}_kernel_shape", np.array(stored, np.int64))
    out = _float_node(edit, "Reshape", [out, target], stored, at)
    if perm is not None:
        inverse = np.argsort(perm)
        back = [0, *(int(inverse[j]) for j in range(1, len(perm)))]
        out = _float_node(edit, "Transpose", [out], kernel_shape, at, perm=back)
    return out


def _float_node(edit: Edit, op: str, inputs: list[gs.Tensor], out_shape, at: gs.Node, **attrs) -> gs.Variable:
    out = gs.Variable(edit.fresh(f"{inputs[0].name}_{op.lower()}"), dtype=inputs[0].dtype, shape=list(out_shape))
    edit.add_node(op, f"{at.name or op}_{op.lower()}", inputs, [out], at=at, **attrs)
    return out


# -- activations -----------------------------------------------------------------------------------

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def refuse_inexact_quantization(node: gs.Node, label: str) -> None:
    """A Quantize/Dequantize on the flattened vector must be per-tensor to move onto the map; a
    dynamic one has no exact form on it."""
    if node.op == "DynamicQuantizeLinear":
        reason = f"{label} reads the output of {node_label(node)}, which {_DYNAMIC_REASON}"
        raise Refusal(Code.DYNAMIC_QUANTIZATION, reason)
    if node.op not in QDQ_OPS or len(node.inputs) < 2:
        return
    scale = constant_shape(node.inputs[1])
    if scale is not None and int(np.prod(scale)) != 1:
        raise Refusal(
            Code.QDQ_PER_CHANNEL,
            f"{node_label(node)} before {label} quantizes the flattened vector per channel: "
            "one scale per (channel, position) has no per-channel form on the map",
        )


_DYNAMIC_REASON = (
    "computes its scale from the whole tensor at run time: on a larger map that scale "
    "comes from all windows at once, not from each window as in the original"
)


# -- refusals --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedRefusal:
    node: str
    reason: str
    code: Code


def refused_quantized_nodes(graph: gs.Graph) -> list[QuantizedRefusal]:
    """Nodes no exact fully convolutional form exists for (dynamic quantization) or that are not
    rewritten (QOperator FC layers), each with its reason."""
    found, dynamic = [], []
    for node in graph.nodes:
        if node.op == "DynamicQuantizeLinear":
            dynamic.append(
                QuantizedRefusal(
                    node_id(node),
                    f"{node_label(node)} {_DYNAMIC_REASON}",
                    Code.DYNAMIC_QUANTIZATION,
                )
            )
        elif node.op in QUANTIZED_FC_OPS:
            found.append(
                QuantizedRefusal(
                    node_id(node),
                    f"{node_label(node)} is a quantized FC layer in integer-operator form, which is not rewritten; "
                    "quantize in QDQ form (onnxruntime.quantization QuantFormat.QDQ) to convert it",
                    Code.QUANTIZED_OPERATOR,
                )
            )
    return found + dynamic  # the dynamic quantization, when there is one, leads the message
