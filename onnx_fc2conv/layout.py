"""Where an input's batch, channel and spatial axes are, found by following its data.

From the input, the data is followed through ops that keep or permute axes (elementwise ops,
Cast, normalisations, Pad, Resize, Transpose, Reshapes that only move unit dims) to the first op
that gives the axes their meaning: a Conv or a pool reads `[N, C, *S]`. Every path that gets
there must agree; an input no path traces is refused by name. Axes are never chosen by position
(a Keras model scales and normalises its NHWC input before the Transpose to NCHW).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from .heads import Head

from .errors import NotConvertibleError
from .graph import ancestors, constant, constant_ints, node_label, shape, users
from .rules.backbone_unit_reshape import unit_dim_permutation
from .rules.tail_elementwise import Elementwise
from .rules.tail_per_feature import PerFeature

_MEANING = frozenset(
    {"Conv", "QLinearConv", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
)
_KEEP = (
    Elementwise.ops
    | PerFeature.ops
    | frozenset({"InstanceNormalization", "LRN", "Pad", "Resize", "Upsample", "QuantizeLinear", "DequantizeLinear"})
)


@dataclass(frozen=True)
class InputLayout:
    """Axes of one graph input: batch, channel and spatial (innermost last)."""

    name: str
    batch: int | None  # None: the batch stays as exported (a node pins it)
    channel: int
    spatial: tuple[int, ...]
    channels: int | None = None  # the count the first Convs' kernels take (a symbolic channel dim gets it)


def trace_layout(tensor: gs.Tensor) -> InputLayout | None:
    """The input's layout, or None when no path reaches a Conv or pool, or paths disagree."""
    reached: list[gs.Node] = []
    found, _ = _trace(tensor, reached)
    if len(found) != 1:
        return None
    layout = _layout(tensor.name, found.pop())
    return replace(layout, channels=_kernel_channels(tensor, layout.channel, reached)) if layout else None


def _kernel_channels(tensor: gs.Tensor, channel: int, reached: list[gs.Node]) -> int | None:
    """The input channels every Conv the input reaches takes (kernel dim 1 times groups), where the
    input's channel dim is a symbol that each Conv's input carries as its own channel dim (no
    slice, concat, pad or resize on the way changed the count); else None."""
    dims = shape(tensor) or ()
    symbol = dims[channel] if channel < len(dims) else None
    if not isinstance(symbol, str) or not symbol:
        return None
    counts = set()
    for node in reached:
        kernel = shape(node.inputs[3 if node.op == "QLinearConv" else 1]) if node.op in _KERNEL_OPS else None
        data = shape(node.inputs[0]) or ()
        if not kernel or not isinstance(kernel[1], int) or len(data) < 2 or data[1] != symbol:
            return None
        counts.add(kernel[1] * int(node.attrs.get("group", 1)))
    return counts.pop() if len(counts) == 1 else None


_KERNEL_OPS = frozenset({"Conv", "QLinearConv"})


def _trace(tensor: gs.Tensor, reached: list[gs.Node] | None = None) -> tuple[set[tuple[int, ...]], list[gs.Node]]:
    """The axis orders the input's data reaches a Conv or pool in (the nodes into `reached`), and
    the nodes the trace could not follow it through."""
    found: set[tuple[int, ...]] = set()
    stops: list[gs.Node] = []
    stack: list[tuple[gs.Tensor, tuple[int, ...]]] = [(tensor, tuple(range(len(shape(tensor) or ()))))]
    seen: set[tuple[int, tuple[int, ...]]] = set()
    while stack:
        current, order = stack.pop()
        for node in users(current):
            key = (id(node), order)
            if key in seen:
                continue
            seen.add(key)
            passed = len(stack)
            if node.op in _MEANING and node.inputs[0] is current:
                found.add(order)
                if reached is not None:
                    reached.append(node)
                continue
            elif node.op in _KEEP and _data_input(node, current):
                stack.extend((out, order) for out in node.outputs[:1])
            elif node.op == "Transpose":
                perm = node.attrs.get("perm") or list(reversed(range(len(order))))
                stack.append((node.outputs[0], tuple(order[p] for p in perm)))
            elif node.op == "Reshape":
                perm = _unit_dims_moved(node)
                if perm is not None:
                    stack.append((node.outputs[0], tuple(order[p] for p in perm)))
            elif node.op in _SELECT and (node.op == "Concat" or node.inputs[0] is current):
                moved = _selected(node, order)
                if moved is not None:
                    stack.extend((out, moved) for out in (node.outputs if node.op == "Split" else node.outputs[:1]))
            if len(stack) == passed and node.op not in _SIZE_ONLY:
                stops.append(node)
    return found, stops


