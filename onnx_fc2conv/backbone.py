"""Backbone nodes that bake the spatial size into a constant: plan the fixes, or the refusals.

Each backbone rule (rules/backbone_*) looks at the nodes of its ops on the way from the input to
the heads' maps and returns a fix, nothing, or a refusal naming the node. Rules of one op are
tried in order; the first that returns a fix or refuses decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import onnx
import onnx_graphsurgeon as gs

from .graph import Edit, ancestors, import_graph, node_id, shape, value_info_dims, write_back
from .heads import Head, Skipped
from .layout import InputLayout, trace_layout
from .rules import BACKBONE_RULES
from .rules.backbone_base import BackboneContext, BackboneFix
from .rules.base import Refusal
from .shapes import infer_skeleton, skeleton, skeleton_at
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
    refused one's output is listed too). Shapes at the probe size are inferred again with the
    fixes found so far applied (a fixed node changes what follows it there), until no more fixes
    are found.
    """
    spatial = _spatial_count(graph)
    if spatial == 0:
        return BackbonePlan()
    static = _static_layouts(graph)
    fed = _input_fed(graph)
    grows = _grows(model, static)
    region = {id(n) for n in ancestors(_maps(heads))} if heads else {id(n) for n in graph.nodes}
    plan = _plan_pass(
        graph, BackboneContext(graph, spatial, _probe_shapes(model, static).get, fed.__contains__, grows), region
    )
    for _ in range(_REPROBES):
        if not plan.fixes:
            break
        probed = _probe_shapes(fixed_skeleton(model, graph, plan.fixes), static)
        again = _plan_pass(graph, BackboneContext(graph, spatial, probed.get, fed.__contains__, grows), region)
        if [f.node for f in again.fixes] == [f.node for f in plan.fixes]:
            return again
        plan = again
    return plan


def _maps(heads: list[Head]) -> list[gs.Tensor]:
    """The tensors the heads read; a map transposed back from channel-last has no producer until the
    rewrite, so its channel-last source stands for it."""
    return [t for h in heads for t in (h.flatten.feature, h.flatten.channel_last) if t is not None]


_REPROBES = 16  # each pass can show what a fix hid (a chain of Reshapes); two or three are usual


def _plan_pass(graph: gs.Graph, base: BackboneContext, region: set[int]) -> BackbonePlan:
    """One look at the region's nodes with `base.probe` (a shape by tensor name) at the probe size."""
    plan = BackbonePlan()
    tainted: set[int] = set()
    names = base.probe
    ctx = replace(base, probe=lambda t: None if id(t) in tainted else names(t.name))
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


def fixed_skeleton(model: onnx.ModelProto, graph: gs.Graph, fixes: list[BackboneFix]) -> onnx.ModelProto:
    """The weight-free skeleton of `model` with `fixes` applied (to a graph of its own)."""
    skel = skeleton(model)
    copy = import_graph(skel)
    if len(copy.nodes) != len(graph.nodes):
        return skel  # not the graph `model` was imported as: nothing to apply the fixes to
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    edit = Edit(copy)
    moved = [replace(fix, target=copy.nodes[position[id(fix.target)]]) for fix in fixes]  # before nodes are added
    for fix in moved:
        fix.apply(edit)
    write_back(copy, skel)
    return skel


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
