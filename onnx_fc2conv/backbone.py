"""Backbone nodes that bake the spatial size into a constant: plan the fixes, or the refusals.

Each backbone rule (rules/backbone_*) looks at the nodes of its ops on the way from the input to
the heads' maps and returns a fix, nothing, or a refusal naming the node. Rules of one op are
tried in order; the first that returns a fix or refuses decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from .graph import ancestors, node_id, shape, value_info_dims
from .heads import Head, Skipped
from .layout import InputLayout, trace_layout
from .rules import BACKBONE_RULES
from .rules.backbone_base import BackboneContext, BackboneFix
from .rules.base import Refusal
from .shapes import infer_skeleton, skeleton_at
from .sizes import runs_at

__all__ = ["BackboneFix", "BackbonePlan", "plan_backbone"]


@dataclass
class BackbonePlan:
    fixes: list[BackboneFix] = field(default_factory=list)
    refusals: list[Skipped] = field(default_factory=list)


def _spatial_count(graph: gs.Graph) -> int:
    ranks = [len(shape(t) or ()) for t in graph.inputs]
    image = [r for r in ranks if r >= 3]
    return (max(image) - 2) if image else 0


def _input_fed(graph: gs.Graph) -> set[int]:
    """Ids of the nodes that depend on an image input (a weight computed at run time does not)."""
    fed = {id(t) for t in graph.inputs if len(shape(t) or ()) >= 3}
    nodes = set()
    for node in graph.nodes:
        if any(id(t) in fed for t in node.inputs):
            fed.update(id(t) for t in node.outputs)
            nodes.add(id(node))
    return nodes


def plan_backbone(model: onnx.ModelProto, graph: gs.Graph, heads: list[Head]) -> BackbonePlan:
    """What would make the backbone size-agnostic; nothing is changed (see `BackboneFix.apply`).

    Nodes between the inputs and the heads' maps are looked at in graph order; what follows a
    refused node has no known shape at the probe size (so a later Reshape that only fits the
    refused one's output is listed too).
    """
    plan = BackbonePlan()
    spatial = _spatial_count(graph)
    if spatial == 0:
        return plan
    static = _static_layouts(graph)
    probed = _probe_shapes(model, static)
    tainted: set[int] = set()
    fed = _input_fed(graph)
    ctx = BackboneContext(
        graph,
        spatial,
        lambda t: None if id(t) in tainted else probed.get(t.name),
        fed.__contains__,
        _grows(model, static),
    )
    region = {id(n) for n in ancestors(h.flatten.feature for h in heads)} if heads else {id(n) for n in graph.nodes}
    for node in graph.nodes:
        if any(id(t) in tainted for t in node.inputs):
            tainted.update(id(t) for t in node.outputs)
        if id(node) not in region:
            continue
        for rule in (r for r in BACKBONE_RULES if node.op in r.ops):
            try:
                fix = rule.match(ctx, node)
            except Refusal as refusal:
                plan.refusals.append(Skipped(node_id(node), refusal.reason, refusal.code))
                tainted.update(id(t) for t in node.outputs)
                break
            if fix is not None:
                plan.fixes.append(fix)
                break
    return plan


def _static_layouts(graph: gs.Graph) -> list[tuple[InputLayout, tuple[int, ...]]]:
    """Each traced image input whose spatial dims are fixed, with its dims."""
    found = []
    for tensor in graph.inputs:
        layout, dims = trace_layout(tensor), tuple(shape(tensor) or ())
        if layout is not None and all(isinstance(dims[a], int) for a in layout.spatial):
            found.append((layout, dims))
    return found


def _grows(model: onnx.ModelProto, static: list[tuple[InputLayout, tuple]]) -> bool:
    """The model as it is runs one and two pixels larger on every spatial axis of its image inputs."""
    for layout, dims in static:
        for grow in (1, 2):
            if not runs_at(model, layout, tuple(int(dims[a]) + grow for a in layout.spatial)):
                return False
    return True


_PROBE_GROWTH = 64  # keeps every size modulo strides up to 64, so multi-branch backbones still fit


def _probe_shapes(model: onnx.ModelProto, static: list[tuple[InputLayout, tuple]]) -> dict[str, tuple]:
    """Every inferable shape with each traced image input grown by 64 on its spatial axes."""
    grown = {
        layout.name: [d + _PROBE_GROWTH if a in layout.spatial else d for a, d in enumerate(dims)]
        for layout, dims in static
    }
    skel = skeleton_at(model, grown)
    try:  # the symbolic inference and folding follow sizes computed at run time (torch's Pad pads)
        inferred = infer_skeleton(skel)
    except Exception:  # onnx reports malformed graphs in its own types: then nothing is known
        return {}
    found = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = value_info_dims(vi)
        if dims is not None:
            found[vi.name] = dims
    return found