_SIZE_ONLY = frozenset({"Shape", "Size"})


def _stop_reason(stops: list[gs.Node]) -> str:
    """'; the trace stops at Reshape 'x' (target [...])' for the first node it could not follow."""
    if not stops:
        return ""
    node = stops[0]
    target = constant_ints(node.inputs[1]) if node.op == "Reshape" and len(node.inputs) > 1 else None
    detail = f" (target {target})" if target is not None else ""
    return f"; the trace stops at {node_label(node)}{detail}"


def _layout(name: str, order: tuple[int, ...]) -> InputLayout | None:
    """The layout a Conv's `[N, C, *S]` gives; a channel axis rebuilt from slices of the input's
    (torchvision's `transform_input`: each channel gathered, scaled, unsqueezed and concatenated)
    is the one input axis the order lost."""
    if len(order) < 3 or order.count(_NEW) > 1 or _NEW in (order[0], *order[2:]):
        return None
    if order[1] == _NEW:
        lost = set(range(len(order))) - set(order)
        if len(lost) != 1:
            return None
        order = (order[0], lost.pop(), *order[2:])
    return InputLayout(name, order[0], order[1], tuple(order[2:]))


_NEW = -1  # an axis the data flow added (Unsqueeze): not one of the input's
_SELECT = frozenset({"Gather", "Slice", "Split", "Concat", "Unsqueeze", "Squeeze"})


def _selected(node: gs.Node, order: tuple[int, ...]) -> tuple[int, ...] | None:
    """The axes after an op that selects along one axis (Slice, Split, Concat and Gather with an
    index list keep them; Gather with one index drops its axis, with a k-D index puts k new axes in
    its place) or adds and drops unit axes."""
    if node.op in ("Slice", "Split", "Concat"):
        return order
    if node.op == "Gather":
        index = constant(node.inputs[1])
        if index is None:
            return None
        if index.ndim == 1:
            return order
        axis = int(node.attrs.get("axis", 0)) % len(order)
        return order[:axis] + (_NEW,) * index.ndim + order[axis + 1 :]
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        found = constant(node.inputs[1])
        axes = None if found is None else [int(a) for a in found.reshape(-1)]
    if axes is None:
        return None
    if node.op == "Squeeze":
        drop = {a % len(order) for a in axes}
        return tuple(o for i, o in enumerate(order) if i not in drop)
    rank = len(order) + len(axes)
    out = list(order)
    for a in sorted(a % rank for a in axes):
        out.insert(a, _NEW)
    return tuple(out)


_SIZED = frozenset({"Pad", "Resize", "Upsample", "Clip", "QuantizeLinear", "DequantizeLinear"})


def _data_input(node: gs.Node, current: gs.Tensor) -> bool:
    """`current` flows through `node` as its data: every other operand is a constant, or (Pad,
    Resize, ...) only sizes and parameters, computed or not."""
    if node.op in _SIZED:
        return node.inputs[0] is current
    return all(t is current or not t.name or constant(t) is not None for t in node.inputs)


def _unit_dims_moved(node: gs.Node) -> list[int] | None:
    in_shape, dims = shape(node.inputs[0]), constant_ints(node.inputs[1]) if len(node.inputs) > 1 else None
    if in_shape is None or dims is None:
        return None
    if list(in_shape) == dims:
        return list(range(len(dims)))
    return unit_dim_permutation(list(in_shape), dims)


def image_layouts(graph: gs.Graph, heads: list[Head]) -> dict[str, InputLayout]:
    """The layout of every image input the heads' maps depend on (every image input when there
    is no head); an image input whose axes cannot be traced is refused by name."""
    needed = [h.flatten.feature for h in heads if not h.reads_input]
    if heads:
        feeding = {id(t) for t in needed} | {id(t) for n in ancestors(needed) for t in n.inputs}
        candidates = [t for t in graph.inputs if id(t) in feeding]
    else:
        candidates = list(graph.inputs)
    layouts = {}
    for tensor in candidates:
        if len(shape(tensor) or ()) < 3:
            continue
        layout = trace_layout(tensor)
        if layout is None:
            found, stops = _trace(tensor)
            why = _stop_reason(stops) if not found else "; its paths give different axes"
            raise NotConvertibleError(
                f"input '{tensor.name}': its batch and spatial axes cannot be traced to a Conv or pool{why}"
            )
        layouts[tensor.name] = layout
    return layouts
