"""Backbone nodes that bake the spatial size into a constant: plan the fixes, or the refusals.

Each backbone rule (rules/backbone_*) looks at the nodes of its ops on the way from the input to
the heads' maps and returns a fix, nothing, or a refusal naming the node. Rules of one op are
tried in order; the first that returns a fix or refuses decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .graph import ancestors, node_id, shape
from .heads import Head, Skipped
from .rules import BACKBONE_RULES
from .rules.backbone_base import BackboneFix
from .rules.base import Refusal

__all__ = ["BackboneFix", "BackbonePlan", "plan_backbone"]


@dataclass
class BackbonePlan:
    fixes: list[BackboneFix] = field(default_factory=list)
    refusals: list[Skipped] = field(default_factory=list)


def _spatial_count(graph: gs.Graph) -> int:
    ranks = [len(shape(t) or ()) for t in graph.inputs]
    image = [r for r in ranks if r >= 3]
    return (max(image) - 2) if image else 0


def _backbone_nodes(graph: gs.Graph, heads: list[Head]) -> list[gs.Node]:
    if not heads:
        return list(graph.nodes)
    ids = {id(n) for n in ancestors(h.flatten.feature for h in heads)}
    return [n for n in graph.nodes if id(n) in ids]


def plan_backbone(graph: gs.Graph, heads: list[Head]) -> BackbonePlan:
    """What would make the backbone size-agnostic; nothing is changed (see `BackboneFix.apply`)."""
    plan = BackbonePlan()
    spatial = _spatial_count(graph)
    if spatial == 0:
        return plan
    for node in _backbone_nodes(graph, heads):
        for rule in (r for r in BACKBONE_RULES if node.op in r.ops):
            try:
                fix = rule.match(graph, node, spatial)
            except Refusal as refusal:
                plan.refusals.append(Skipped(node_id(node), refusal.reason, refusal.code))
                break
            if fix is not None:
                plan.fixes.append(fix)
                break
    return plan
