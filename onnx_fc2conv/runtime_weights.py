"""Refused FC candidates that run at every size as they are.

A candidate FC layer is refused when no flatten rule makes it a convolution. Two kinds still run at
every size as they are, so they do not block the conversion (the verification at larger sizes runs
the whole model):

- a head on a globally pooled vector: it sees `[N, C]` at every size (only --dense needs it
  rewritten);
- an FC layer that reads no graph input at all: a weight computed at run time from constants
  (Swin V2's continuous position bias, an MLP on a fixed coordinate table). Listing it as a refused
  head would hide what truly pins such a model's size.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .fc import data_operand, is_candidate
from .graph import ancestors, node_id
from .heads import HeadSearch, Skipped


def runs_as_is(graph: gs.Graph, search: HeadSearch, dense: bool) -> tuple[list[Skipped], list[str]]:
    """The refused candidates that run at any size as they are, and the notices that say so."""
    kept = [s for s in search.skipped if s.pooled and not dense]
    notices = [f"head {s.node} stays on the pooled vector as it is: {s.reason}" for s in kept]
    nodes = {node_id(n): n for n in graph.nodes}
    weights = [s for s in search.skipped if s not in kept and s.node in nodes and _reads_no_input(graph, nodes[s.node])]
    if weights:
        names = ", ".join(s.node for s in weights[:3]) + (", ..." if len(weights) > 3 else "")
        notices.append(f"FC layers that read no input compute weights at run time and stay as they are: {names}")
    return kept + weights, notices


def _reads_no_input(graph: gs.Graph, node: gs.Node) -> bool:
    """An FC candidate computed from constants only (no graph input upstream of its data)."""
    if not is_candidate(node):
        return False
    inputs = {id(t) for t in graph.inputs}
    data = data_operand(node)
    return id(data) not in inputs and not any(id(t) in inputs for n in ancestors([data]) for t in n.inputs)
