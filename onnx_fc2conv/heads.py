"""Find classifier heads: a flattened feature map feeding a chain of FC layers.

The walker is all-or-nothing per head: the flatten before the first FC layer is matched by a
flatten rule (rules/flatten_*), every FC layer by fc.py, every other op after the first FC layer
by a tail rule (rules/tail_*); any refusal skips the whole head with its code and reason.
Nothing here mutates the graph: rewrite.py applies the records.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import onnx_graphsurgeon as gs

from .dense_prefix import affine, behind_global_pool, conv_classifier, densify, pointwise_prefix
from .exported_size import refuse_symbolic_map
from .fc import FC_OPS, FcLayer, data_operand, is_candidate, match_fc
from .graph import (
    constant_shape,
    is_graph_input,
    is_output,
    node_id,
    node_label,
    producer,
    shape,
    sole_user,
    static_tail,
    users,
)
from .quantized import QDQ_OPS, refuse_inexact_quantization, refused_quantized_nodes
from .rules import FLATTEN_RULES, tail_rules_for
from .rules.base import Code, Refusal, TailOp, TailWalk
from .rules.flatten_base import FlattenKind, FlattenMatch, Pool
from .rules.flatten_channel_last import channel_first, channel_last_map, tensordot_fc
from .rules.flatten_mlp import match_input
from .rules.flatten_nhwc import absorb
from .rules.flatten_pool import match_pool
from .rules.flatten_reduce import SPATIAL_REDUCES
from .rules.tail_elementwise import Elementwise
from .rules.tail_per_feature import PerFeature

__all__ = ["FcLayer", "FlattenKind", "Head", "HeadSearch", "Pool", "Skipped", "find_heads"]

_FLATTEN_OPS = frozenset(op for rule in FLATTEN_RULES for op in rule.ops)
_NOOP_FLATTENS = frozenset({"Flatten", "Reshape", "Squeeze"})
_SCALAR_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})


@dataclass(frozen=True, eq=False)
class Head:
    """One FC head: where its map is, its FC layers and the ops after them."""

    flatten: FlattenMatch
    layers: tuple[FcLayer, ...]
    tail: tuple[TailOp, ...]
    output_tensors: tuple[gs.Tensor, ...]
    reference: gs.Tensor  # where the original head subgraph starts (verification cuts here)
    linear: bool  # no nonlinearity after the pool: a dense map averages to the logits
    dense: bool = False
    not_dense: str = ""  # with --dense: why the head stays behind its pool

    @property
    def kind(self) -> FlattenKind:
        return self.flatten.kind

    @property
    def reads_input(self) -> bool:
        """The first FC layer reads a graph input (a plain MLP)."""
        return self.flatten.kind is FlattenKind.MLP

    @property
    def flatten_ops(self) -> tuple[str, ...]:
        return self.flatten.ops

    @property
    def feature(self) -> str:
        """The tensor the first Conv reads."""
        return self.flatten.feature.name

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.flatten.feature_shape

    @property
    def channel_last_feature(self) -> str | None:
        """The channel-last tensor the rewrite transposes into the map the first Conv reads (dense
        mode behind a Tensordot: that map is new)."""
        last, flat = self.flatten.channel_last, self.flatten
        return last.name if last is not None and flat.feature is flat.reduce_source else None

    @property
    def ref_input(self) -> str:
        return self.reference.name

    @property
    def pool(self) -> Pool | None:
        return self.flatten.pool

    @property
    def perm(self) -> tuple[int, ...] | None:
        return self.flatten.perm

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.output_tensors)

    @property
    def spatial_rank(self) -> int:
        return len(self.feature_shape) - 1

    @property
    def window(self) -> tuple[int, ...]:
        return self.layers[0].kernel_shape[2:]

    @property
    def description(self) -> str:
        return " -> ".join([*self.flatten_ops, *(layer.op for layer in self.layers)])

    @property
    def name(self) -> str:
        return self.layers[0].names[0]


@dataclass(frozen=True)
class Skipped:
    """A candidate that is not rewritten: its node, why, and the stable code of why."""

    node: str
    reason: str
    code: Code = Code.UNSUPPORTED_OP
    pooled: bool = False  # it reads a globally pooled vector: it runs at any size as it is


@dataclass
class HeadSearch:
    heads: list[Head] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    candidates: int = 0


# -- the flatten -------------------------------------------------------------------------------------


def _read_only_by_fc_layers(graph: gs.Graph, data: gs.Tensor) -> bool:
    """The flattened tensor feeds FC layers only (several heads on one map: each is its own head)."""
    found = users(data)
    return not is_output(graph, data) and bool(found) and all(is_candidate(u) for u in found)


def _match_flatten(graph: gs.Graph, fc: gs.Node, data: gs.Tensor, mlp_rank: int) -> FlattenMatch:
    label = node_label(fc)
    skipped: list[gs.Node] = []  # no-op flattens on [N, K] (a Reshape after a Flatten), map side first
    between: list[gs.Node] = []  # elementwise ops between the flatten and the FC, map side first
    while True:
        if is_graph_input(graph, data) and not between:
            return match_input(data, [n.op for n in skipped], mlp_rank, label)
        node = producer(data)
        if node is None:
            raise Refusal(Code.NO_PRODUCER, f"{label} reads '{data.name}', which no node produces")
        nearer = (between or skipped or [None])[0]  # what reads `data` on the way to the FC
        if not (sole_user(graph, data) is nearer if nearer else _read_only_by_fc_layers(graph, data)):
            raise Refusal(
                Code.SHARED_FLATTEN, f"the flattened tensor '{data.name}' before {label} is also used elsewhere"
            )
        refuse_inexact_quantization(node, label)
        source = _elementwise_source(node)
        if source is not None and not skipped:
            between.insert(0, node)  # commutes with the flatten: it moves onto the map
            data = source
            continue
        if node.op not in _FLATTEN_OPS:
            raise Refusal(
                Code.NOT_FLATTENED,
                f"{label} reads '{data.name}' from {node_label(node)}, not from a flattened feature map",
            )
        src = node.inputs[0]
        src_shape = shape(src) if static_tail(src) is not None else None
        refuse_symbolic_map(node, label)  # before the general 'unknown': the option it needs
        if src_shape is None:
            raise Refusal(
                Code.UNKNOWN_SHAPE,
                f"{node_label(node)} before {label}: the shape of its input '{src.name}' is unknown "
                "(export with static shapes or run shape inference)",
            )
        if len(src_shape) >= 3:
            break
        out_shape = shape(data)
        if node.op in _NOOP_FLATTENS and out_shape is not None and tuple(out_shape) == tuple(src_shape):
            skipped.insert(0, node)  # a no-op on [N, K]: look further up
            data = src
            continue
        raise Refusal(
            Code.NOT_A_MAP, f"{node_label(node)} before {label} reads a rank-{len(src_shape)} tensor, not a map"
        )
    rule = next(r for r in FLATTEN_RULES if node.op in r.ops)
    rule.check(node, src_shape, label)
    ops = (node.op, *(n.op for n in skipped), *(n.op for n in between))
    return replace(_flatten_match(graph, node, rule, data, src, src_shape, ops, label), between=tuple(between))


def _elementwise_source(node: gs.Node) -> gs.Tensor | None:
    """The data input of an elementwise op whose other operands are scalar constants (it gives the
    same values on the flattened vector and on the map)."""
    if (node.op in Elementwise.ops or node.op in QDQ_OPS) and node.inputs:
        others = node.inputs[1:]
        data = node.inputs[0]
    elif node.op in _SCALAR_BINARY and len(node.inputs) == 2:
        consts = [t for t in node.inputs if constant_shape(t) is not None]
        if len(consts) != 1:
            return None
        data = next(t for t in node.inputs if t is not consts[0])
        others = consts
    else:
        return None
    for t in others:
        dims = constant_shape(t) if t.name else ()
        if dims is None or math.prod(dims) != 1:
            return None
    return data


def _flatten_match(
    graph: gs.Graph, node: gs.Node, rule: Any, data: gs.Tensor, src: gs.Tensor, src_shape: tuple, ops: tuple, label: str
) -> FlattenMatch:
    rank = len(src_shape)
    if node.op in SPATIAL_REDUCES:  # the pool is the flatten
        found, source, channel_last = channel_last_map(node.inputs[0], rank), None, None
        if found is not None and not found.through:
            src = source = found.map
        elif found is not None:  # through per-location layers: their output, transposed back
            channel_last = src
            src = source = channel_first(graph, channel_last)
        if found is not None:
            ops = ("Transpose", *(n.op for n in found.through), *ops)
        src_dims = static_tail(src)
        assert src_dims is not None
        pool = Pool(node, src, src_dims)
        feature_shape = (src_dims[0], *([1] * (rank - 2)))
        return FlattenMatch(
            rule.kind, ops, node, data, feature_shape, keepdims=node, pool=pool, reduce_source=source,
            channel_last=channel_last,
        )  # fmt: skip
    kind, feature, perm = rule.kind, src, None
    absorbed = absorb(graph, node, src, src_shape, label)
    if absorbed is not None:
        (feature, perm), kind, ops = absorbed, FlattenKind.NHWC, ("Transpose", *ops)
    feature_shape = static_tail(feature)
    assert feature_shape is not None
    return FlattenMatch(kind, ops, node, feature, feature_shape, perm=perm, pool=match_pool(feature))


# -- after the first FC ------------------------------------------------------------------------------


def _downstream(tensor: gs.Tensor) -> set[int]:
    seen = {id(tensor)}
    queue = deque([tensor])
    while queue:
        for user in users(queue.popleft()):
            for out in user.outputs:
                if id(out) not in seen:
                    seen.add(id(out))
                    queue.append(out)
    return seen


def _walk_tail(graph: gs.Graph, opset: int, first: FcLayer, claimed: set[int]):
    """Later FC layers and tail ops, breadth first from the first FC's output."""
    layers, tail, outputs, linear = [first], [], [], True
    spatial = len(first.kernel_shape) - 2
    walk = TailWalk(graph, opset, spatial, _downstream(first.output), {id(n) for n in first.nodes})
    probes: list[gs.Node] = []
    queue: deque[tuple[gs.Tensor, int]] = deque([(first.output, first.out_features)])
    while queue:
        tensor, width = queue.popleft()
        if is_output(graph, tensor):
            outputs.append(tensor)
        for user in users(tensor):
            if id(user) in walk.visited:
                continue
            walk.visited.add(id(user))
            if user.op in FC_OPS and is_candidate(user):
                layer = match_fc(graph, user, tensor, (width, *([1] * spatial)))
                layers.append(layer)
                claimed.update(id(n) for n in layer.nodes)
                walk.visited.update(id(n) for n in layer.nodes)
                queue.append((layer.output, layer.out_features))
                continue
            if user.op == "Shape":
                probes.append(user)  # allowed only as the size of a final flatten: checked below
                continue
            op = next((m for rule in tail_rules_for(user.op) if (m := rule.match(walk, user, tensor, width))), None)
            if op is None:
                raise Refusal(Code.UNSUPPORTED_OP, f"{node_label(user)} after the FC layers is not supported")
            tail.append(op)
            linear &= op.affine
            outputs.extend(op.outputs)
            queue.extend((t, width) for t in op.next)
    identities = {id(t.node) for t in tail if t.action.value == "to_identity"}
    for probe in probes:
        _require_shape_only_for(graph, probe, identities)
    return layers, tail, outputs, linear


