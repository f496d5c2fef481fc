"""Pads that equal TF's 'same' padding at the exported size: fixed there, or 'same' at every size?

tf2onnx writes Keras `Conv2D(strides=2, padding='same')` as explicit pads for the exported size
(`[0, 0, 1, 1]` at an even size), and fuses a `ZeroPadding2D` computed for the exported size into
the very same pads; torch's exporters fold timm's size-dependent 'same' padding into a Conv's pads
or into a constant Pad before it. At a size of another parity the framework pads one way or the
other, and the graph cannot tell which. Both readings agree wherever every strided layer sees its
input size modulo its stride as at the exported size: the exported size plus multiples of the
output stride. Only those sizes are claimed (sizes.py), and a notice names the layer.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from .geometry import KERNEL_INPUT, WINDOW_OPS
from .graph import value_info_dims
from .layout import InputLayout
from .rules.backbone_same_pads import same_upper_pads
from .shapes import infer_skeleton, skeleton_at


def ambiguous_pads(model: onnx.ModelProto, layout: InputLayout, exported: tuple[int, ...]) -> str:
    """A notice naming the first strided window op whose asymmetric pads (its own plus those of a
    constant Pad right before it) equal 'same' padding at the exported size; '' when none does."""
    dims = list(value_info_dims(next(vi for vi in model.graph.input if vi.name == layout.name)) or ())
    if layout.batch is not None:
        dims[layout.batch] = 1
    for axis, size in zip(layout.spatial, exported, strict=True):
        dims[axis] = size
    inferred = infer_skeleton(skeleton_at(model, {layout.name: dims}))
    shapes = {vi.name: value_info_dims(vi) for vi in [*inferred.graph.input, *inferred.graph.value_info]}
    constants = {t.name: t for t in model.graph.initializer}
    constants.update(
        (node.output[0], attr.t)
        for node in model.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    )
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        found = _same_at_export(node, shapes, constants, producers)
        if found:
            label = f"{node.op_type} '{node.name or node.output[0]}'"
            return (
                f"{label} pads {found} as TF's 'same' padding does at the exported size: fixed pads and "
                "'same' padding differ at other sizes and the graph cannot tell which was meant, so only "
                "the sizes where both agree are claimed"
            )
    return ""


def _same_at_export(node: onnx.NodeProto, shapes: dict, constants: dict, producers: dict) -> list[int] | None:
    if node.op_type not in WINDOW_OPS:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    kernel = list(attrs.get("kernel_shape") or [])
    if not kernel and node.op_type in KERNEL_INPUT:
        kernel = [d for d in (shapes.get(node.input[KERNEL_INPUT[node.op_type]]) or ())][2:]
    n = len(kernel)
    strides = list(attrs.get("strides") or [1] * n)
    if not n or all(s == 1 for s in strides):
        return None
    pads = list(attrs.get("pads") or [0] * 2 * n)
    source = node.input[0]
    pad = producers.get(source)
    extra = _constant_pads(pad, constants, n) if pad is not None and pad.op_type == "Pad" else None
    if extra is not None:
        pads = [a + b for a, b in zip(pads, extra, strict=True)]
        source = pad.input[0]
    sizes = list((shapes.get(source) or ())[-n:])
    dilations = list(attrs.get("dilations") or [1] * n)
    if len(sizes) != n or not all(isinstance(d, int) for d in sizes) or len(pads) != 2 * n:
        return None
    if pads[:n] == pads[n:] or pads != same_upper_pads(sizes, kernel, strides, dilations):
        return None
    return pads


def _constant_pads(pad: onnx.NodeProto, constants: dict, n: int) -> list[int] | None:
    """The spatial pads of a zero-valued constant Pad, `[b1.., e1..]` over the last `n` axes."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pad.attribute}
    if attrs.get("mode", b"constant") not in (b"constant", "constant"):
        return None
    if len(pad.input) > 2 and pad.input[2]:
        value = constants.get(pad.input[2])
        if value is None or numpy_helper.to_array(value).reshape(-1).tolist() not in ([0], [0.0]):
            return None
    if "pads" in attrs:  # before opset 11
        values = list(attrs["pads"])
    else:
        tensor = constants.get(pad.input[1]) if len(pad.input) > 1 else None
        if tensor is None:
            return None
        values = [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
    rank = len(values) // 2
    if (len(pad.input) > 3 and pad.input[3]) or rank < n or any(values[: rank - n]) or any(values[rank : 2 * rank - n]):
        return None  # an axes input, or padding beyond the spatial axes
    return values[rank - n : rank] + values[2 * rank - n :]
