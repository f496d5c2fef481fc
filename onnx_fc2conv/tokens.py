"""Transformers: a classifier that reads the class token, and FC layers on a token sequence.

A vision transformer cuts the image into a fixed number of patches and adds a class token: its
attention runs over that fixed token count (and its position embedding holds one vector per token),
and its classifier reads the class token, one row of the `[N, T, C]` sequence. Nothing of it slides
over a larger image. The head search sees the projections inside the attention as FC candidates and
refuses each for its own reason; here they give way to one line that says what truly blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import onnx_graphsurgeon as gs

from .fc import data_operand, is_candidate
from .graph import ancestors, constant_ints, node_id, node_label, producer, shape
from .heads import HeadSearch, Skipped
from .rules.base import Code, axes_of

# ops between the token read and the classifier that keep it one vector per image
_PASS_THROUGH = frozenset(
    {"LayerNormalization", "BatchNormalization", "Identity", "Squeeze", "Flatten", "Reshape", "Cast", "Relu", "Gelu"}
    | {"Tanh", "Dropout"}
)
_TOKEN_POOLS = frozenset({"ReduceMean", "ReduceMax"})
_STEPS = 8


@dataclass(frozen=True)
class TokenRead:
    """A node that takes one token of a `[N, T, C]` sequence (the class token), or (index None)
    pools the sequence over its tokens (LeViT, MLP-Mixer)."""

    node: gs.Node
    sequence: gs.Tensor
    index: int | None


def class_token_read(tensor: gs.Tensor) -> TokenRead | None:
    """The Gather or Slice taking one row of a rank-3 sequence on its token axis (1), upstream of
    `tensor` through ops that keep one vector per image."""
    for _ in range(_STEPS):
        node = producer(tensor)
        if node is None:
            return None
        found = _token_read(node)
        if found is not None or node.op not in _PASS_THROUGH:
            return found
        tensor = node.inputs[0]
    return None


def _ints(node: gs.Node, index: int) -> list[int] | None:
    if len(node.inputs) <= index or not node.inputs[index].name:
        return None
    return constant_ints(node.inputs[index])


def _token_read(node: gs.Node) -> TokenRead | None:
    if not node.inputs or node.op not in ("Gather", "Slice", *_TOKEN_POOLS):
        return None
    sequence = node.inputs[0]
    dims = shape(sequence)
    if dims is None or len(dims) != 3:
        return None
    if node.op in _TOKEN_POOLS:
        keep = int(node.attrs.get("keepdims", 1))
        pooled = axes_of(node, 3) == {1} and not keep and dims[1] != 1  # one token pins nothing
        return TokenRead(node, sequence, None) if pooled else None
    if node.op == "Gather":
        index = _ints(node, 1)
        if int(node.attrs.get("axis", 0)) % 3 != 1 or index is None or len(index) != 1:
            return None
        return TokenRead(node, sequence, index[0])
    starts, ends, axes = _ints(node, 1), _ints(node, 2), _ints(node, 3)
    if starts is None or ends is None or len(starts) != 1 or [a % 3 for a in axes or [0]] != [1]:
        return None
    return TokenRead(node, sequence, starts[0]) if ends[0] - starts[0] == 1 else None


def _on_a_sequence(node: gs.Node) -> tuple | None:
    """The `[N, T, C]` sequence an FC candidate reads as `[N * T, C]` rows (a per-token layer)."""
    data = data_operand(node)
    source = producer(data)
    if source is None or source.op not in ("Reshape", "Flatten"):
        return None
    dims, rows = shape(source.inputs[0]), shape(data)
    if dims is None or rows is None or len(dims) != 3 or not all(isinstance(d, int) for d in dims):
        return None
    return tuple(dims) if tuple(rows) == (dims[0] * dims[1], dims[2]) else None


def summarize_token_heads(graph: gs.Graph, search: HeadSearch) -> HeadSearch:
    """The refusals of FC candidates on a token sequence become one line, naming the classifier.

    A candidate that reads the class token leads; the candidates its sequence depends on (attention projections, MLPs)
    are not heads and go. Without one, candidates that read a `[N, T, C]` sequence as `[N * T, C]`
    rows go into one line naming the last of them.
    """
    if not search.skipped or image_spatial_rank(graph) < 2:
        return search
    refused = {s.node for s in search.skipped if not s.pooled}  # a pooled head is kept as it is
    candidates = [n for n in graph.nodes if is_candidate(n) and node_id(n) in refused]
    reads = [(n, r) for n in candidates if (r := class_token_read(data_operand(n))) is not None]
    if reads:
        fc, folded, reason = _class_token_line(candidates, *reads[-1])
    else:
        on_sequence = [(n, dims) for n in candidates if (dims := _on_a_sequence(n))]
        if not on_sequence:
            return search
        fc, dims = on_sequence[-1]
        folded = {node_id(n) for n, _ in on_sequence}
        others = len(on_sequence) - 1
        more = f" (and {others} more FC layer{'s' if others > 1 else ''} on it)" if others else ""
        reason = (
            f"{node_label(fc)} acts on each token of a sequence {list(dims)}{more}: a fixed count of "
            f"{dims[1]} tokens, not a feature map"
        )
    kept = [s for s in search.skipped if s.node not in folded]
    summary = Skipped(node_id(fc), reason, Code.TOKEN_SEQUENCE)
    return replace(search, skipped=[*kept, summary], candidates=search.candidates - len(folded) + 1)


def _class_token_line(candidates: list[gs.Node], fc: gs.Node, read: TokenRead) -> tuple[gs.Node, set[str], str]:
    """The classifier, the candidates folded into its line (those its sequence depends on), the line."""
    inside = {id(n) for n in ancestors([read.sequence])}
    folded = {node_id(n) for n in candidates if id(n) in inside} | {node_id(fc)}
    dims = list(shape(read.sequence) or ())
    if read.index is None:
        what = f"the pooled tokens: {node_label(read.node)} pools the sequence '{read.sequence.name}' {dims}"
        over = "that the attention or token mixing runs over"
    else:
        what = f"the class token: {node_label(read.node)} takes token {read.index} of the sequence "
        what += f"'{read.sequence.name}' {dims}"
        over = "that the attention runs over"
    reason = f"{node_label(fc)} reads {what}, a fixed count of {dims[1]} tokens {over}, not a feature map"
    return fc, folded, reason


def image_spatial_rank(graph: gs.Graph) -> int:
    """Spatial rank of the highest-rank graph input (0 without an image input)."""
    ranks = [len(shape(t) or ()) for t in graph.inputs]
    return max(0, max(ranks, default=0) - 2) if any(r >= 3 for r in ranks) else 0