_SHAPE_ARITHMETIC = frozenset(
    {"Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity", "Mul", "Div", "Add", "Sub", "ReduceProd"}
)


def _require_shape_only_for(graph: gs.Graph, probe: gs.Node, identities: set[int]) -> None:
    """A `Shape` of a head tensor may only compute the target of a final flatten that is dropped."""
    queue = deque([probe.outputs[0]])
    seen: set[int] = set()
    while queue:
        tensor = queue.popleft()
        if is_output(graph, tensor):
            raise Refusal(Code.SHAPE_PROBE, f"{node_label(probe)} after the FC layers feeds a graph output")
        for user in users(tensor):
            if id(user) in identities and user.inputs[0] is not tensor:
                continue
            if user.op not in _SHAPE_ARITHMETIC:
                raise Refusal(Code.SHAPE_PROBE, f"{node_label(probe)} after the FC layers feeds {node_label(user)}")
            if id(user) not in seen:
                seen.add(id(user))
                queue.extend(user.outputs)


# -- the search ----------------------------------------------------------------------------------------


def find_heads(graph: gs.Graph, opset: int, *, dense: bool = False, mlp_rank: int = 2) -> HeadSearch:
    """All FC heads of `graph` (shape-inferred) and why each other candidate fails."""
    search = HeadSearch()
    claimed: set[int] = set()
    for node in list(graph.nodes):
        conv_head = conv_classifier(graph, node) if dense and id(node) not in claimed else None
        if id(node) in claimed or not (conv_head or is_candidate(node)) or tensordot_fc(node):
            continue  # a Tensordot's FC maps each location of the map alone: backbone, no head
        search.candidates += 1
        claimed.add(id(node))
        data = data_operand(node)
        try:
            if conv_head:  # a 1 x 1 Conv and its flatten: the classifier without FC layers
                (first, flat), not_dense = conv_head, ""
            else:
                flat, not_dense = _flatten_for(graph, node, data, mlp_rank, dense)
                first = match_fc(graph, node, data, flat.feature_shape)
            claimed.update(id(n) for n in first.nodes)
            layers, tail, outputs, linear = _walk_tail(graph, opset, first, claimed)
        except Refusal as refusal:
            _claim_downstream(node, claimed)
            search.skipped.append(Skipped(node_id(node), refusal.reason, refusal.code, behind_global_pool(data)))
            continue
        if not outputs:
            reason = f"{node_label(node)}: the head reaches no graph output"
            search.skipped.append(Skipped(node_id(node), reason, Code.NO_OUTPUT))
            continue
        unique = tuple({id(t): t for t in outputs}.values())
        linear &= all(affine(n) for n in flat.between)
        head = Head(flat, tuple(layers), tuple(tail), unique, flat.feature, linear, not_dense=not_dense)
        search.heads.append(densify(head) if dense else head)
    search.skipped += [Skipped(r.node, r.reason, r.code) for r in refused_quantized_nodes(graph)]
    return search


