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

import math

import numpy as np
import onnx
from onnx import numpy_helper

from .geometry import KERNEL_INPUT, WINDOW_OPS
from .graph import value_info_dims
from .layout import InputLayout
from .rules.backbone_same_pads import same_only_at
from .shapes import infer_skeleton, skeleton_at


def ambiguous_pads(
    model: onnx.ModelProto, layout: InputLayout, exported: tuple[int, ...]
) -> tuple[str, tuple[int, ...]]:
    """A notice naming the first strided window op whose asymmetric pads (its own plus those of a
    constant Pad right before it) equal 'same' padding at the exported size, and the step (per
    spatial axis) the input must grow by for every such op to see its size modulo its stride as at
    the exported size; ('', ones) when there is none."""
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
    notice, steps = "", [1] * len(exported)
    for node in model.graph.node:
        found = _same_at_export(node, shapes, constants, producers, model)
        if found is None:
            continue
        pads, sizes, strides = found
        for axis, (e, n, s) in enumerate(zip(exported, sizes, strides, strict=True)):
            steps[axis] = math.lcm(steps[axis], max(round(e / n), 1) * s)  # the layer's stride from the input
        if not notice:
            label = f"{node.op_type} '{node.name or node.output[0]}'"
            notice = (
                f"{label} pads {pads} as TF's 'same' padding does at the exported size: fixed pads and "
                "'same' padding differ at other sizes and the graph cannot tell which was meant, so only "
                "the sizes where both agree are claimed"
            )
    return notice, tuple(steps)


def _same_at_export(
    node: onnx.NodeProto, shapes: dict, constants: dict, producers: dict, model: onnx.ModelProto
) -> tuple[list[int], list[int], list[int]] | None:
    """(pads, input sizes, strides) of a strided window op whose pads are 'same' at this size."""
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
    if not n:
        return None
    pads = list(attrs.get("pads") or [0] * 2 * n)
    source = node.input[0]
    pad = producers.get(source)
    extra = _constant_pads(pad, constants, producers, n, model) if pad is not None and pad.op_type == "Pad" else None
    if extra is not None:
        pads = [a + b for a, b in zip(pads, extra, strict=True)]
        source = pad.input[0]
    sizes = list((shapes.get(source) or ())[-n:])
    dilations = list(attrs.get("dilations") or [1] * n)
    if len(sizes) != n or not all(isinstance(d, int) for d in sizes) or len(pads) != 2 * n:
        return None
    return (pads, sizes, strides) if same_only_at(pads, sizes, kernel, strides, dilations) else None


def _constant_pads(
    pad: onnx.NodeProto, constants: dict, producers: dict, n: int, model: onnx.ModelProto
) -> list[int] | None:
    """The spatial pads of a zero-valued Pad whose pads are constant (or computed from constants
    only: torch folds the static input's shape into timm's 'same' padding), `[b1.., e1..]` over
    the last `n` axes."""
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
        found = _computed_constant(model, pad.input[1], constants, producers) if len(pad.input) > 1 else None
        if found is None:
            return None
        values = [int(v) for v in found.reshape(-1)]
    rank = len(values) // 2
    if (len(pad.input) > 3 and pad.input[3]) or rank < n or any(values[: rank - n]) or any(values[rank : 2 * rank - n]):
        return None  # an axes input, or padding beyond the spatial axes
    return values[rank - n : rank] + values[2 * rank - n :]


def _computed_constant(model: onnx.ModelProto, name: str, constants: dict, producers: dict) -> np.ndarray | None:
    """The value of `name` where it depends on constants only (evaluated by onnx's reference
    implementation on the few nodes that compute it); None where a graph input feeds it."""
    if name in constants:
        return numpy_helper.to_array(constants[name])
    needed: list[onnx.NodeProto] = []
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current in seen or current in constants or not current:
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None or len(needed) > _MAX_COMPUTED_NODES:
            return None  # a graph input, or more arithmetic than a pad computation
        needed.append(node)
        stack.extend(node.input)
    used = {i for node in needed for i in node.input if i in constants}
    values = []
    for key in sorted(used):
        value = onnx.TensorProto()
        value.CopyFrom(constants[key])
        value.name = key
        values.append(value)
    output = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
    graph = onnx.helper.make_graph(_ordered(needed, used), "pads", [], [output], values)
    try:
        from onnx.reference import ReferenceEvaluator

        sub = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        return np.asarray(ReferenceEvaluator(sub).run(None, {})[0])
    except Exception:  # whatever the reference cannot evaluate stays unknown
        return None


_MAX_COMPUTED_NODES = 64


def _ordered(nodes: list[onnx.NodeProto], ready: set[str]) -> list[onnx.NodeProto]:
    """The nodes in an order where each comes after the producers of its inputs."""
    ready, pending, out = set(ready), list(reversed(nodes)), []
    while pending:
        progress = [n for n in pending if all(not i or i in ready for i in n.input)]
        if not progress:
            break
        for node in progress:
            out.append(node)
            ready.update(node.output)
            pending.remove(node)
    return out
