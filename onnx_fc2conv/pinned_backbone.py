"""A refused head over a backbone that cannot grow anyway: the refusal leads with what pins the size.

Each refused FC candidate gives its own reason. Where the graph under those candidates cannot run
with the image at a larger size at all (LeViT's attention splits a sequence of a fixed token
count; a reshape baked for the exported size that no backbone fix rebuilds), no head rewrite would
help, and that is what a user needs to read first. Shape inference of the graph up to the refused
candidates' inputs, with each image input at twice its exported size, names the node.
"""

from __future__ import annotations

import re
from dataclasses import replace

import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from .errors import NotConvertibleError
from .fc import data_operand
from .graph import ancestors, node_id, value_info_dims
from .heads import HeadSearch, Skipped
from .layout import image_layouts
from .rules.base import Code
from .shapes import skeleton
from .sizes import size_error

# onnx's inference names the node it failed at: "(op_type:Split, node name: /attn/Split)"
_FAILED_AT = re.compile(r"\(op_type:(\w+), node name: ([^)]*)\)")
_TAG = re.compile(r"\[\w+\]")


def lead_with_pinned_backbone(model: onnx.ModelProto, graph: gs.Graph, search: HeadSearch) -> HeadSearch:
    """`search` with a last refusal (the one a refusal leads with) naming the node that keeps the
    graph under the refused candidates from running at twice the exported size, where one does."""
    refused = {s.node for s in search.skipped if not s.pooled and s.code != Code.TOKEN_SEQUENCE}
    feeds = [data_operand(n) for n in graph.nodes if node_id(n) in refused]
    if not feeds:
        return search
    try:
        layouts = image_layouts(graph, [])
    except NotConvertibleError:  # the input trace refuses by itself
        return search
    part = _graph_up_to(model, feeds)
    for layout in layouts.values():
        dims = next(value_info_dims(vi) for vi in model.graph.input if vi.name == layout.name) or ()
        spatial = [dims[a] for a in layout.spatial]
        if not all(isinstance(d, int) for d in spatial):
            continue
        doubled = tuple(2 * int(d) for d in spatial)
        why = size_error(part, layout, doubled)
        found = _FAILED_AT.search(why or "")
        if why is None or found is None:
            continue
        op, name = found.groups()
        detail = _TAG.sub("", why[found.end() :].split("(op_type:")[0]).strip(" :;")
        size = "x".join(map(str, doubled))
        reason = f"{op} '{name}' keeps the model from running at other sizes, whatever its head (at {size}: {detail})"
        return replace(search, skipped=[*search.skipped, Skipped(name, reason, Code.BAKED_SIZE)])
    return search


def _graph_up_to(model: onnx.ModelProto, feeds: list[gs.Tensor]) -> onnx.ModelProto:
    """The weight-free graph whose outputs are `feeds` (the nodes they depend on, nothing else)."""
    needed = {t.name for n in ancestors(feeds) for t in n.outputs}
    part = skeleton(model)
    nodes = [n for n in part.graph.node if any(o in needed for o in n.output)]
    del part.graph.node[:]
    part.graph.node.extend(nodes)
    del part.graph.output[:]
    part.graph.output.extend(helper.make_empty_tensor_value_info(t.name) for t in feeds)
    return part
