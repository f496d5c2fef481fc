"""The refusal of FC heads; over a backbone that cannot grow anyway, it leads with what pins the size.

Each refused FC candidate gives its own reason. Where the graph under those candidates cannot run
with the image at a larger size at all, even with every backbone fix applied (LeViT's attention
splits a sequence of a fixed token count), no head rewrite would help, and that is what a user
needs to read first. Shape inference of the fixed graph up to the refused candidates' inputs,
with each image input 64 larger than exported (every stride up to 64 still fits), names the node.
"""

from __future__ import annotations

import re

import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from .backbone import fixed_skeleton, plan_backbone
from .errors import NotConvertibleError
from .fc import data_operand
from .graph import constant_shape, node_id, producer, shape, value_info_dims
from .heads import HeadSearch, Skipped
from .layout import image_layouts
from .rules.base import Code
from .sizes import size_error

# onnx's inference names the node it failed at: "(op_type:Split, node name: /attn/Split)"
_FAILED_AT = re.compile(r"\(op_type:(\w+), node name: ([^)]*)\)")
_TAG = re.compile(r"\[\w+\]")
_GROWTH = 64  # keeps every size modulo strides up to 64: a multi-branch backbone still fits


def head_refusal(
    model: onnx.ModelProto, graph: gs.Graph, search: HeadSearch, refused: list[Skipped]
) -> NotConvertibleError:
    """The error for `refused` candidates: led by what pins the backbone's size where something
    does, else by the candidate nearest the outputs (the classifier, in a transformer)."""
    reasons = [f"{s.node}: {s.reason}" for s in refused]
    what = "no FC head can" if not search.heads else f"{len(refused)} of {search.candidates} FC heads cannot"
    pinned = None if any(s.code == Code.TOKEN_SEQUENCE for s in refused) else _pinned(model, graph, refused)
    if pinned is not None:
        return NotConvertibleError(f"{what} be rewritten exactly: {pinned}", [f"backbone: {pinned}", *reasons])
    return NotConvertibleError(f"{what} be rewritten exactly: {refused[-1].reason}", reasons)


def _pinned(model: onnx.ModelProto, graph: gs.Graph, refused: list[Skipped]) -> str | None:
    """What keeps the fixed graph under `refused` from running 64 larger than exported, or None."""
    ids = {s.node for s in refused}
    feeds = [_map_under(data_operand(n)) for n in graph.nodes if node_id(n) in ids]
    try:
        layouts = image_layouts(graph, [])
    except NotConvertibleError:  # the input trace refuses by itself
        return None
    if not feeds:
        return None
    part = _graph_up_to(fixed_skeleton(model, graph, plan_backbone(model, graph, []).fixes), feeds)
    for layout in layouts.values():
        dims = next(value_info_dims(vi) for vi in model.graph.input if vi.name == layout.name) or ()
        spatial = [dims[a] for a in layout.spatial]
        if not all(isinstance(d, int) for d in spatial):
            continue
        grown = tuple(int(d) + _GROWTH for d in spatial)
        why = size_error(part, layout, grown)
        found = _FAILED_AT.search(why or "")
        if why is None or found is None:
            continue
        op, name = found.groups()
        detail = _TAG.sub("", why[found.end() :].split("(op_type:")[0]).strip(" :;")
        label = f"{op} '{name}'" if name else op
        size = "x".join(map(str, grown))
        return f"{label} keeps the model from running at other sizes, whatever its head (at {size}: {detail})"
    return None


def _graph_up_to(skel: onnx.ModelProto, feeds: list[gs.Tensor]) -> onnx.ModelProto:
    """The weight-free `skel` cut down to the nodes `feeds` depend on, with `feeds` as its outputs.
    Followed in `skel` itself: a backbone fix may have added nodes (a `Shape` for a Resize's sizes)."""
    producers = {o: n for n in skel.graph.node for o in n.output}
    kept: set[int] = set()
    stack = [t.name for t in feeds]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in kept:
            kept.add(id(node))
            stack.extend(node.input)
    nodes = [n for n in skel.graph.node if id(n) in kept]
    del skel.graph.node[:]
    skel.graph.node.extend(nodes)
    del skel.graph.output[:]
    skel.graph.output.extend(helper.make_empty_tensor_value_info(t.name) for t in feeds)
    return skel


def _map_under(tensor: gs.Tensor) -> gs.Tensor:
    """The map a candidate's vector comes from: up through the ops on `[N, K]` vectors (the head's
    flatten, pool, norms) to the first tensor of rank 3 or more."""
    for _ in range(16):
        dims = shape(tensor)
        node = producer(tensor)
        if dims is None or len(dims) >= 3 or node is None:
            return tensor
        data = [t for t in node.inputs if t.name and constant_shape(t) is None]
        if not data:
            return tensor
        tensor = data[0]
    return tensor
