"""Window geometry: which input box each cell of an output map looked at.

Computed from the graph, per spatial axis, by composing every Conv/pool on the way from the
input: a cell `i` of a tensor covers input pixels `[i * J + o, i * J + o + R - 1]` where `J` is
the stride (jump), `R` the receptive field and `o` the offset (negative where padding reaches
outside the image). A layer with kernel `k`, dilation `d`, stride `s` and leading pad `p` maps
`(J, o, R)` to `(J * s, o - p * J, R + (d * (k - 1)) * J)`. Where paths join (residual Add,
Concat) the boxes are united; joining paths with different strides is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from .graph import ancestors, attr, import_graph, node_label, shape
from .rules.tail_class_axis import INDEX as INDEX_OPS
from .rules.tail_class_axis import NORMALISING as CLASS_AXIS_OPS
from .rules.tail_elementwise import Elementwise
from .rules.tail_per_feature import PerFeature
from .shapes import input_spatial_axes

ELEMENTWISE_UNARY = Elementwise.ops
ELEMENTWISE_BINARY = PerFeature.ops - {"BatchNormalization"}

# ops that slide a window over the map, and where the ones with a weight keep its kernel
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool", "QLinearConv", "ConvInteger"})
KERNEL_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
CHANNEL_OPS = (
    ELEMENTWISE_UNARY
    | ELEMENTWISE_BINARY
    | CLASS_AXIS_OPS
    | INDEX_OPS
    | frozenset({"BatchNormalization", "InstanceNormalization", "LRN", "Concat", "Identity", "QuantizeLinear"})
    | frozenset({"DequantizeLinear", "Where", "Equal", "Greater", "Less", "And", "Or", "Mean"})
    | frozenset({"QLinearAdd", "QLinearMul", "QLinearSoftmax"})  # com.microsoft's, per location
)


@dataclass(frozen=True)
class Axis:
    """Geometry along one spatial axis: cell i covers input [i*jump + offset, ... + field - 1]."""

    jump: int
    offset: int
    field: int
    input_axis: int  # which axis of the graph input this is

    def through(self, kernel: int, stride: int, pad: int, dilation: int) -> Axis:
        return Axis(
            self.jump * stride,
            self.offset - pad * self.jump,
            self.field + dilation * (kernel - 1) * self.jump,
            self.input_axis,
        )

    def union(self, other: Axis) -> Axis:
        if other.jump != self.jump or other.input_axis != self.input_axis:
            raise GeometryError("paths with different strides join")
        start = min(self.offset, other.offset)
        end = max(self.offset + self.field, other.offset + other.field)
        return Axis(self.jump, start, end - start, self.input_axis)


class GeometryError(Exception):
    """The graph has an op whose window geometry is unknown."""


@dataclass(frozen=True)
class Geometry:
    """Output stride, receptive field and offset of one output map, per spatial axis."""

    output: str
    input: str
    stride: tuple[int, ...]
    receptive_field: tuple[int, ...]
    offset: tuple[int, ...]

    def box(self, cell: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """Input box `((start, stop), ...)` (stop exclusive) of an output cell; may reach past the image."""
        if len(cell) != len(self.stride):
            raise ValueError(f"cell {cell} has {len(cell)} indices, the map has {len(self.stride)} axes")
        return tuple(
            (i * s + o, i * s + o + r)
            for i, s, o, r in zip(cell, self.stride, self.offset, self.receptive_field, strict=True)
        )

    def as_dict(self) -> dict:
        return {
            "output": self.output,
            "input": self.input,
            "stride": list(self.stride),
            "receptive_field": list(self.receptive_field),
            "offset": list(self.offset),
        }


def _pads(node: gs.Node, n: int, kernel: list[int], strides: list[int], dil: list[int]) -> list[int]:
    pads = attr(node, "pads")
    if pads:
        return list(pads[:n])
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        dims = shape(node.inputs[0])
        if dims is None or not all(isinstance(d, int) for d in dims[2:]):
            raise GeometryError(f"{node_label(node)} uses auto_pad={auto} on an unknown size")
        out = []
        for size, k, s, d in zip(dims[2:], kernel, strides, dil, strict=True):
            total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
            out.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return out
    return [0] * n


def _window(node: gs.Node, axes: list[Axis | None]) -> list[Axis | None]:
    spatial = axes[2:]
    n = len(spatial)
    kernel = attr(node, "kernel_shape")
    if kernel is None and node.op in KERNEL_INPUT:
        wshape = shape(node.inputs[KERNEL_INPUT[node.op]])
        kernel = list(wshape[2:]) if wshape else None
    if kernel is None:
        raise GeometryError(f"{node_label(node)} has no known kernel shape")
    strides = list(attr(node, "strides", [1] * n))
    dil = list(attr(node, "dilations", [1] * n))
    if not len(kernel) == len(strides) == len(dil) == n:
        raise GeometryError(f"{node_label(node)} has a window of {len(kernel)} dims on a map of {n} spatial axes")
    if not all(isinstance(v, int) for v in (*kernel, *strides, *dil)):  # a kernel read from a symbolic shape
        raise GeometryError(f"{node_label(node)} has a window of unknown size")
    pads = _pads(node, n, list(kernel), strides, dil)
    out: list[Axis | None] = list(axes[:2])
    for a, k, s, p, d in zip(spatial, kernel, strides, pads, dil, strict=True):
        if a is None:
            raise GeometryError(f"{node_label(node)} slides over an axis that is not spatial")
        out.append(a.through(int(k), int(s), int(p), int(d)))
    return out


def propagate(graph: gs.Graph) -> tuple[dict[str, list[Axis | None]], dict[str, str]]:
    """Per tensor that keeps spatial axes, the geometry of each axis; and why others have none."""
    geo: dict[str, list[Axis | None]] = {}
    errors: dict[str, str] = {}
    for tensor in graph.inputs:
        dims = shape(tensor)
        if dims is None or len(dims) < 3:
            continue
        axes: list[Axis | None] = [None] * len(dims)
        for a in input_spatial_axes(tensor):
            axes[a] = Axis(1, 0, 1, a)
        geo[tensor.name] = axes
    for node in graph.nodes:
        broken = next((errors[t.name] for t in node.inputs if t.name in errors), None)
        if broken is not None:  # a window whose geometry is unknown poisons everything after it
            for o in node.outputs:
                errors[o.name] = broken
            continue
        ins = [geo[t.name] for t in node.inputs if t.name in geo]
        if not ins:
            continue
        try:
            out = _through(node, ins, geo)
        except GeometryError as exc:
            for o in node.outputs:
                errors[o.name] = str(exc)
            continue
        if out is not None:
            for o in node.outputs[:1]:
                geo[o.name] = out
    return geo, errors


def _through(node: gs.Node, ins: list, geo: dict) -> list[Axis | None] | None:
    op = node.op
    if op in ("Shape", "Size"):  # reads only the size: no map flows on
        return None
    first = geo.get(node.inputs[0].name)
    if op in WINDOW_OPS:
        if first is None:
            return None
        return _window(node, first)
    if op == "Transpose":
        perm = attr(node, "perm")
        if first is None:
            return None
        perm = list(perm) if perm is not None else list(reversed(range(len(first))))
        return [first[p] for p in perm]
    if op in CHANNEL_OPS or op in ("Softmax", "LogSoftmax"):
        merged = [a for a in ins[0]]
        for other in ins[1:]:
            if len(other) != len(merged):
                return None
            merged = [
                a.union(b) if (a is not None and b is not None) else (a if b is None else b)
                for a, b in zip(merged, other, strict=True)
            ]
        if op in ("ArgMax", "ArgMin") and not attr(node, "keepdims", 1):
            axis = attr(node, "axis", 0) % len(merged)
            merged = merged[:axis] + merged[axis + 1 :]
        return merged
    if op == "Reshape" and first is not None:
        return _reshape(node, first)
    if op in ("GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "ConvTranspose", "Reshape", "Flatten"):
        raise GeometryError(f"{node_label(node)} has no fixed window geometry")
    if op in ("ReduceMean", "ReduceMax", "ReduceSum"):
        raise GeometryError(f"{node_label(node)} pools over the map")
    raise GeometryError(f"{node_label(node)}: window geometry not known for this op")


def _reshape(node: gs.Node, axes: list[Axis | None]) -> list[Axis | None]:
    """A Reshape that keeps the trailing spatial dims (a channel shuffle) keeps their geometry."""
    in_shape, out_shape = shape(node.inputs[0]), shape(node.outputs[0])
    first_spatial = next((i for i, a in enumerate(axes) if a is not None), None)
    if in_shape is None or out_shape is None or first_spatial is None:
        raise GeometryError(f"{node_label(node)} has no known window geometry")
    tail = len(in_shape) - first_spatial
    if any(a is None for a in axes[first_spatial:]) or len(out_shape) < tail + 1:
        raise GeometryError(f"{node_label(node)} has no known window geometry")
    if any(d is None for d in in_shape[first_spatial:]) or list(in_shape[-tail:]) != list(out_shape[-tail:]):
        raise GeometryError(f"{node_label(node)} regroups the spatial axes")
    return [None] * (len(out_shape) - tail) + list(axes[first_spatial:])


def output_geometry(model: onnx.ModelProto, graph: gs.Graph | None = None) -> dict[str, Geometry | str]:
    """Each graph output's geometry, or the reason it has none (not a map, unknown op)."""
    graph = graph if graph is not None else import_graph(model)
    geo, errors = propagate(graph)
    result: dict[str, Geometry | str] = {}
    for tensor in graph.outputs:
        out = tensor.name
        axes = geo.get(out)
        if axes is None:
            result[out] = errors.get(out, _find_cause(tensor, errors))
            continue
        spatial = [a for a in axes if a is not None]
        if not spatial:
            result[out] = "the output has no spatial axes"
            continue
        inp = graph.inputs[0].name
        result[out] = Geometry(
            out,
            inp,
            tuple(a.jump for a in spatial),
            tuple(a.field for a in spatial),
            tuple(a.offset for a in spatial),
        )
    return result


def _find_cause(out: gs.Tensor, errors: dict[str, str]) -> str:
    for node in ancestors([out]):
        for o in node.outputs:
            if o.name in errors:
                return errors[o.name]
    return "the output is not a map of the input"
