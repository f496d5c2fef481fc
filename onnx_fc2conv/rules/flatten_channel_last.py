"""The channel-last map a spatial reduce reads: `Transpose(perm=[0, 2, .., 1])`, then layers that
work on each location's channel vector alone.

tf2onnx writes a Keras `Dense` on a 4-D map `[N, H, W, C]` as a Tensordot: `Reshape` to `[N*H*W, C]`
(the leading axes merged, the channels kept), `MatMul` by a `[C, K]` weight (or a `Gemm` with
transA=0), `Reshape` back to `[N, H, W, K]` (the same leading dims), its bias an `Add` after it.
Row `(n*H + h)*W + w` of the `[N*H*W, C]` matrix is location `(n, h, w)`, so the round trip maps each
location's channels alone: its output has the axes of its input (batch, spatial, channel), K
channels instead of C. Elementwise ops and constants that broadcast along the last axis keep the
axes too. A reduce over axes `1..r-2` of such a tensor is a global pool: the same values as a
reduce over axes `2..` of its Transpose back to `[N, K, H, W]`, which the rewrite adds.

The round trip is judged on what it does: the first Reshape must keep the last axis and merge the
others (its output is `[P, C]`), the weight must be `[C, K]` on that axis, and the second Reshape
must give back the leading dims of the first one's input. A Reshape-FC-Reshape that does anything
else (a Reshape that merges channels into the rows, one back to another layout) is refused, naming
the Reshape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from ..graph import constant_shape, fresh_name, node_label, producer, shape, users
from .base import Code, Refusal, per_feature_shape
from .flatten_nhwc import channel_last_perm
from .tail_elementwise import Elementwise

RULES: list = []  # a step of the reduce rule and the head walker

_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min"})
_MAX_STEPS = 64


@dataclass(frozen=True, eq=False)
class Tensordot:
    """`Reshape [P, C] -> MatMul/Gemm -> Reshape [*leading, K]` on a channel-last tensor."""

    merge: gs.Node  # the Reshape to [P, C]
    fc: gs.Node
    restore: gs.Node  # the Reshape back to [*leading, K]
    before: tuple[gs.Node, ...] = ()  # elementwise ops on the rows, each row alone, before the FC
    after: tuple[gs.Node, ...] = ()  # and after it

    @property
    def source(self) -> gs.Tensor:
        return self.merge.inputs[0]

    @property
    def nodes(self) -> tuple[gs.Node, ...]:
        return self.merge, *self.before, self.fc, *self.after, self.restore


@dataclass(frozen=True, eq=False)
class ChannelLast:
    """A tensor whose axes are (batch, *spatial, channel): the channel-first map a channel-last
    Transpose reads, and the per-location layers after that Transpose (none: the Transpose's own output)."""

    map: gs.Tensor
    through: tuple[gs.Node, ...]


def channel_last_map(tensor: gs.Tensor, rank: int) -> ChannelLast | None:
    """How `tensor` (rank `rank`) holds a channel-first map channel-last, following it up through
    per-location layers to the channel-last Transpose; None when it does not."""
    through: list[gs.Node] = []
    for _ in range(_MAX_STEPS):
        node = producer(tensor)
        if node is None or len(shape(tensor) or ()) != rank:
            return None
        if node.op == "Transpose" and tuple(node.attrs.get("perm", ())) == channel_last_perm(rank):
            return ChannelLast(node.inputs[0], tuple(reversed(through)))
        dot = tensordot(node)
        if dot is not None:
            through.extend(reversed(dot.nodes))
            tensor = dot.source
            continue
        data = keeps_last_axis(node, rank)
        if data is None:
            joined = _joined(node, rank)
            return None if joined is None else ChannelLast(joined.map, (*joined.through, node, *reversed(through)))
        through.append(node)
        tensor = data
    return None


def _joined(node: gs.Node, rank: int) -> ChannelLast | None:
    """An elementwise op of several tensors of its output's shape, each per-location layers on the
    same channel-last map (tf2onnx's GELU: `x * 0.5 * (1 + erf(x / sqrt(2)))`, two branches from x):
    a per-location layer on that map too, so a reduce behind it is still a global pool."""
    data = [t for t in node.inputs if t.name and constant_shape(t) is None]
    out = shape(node.outputs[0]) if len(node.outputs) == 1 else None
    if node.op not in _BROADCASTING or len(data) < 2 or out is None or any(shape(t) != out for t in data):
        return None
    found = [channel_last_map(t, rank) for t in data]
    if any(f is None or f.map is not found[0].map for f in found):  # type: ignore[union-attr]
        return None
    through = {id(n): n for f in found for n in f.through}  # type: ignore[union-attr]
    return ChannelLast(found[0].map, tuple(through.values()))  # type: ignore[union-attr]


def tensordot_fc(node: gs.Node) -> bool:
    """`node` is the FC of a Tensordot on a channel-last map: a layer of the backbone (it maps each
    location alone), no head. (On a token sequence it stays a candidate: tokens.py counts it.)"""
    found = users(node.outputs[0]) if node.op in ("MatMul", "Gemm") and node.outputs else []
    for _ in range(_MAX_STEPS):  # past per-row ops to the Reshape back
        if len(found) != 1 or keeps_last_axis(found[0], 2) is None:
            break
        found = users(found[0].outputs[0])
    try:
        dot = tensordot(found[0]) if len(found) == 1 else None
        if dot is None or dot.fc is not node:
            return False
        rank = len(shape(dot.source) or ())
        return channel_last_map(dot.source, rank) is not None or _per_location_of_channel_last(dot.source, rank)
    except Refusal:
        return False


_MAX_NODES = 256


def _per_location_of_channel_last(tensor: gs.Tensor, rank: int) -> bool:
    """Every path up from `tensor` (rank 4+) passes per-location layers only (elementwise ops of
    tensors of its shape, such as GELU's `x * (1 + erf(x))`, Tensordots) to a channel-last Transpose."""
    if rank < 4:
        return False  # a token sequence stays a candidate
    stack, seen = [tensor], set()
    while stack:
        node = producer(stack.pop())
        if node is None or len(seen) > _MAX_NODES:
            return False
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op == "Transpose" and tuple(node.attrs.get("perm", ())) == channel_last_perm(rank):
            continue
        dot = tensordot(node)
        data = [dot.source] if dot is not None else _per_location_inputs(node, rank)
        if not data:
            return False
        stack.extend(data)
    return True


def _per_location_inputs(node: gs.Node, rank: int) -> list[gs.Tensor]:
    """The data inputs of an elementwise op whose data inputs all have its output's shape and whose
    constants broadcast along the last axis only (none: another op)."""
    data = [t for t in node.inputs if t.name and constant_shape(t) is None]
    out = shape(node.outputs[0]) if len(node.outputs) == 1 else None
    if not data or out is None or any(shape(t) != out for t in data):
        return []
    if node.op not in Elementwise.ops and node.op not in _BROADCASTING:
        return []
    for t in node.inputs:
        dims = constant_shape(t) if t.name else None
        if dims is not None and (len(dims) > rank or any(d != 1 for d in ((1,) * (rank - len(dims)) + dims)[:-1])):
            return []
    return data


def channel_first(graph: gs.Graph, tensor: gs.Tensor) -> gs.Variable:
    """The tensor the rewrite's `Transpose(perm=[0, r-1, 1, .., r-2])` of the channel-last `tensor`
    will write (no node yet: matching changes nothing)."""
    dims = shape(tensor)
    assert dims is not None
    moved = [dims[0], dims[-1], *dims[1:-1]]
    return gs.Variable(fresh_name(f"{tensor.name}_channel_first", set(graph.tensors())), tensor.dtype, moved)


def channel_first_perm(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def tensordot(restore: gs.Node) -> Tensordot | None:
    """The Tensordot that `restore` (a Reshape) ends; None when `restore` ends no Reshape-FC-Reshape
    on a rank-3+ tensor; Refusal when it ends one that is not pointwise on the last axis."""
    if restore.op != "Reshape":
        return None
    fc, after = _past_per_row_ops(restore.inputs[0])
    if fc is None or fc.op not in ("MatMul", "Gemm") or len(users(fc.outputs[0])) != 1:
        return None
    merge, before = _past_per_row_ops(fc.inputs[0])
    weight = constant_shape(fc.inputs[1]) if len(fc.inputs) > 1 else None
    if merge is None or merge.op != "Reshape" or weight is None or len(weight) != 2:
        return None
    source = shape(merge.inputs[0])
    if source is None or len(source) < 3 or len(users(merge.outputs[0])) != 1:
        return None
    dot = Tensordot(merge, fc, restore, before, after)
    _check(dot, source)
    return dot


def _check(dot: Tensordot, source: tuple) -> None:
    channels = source[-1]
    rows, restored = shape(dot.merge.outputs[0]), shape(dot.restore.outputs[0])
    if rows is None or len(rows) != 2 or rows[1] != channels or not isinstance(channels, int):
        raise Refusal(
            Code.TENSORDOT_LAYOUT,
            f"{node_label(dot.merge)} reshapes the channel-last {_dims(source)} to {_dims(rows)}: "
            f"not one row of its {channels} channels per location",
        )
    fault, out_features = row_fc_fault(dot.fc, dot.fc.inputs[0], channels)
    if fault is not None:
        raise Refusal(
            Code.TENSORDOT_LAYOUT,
            f"{node_label(dot.fc)} after {node_label(dot.merge)} does not map each row of {channels} channels alone",
        )
    if restored is None or tuple(restored) != (*source[:-1], out_features):
        raise Refusal(
            Code.TENSORDOT_LAYOUT,
            f"{node_label(dot.restore)} reshapes the rows of {node_label(dot.fc)} to {_dims(restored)}, "
            f"not back to the locations {_dims(source[:-1])} of {node_label(dot.merge)}",
        )


def _past_per_row_ops(rows: gs.Tensor) -> tuple[gs.Node | None, tuple[gs.Node, ...]]:
    """The producer of `rows` up past elementwise ops that map each row alone (each the only user
    of its input), and those ops in graph order."""
    passed: list[gs.Node] = []
    node = producer(rows)
    for _ in range(_MAX_STEPS):
        data = keeps_last_axis(node, 2) if node is not None else None
        if data is None or len(users(data)) != 1:
            break
        passed.append(node)
        node = producer(data)
    return node, tuple(reversed(passed))


def row_fc_fault(node: gs.Node, rows: gs.Tensor, width: int) -> tuple[str | None, int]:
    """Why an FC on rows of `width` features does not map each row alone (None: it does), and its
    output width."""
    label = node_label(node)
    if node.inputs[0] is not rows:
        return f"{label} takes the rows as its right operand, so it mixes them", width
    weight = constant_shape(node.inputs[1])
    if weight is None or len(weight) != 2:
        return f"{label} has no constant 2-D weight, so it need not map each row alone", width
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return f"{label} has transA=1, so it mixes the rows", width
    transposed = node.op == "Gemm" and int(node.attrs.get("transB", 0))
    in_features, out_features = (weight[1], weight[0]) if transposed else weight
    if in_features != width:
        return f"{label} has a {list(weight)} weight, not one on the last axis of {width} features", width
    if node.op == "Gemm" and len(node.inputs) > 2:
        bias = constant_shape(node.inputs[2])
        if bias is None or not _per_feature(bias, out_features):
            what = "a computed bias" if bias is None else f"a bias of shape {list(bias)}"
            return f"{label} adds {what}, not one per feature", out_features
    return None, out_features


def _per_feature(dims: tuple[int, ...], width: int) -> bool:
    return math.prod(dims) == 1 or per_feature_shape(dims, width)


def keeps_last_axis(node: gs.Node, rank: int) -> gs.Tensor | None:
    """The data input of an op that maps each location's channel vector alone and keeps its shape:
    elementwise with scalar constants, or a constant that broadcasts along the last axis only."""
    data = [t for t in node.inputs if t.name and constant_shape(t) is None]
    if len(data) != 1 or len(node.outputs) != 1 or shape(node.outputs[0]) != shape(data[0]):
        return None
    for t in node.inputs:
        if t is data[0] or not t.name:
            continue
        dims = constant_shape(t) or ()
        full = (1,) * (rank - len(dims)) + dims
        if len(dims) > rank or any(d != 1 for d in full[:-1]):
            return None
        if node.op in Elementwise.ops and math.prod(dims) != 1:
            return None
    return data[0] if node.op in Elementwise.ops or node.op in _BROADCASTING else None


def _dims(dims: tuple | None) -> str:
    return "an unknown shape" if dims is None else str(list(dims))