def _flatten_for(graph: gs.Graph, fc: gs.Node, data: gs.Tensor, mlp_rank: int, dense: bool) -> tuple[FlattenMatch, str]:
    """The flatten before `fc`; with `dense`, pointwise layers after a global pool that move in front
    of it with the head (dense_prefix.py), or why they cannot."""
    try:
        flat = _match_flatten(graph, fc, data, mlp_rank)
    except Refusal as refusal:
        found = pointwise_prefix(graph, fc, data) if dense else None
        if isinstance(found, FlattenMatch):
            return found, ""
        raise refusal if found is None else Refusal(refusal.code, f"dense mode: {found}") from None
    found = pointwise_prefix(graph, fc, data) if dense and flat.pool is None else None
    if isinstance(found, FlattenMatch):
        return found, ""
    return flat, found or ("it has no global pool" if flat.pool is None else "")


def _claim_downstream(node: gs.Node, claimed: set[int]) -> None:
    """Mark the FC layers chained after a refused one (through head ops only) so they are not
    reported again; FC layers further on, past other ops, are candidates of their own."""
    passable = Elementwise.ops | PerFeature.ops | QDQ_OPS | {"Unsqueeze", "Squeeze", "QLinearAdd", "QLinearMul"}
    queue = deque(node.outputs)
    seen: set[int] = set()
    while queue:
        for user in users(queue.popleft()):
            if id(user) in seen:
                continue
            seen.add(id(user))
            if user.op in FC_OPS:
                claimed.add(id(user))
            elif user.op not in passable:
                continue
            queue.extend(user.outputs)
