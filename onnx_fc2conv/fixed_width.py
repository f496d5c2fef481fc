"""FC layers that do not depend on the input size run as they are.

A candidate FC layer is refused when no flatten rule makes it a convolution. Two kinds still run
at every size as they are, so they do not block the conversion (the verification at larger sizes
runs the whole model):

- one that reads no graph input at all: a weight computed at run time from constants (Swin V2's
  continuous position bias, an MLP on a fixed coordinate table);
- one whose activations keep their width at a larger input (shapes inferred with the image inputs
  grown, as the backbone rules see them, their fixes applied): Keras applies a Dense layer to
  every position of an NHWC map as `Reshape [N*H*W, C] -> MatMul -> Reshape [N, H, W, C']`
  (ConvNeXt's pointwise layers), a 1 x 1 convolution in all but name, with its row count taken
  from `Shape` at run time. Where inference cannot tell the width at the larger size (a node
  before it pins the size), the refusal stands.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from .backbone import probe_shapes
from .fc import data_operand, is_candidate
from .graph import ancestors, node_id, producer, shape
from .heads import HeadSearch, Skipped


def runs_as_is(model: onnx.ModelProto, graph: gs.Graph, search: HeadSearch, dense: bool) -> tuple[list, list[str]]:
    """The refused candidates that run at any size as they are, and the notices that say so: a head
    on a globally pooled vector (only --dense needs it rewritten), an FC layer that reads no input
    and one of fixed width."""
    kept = [s for s in search.skipped if s.pooled and not dense]
    notices = [f"head {s.node} stays on the pooled vector as it is: {s.reason}" for s in kept]
    nodes = {node_id(n): n for n in graph.nodes}
    weights = [s for s in search.skipped if s not in kept and s.node in nodes and _reads_no_input(graph, nodes[s.node])]
    if weights:
        notices.append(f"FC layers that read no input compute weights at run time and stay as they are: "
                       f"{_names(weights)}")  # fmt: skip
    fixed = fixed_width(model, graph, search, [s for s in search.skipped if s not in kept + weights])
    if len(fixed) == 1:
        (first, width), *_ = fixed
        notices.append(f"FC layer {first.node} stays as it is: it reads {width} features per row at every input "
                       f"size ({first.reason})")  # fmt: skip
    elif fixed:
        notices.append(f"{len(fixed)} FC layers stay as they are: each reads as many features per row at every input "
                       f"size (a Dense layer at every position): {_names([s for s, _ in fixed])}")  # fmt: skip
    return kept + weights + [s for s, _ in fixed], notices


def _names(skipped: list[Skipped]) -> str:
    return ", ".join(s.node for s in skipped[:3]) + (", ..." if len(skipped) > 3 else "")


def fixed_width(model: onnx.ModelProto, graph: gs.Graph, search: HeadSearch, refused: list[Skipped]) -> list:
    """The refused candidates that read rows of a map's last axis, an axis of the same width at a
    larger input as at the exported size, each with that width."""
    nodes = {node_id(n): n for n in graph.nodes}
    found = [(s, src) for s in refused if s.node in nodes and (src := _rows_of(nodes[s.node])) is not None]
    if not found:
        return []
    grown = probe_shapes(model, graph, search.heads)
    kept = []
    for skipped, src in found:
        dims, larger = shape(src), grown.get(src.name)
        if dims is not None and larger is not None and len(larger) == len(dims) and larger[-1] == dims[-1]:
            kept.append((skipped, dims[-1]))
    return kept


def _rows_of(node: gs.Node) -> gs.Tensor | None:
    """The map an FC candidate reads row by row: its data is a Reshape (or Flatten) of a rank-3+
    tensor that keeps that tensor's last axis, of static width, as the rows' width."""
    if not is_candidate(node):
        return None
    data = data_operand(node)
    source = producer(data)
    if source is None or source.op not in ("Reshape", "Flatten") or not source.inputs:
        return None
    src, out = source.inputs[0], shape(data)
    dims = shape(src)
    if dims is None or len(dims) < 3 or out is None or len(out) != 2 or not isinstance(dims[-1], int):
        return None
    if source.op == "Flatten" and source.attrs.get("axis", 1) % len(dims) != len(dims) - 1:
        return None
    return src if out[1] == dims[-1] else None


def _reads_no_input(graph: gs.Graph, node: gs.Node) -> bool:
    """An FC candidate computed from constants only (no graph input upstream of its data)."""
    if not is_candidate(node):
        return False
    inputs = {id(t) for t in graph.inputs}
    data = data_operand(node)
    return id(data) not in inputs and not any(id(t) in inputs for n in ancestors([data]) for t in n.inputs)
