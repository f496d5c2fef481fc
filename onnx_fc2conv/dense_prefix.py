"""Dense mode through pointwise layers between the global pool and the FC layers.

A head `f(g(P(x)))`: a global pool `P`, then per-location layers `g` (a 1 x 1 Conv with stride 1
and no pad, any group; BatchNormalization; LayerNormalization over the channels only; elementwise
ops with scalar or per-channel constants; Identity, inference Dropout), then the FC layers `f`.
Each `g` maps one location's channel vector alone, so it runs on the map before the pool as well:
the dense map is `f(g(x_ij))` at every location `ij`, the head at that location, and the pool is
dropped. With `g` and `f` affine and an averaging pool the map's mean is the logits (the mean
commutes with affine maps); with a nonlinearity in `g` or `f` it is not, and the report says so.

On the pooled `[N, C, 1, ..]` tensor a LayerNormalization with `axis=1` normalizes over `C` and
unit dims: the channels only. On the map that axis would take the spatial dims in too, so it runs
channel-last between two Transposes. A constant shaped for the flattened `[N, C]` vector (`[C]`,
`[1, C]`) is reshaped to `[C, 1, ..]` on the map. A Transpose that moves the channels last (and
one that moves them back) works on the map as it is, and so do a LayerNormalization over the last
axis and per-channel constants between them (timm's LayerNorm2d). Branches of one tensor that meet
again (`x * relu6(x + 3) / 6`) move together. A layer that reads the spatial extent (a 3 x 3 Conv,
a norm over the spatial axes) refuses dense mode for its head, naming the node and why.

Keras writes its classifier as a 1 x 1 Conv on the pooled map followed by a `Reshape [N, M]`, no
FC layer: in dense mode that pair is the head's one layer (`conv_classifier`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

from .fc import FcLayer
from .graph import Edit, constant, constant_shape, is_output, node_label, producer, shape, sole_user, static_tail
from .rules.base import Refusal, axes_of
from .rules.flatten_base import FlattenKind, FlattenMatch, Pool
from .rules.flatten_pool import GLOBAL_POOLS, LINEAR_POOLS
from .rules.flatten_reduce import SPATIAL_REDUCES, map_spatial_axes
from .rules.tail_elementwise import LINEAR, Elementwise

if TYPE_CHECKING:
    from .heads import Head

_FLATTENS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"})
_AFFINE = LINEAR | {"Conv", "BatchNormalization", "Add", "Sub", "Mul"}
_SPATIAL = GLOBAL_POOLS | {"MaxPool", "AveragePool", "LpPool", "InstanceNormalization", "Resize", "Upsample"}
_MAX_CHAIN = 32


# -- the pool and the chain before the FC layers ---------------------------------------------------


def global_pool(node: gs.Node) -> Pool | None:
    """`node` pools a map over all its spatial axes (any keepdims)."""
    source = node.inputs[0] if node.inputs else None
    dims = static_tail(source) if source is not None else None
    if dims is None or len(dims) < 2:
        return None
    if node.op in GLOBAL_POOLS or (
        node.op in SPATIAL_REDUCES and axes_of(node, len(dims) + 1) == set(range(2, len(dims) + 1))
    ):
        return Pool(node, source, dims)
    return None


def _pooled(tensor: gs.Tensor) -> bool:
    """`tensor` is `[N, C]` or `[N, C, 1, ..]`: what a global pool leaves."""
    dims = static_tail(tensor)
    return dims is not None and len(dims) >= 1 and all(d == 1 for d in dims[1:])


def _data_input(node: gs.Node) -> int | None:
    """The index of the one input that is not a constant (None: none or several)."""
    found = [i for i, t in enumerate(node.inputs) if t.name and constant_shape(t) is None]
    return found[0] if len(found) == 1 else None


def pointwise_prefix(graph: gs.Graph, fc: gs.Node, data: gs.Tensor) -> FlattenMatch | str | None:
    """The head's flatten record when a global pool and only pointwise layers sit before `fc`
    (densify then moves the head in front of the pool); why not, naming the node, when something
    else sits between them; None when no single global pool is there."""
    width = static_tail(data)
    if width is None or not _pooled(data):
        return None
    region, pool = _region(data)
    if pool is None:
        return None
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    layers = sorted(region, key=lambda n: order[id(n)])  # map side first
    inside = {id(n) for n in layers} | {id(fc)}
    for node in layers:  # the pool stays as it is for other readers; these nodes change
        for out in node.outputs:
            if is_output(graph, out) or any(id(u) not in inside for u in out.outputs):
                return f"'{out.name}' between the pool and the FC layers is also used elsewhere"
    channel_last = {id(pool.node.outputs[0]): False}  # per tensor: the channels on the last axis
    for node in layers:
        last = any(channel_last.get(id(t), False) for t in node.inputs)
        why = _channel_last_problem(node, last) if last or node.op == "Transpose" else not_pointwise(node)
        if why is not None:
            return f"{node_label(node)} between the pool and the FC layers is not pointwise: {why}"
        channel_last.update((id(t), last != (node.op == "Transpose")) for t in node.outputs)
    flatten = next((n for n in reversed(layers) if n.op in _FLATTENS), None)
    kind = FlattenKind.REDUCE if flatten is None else FlattenKind(flatten.op.lower().replace("unsqueeze", "reshape"))
    spatial = (1,) * (len(pool.source_shape) - 1)
    moved = tuple(n for n in layers if n.op not in _FLATTENS)
    ops = tuple(n.op for n in layers)
    return FlattenMatch(kind, ops, flatten, pool.node.outputs[0], (width[0], *spatial), between=moved, pool=pool)


def _region(data: gs.Tensor) -> tuple[list[gs.Node], Pool | None]:
    """The nodes between one global pool and `data` (a chain, or branches that meet again, as in
    `x * relu6(x + 3) / 6`), and that pool; no pool when the walk leaves the head."""
    nodes: dict[int, gs.Node] = {}
    pools: dict[int, Pool] = {}
    stack, seen = [data], set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        node = producer(tensor)
        if node is None or len(nodes) >= _MAX_CHAIN:
            return [], None
        pool = global_pool(node)
        if pool is not None:
            pools[id(node)] = pool
            continue
        nodes[id(node)] = node
        inputs = node.inputs[:1] if node.op in _FLATTENS else node.inputs  # a computed target is dropped
        stack.extend(t for t in inputs if t.name and constant_shape(t) is None)
    return (list(nodes.values()), next(iter(pools.values()))) if len(pools) == 1 else ([], None)


def not_pointwise(node: gs.Node) -> str | None:
    """Why `node` (on a pooled tensor) does not work location by location; None when it does."""
    in_dims = static_tail(node.inputs[_data_input(node) or 0])
    rank = len(in_dims) + 1 if in_dims is not None else 0
    if node.op in _FLATTENS:
        out = static_tail(node.outputs[0])
        if not out or not in_dims or out[0] != in_dims[0] or any(d != 1 for d in out[1:]):
            return f"it reshapes {_dims(shape(node.inputs[0]))} to {_dims(shape(node.outputs[0]))}, not only unit dims"
        return None
    if node.op == "Conv":
        weight = constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None:
            return "its weight is not a constant"
        if any(k != 1 for k in weight[2:]):
            return f"its {'x'.join(map(str, weight[2:]))} kernel reads neighbouring locations"
        if any(s != 1 for s in node.attrs.get("strides", [1])) or any(p != 0 for p in node.attrs.get("pads", [0])):
            return "it has a stride or a pad, which change the spatial extent"
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return f"auto_pad={node.attrs['auto_pad']} depends on the spatial extent"
        return None
    if node.op == "BatchNormalization":
        return "it is in training mode" if node.attrs.get("training_mode", 0) else None
    if node.op == "LayerNormalization":
        axis = int(node.attrs.get("axis", -1)) % max(rank, 1)
        return None if axis == 1 else f"it normalizes over axes {list(range(axis, rank))}, not the channels only"
    if node.op in _SPATIAL or node.op in SPATIAL_REDUCES:
        return f"{node.op} reads the spatial extent"
    if node.op in Elementwise.ops:
        others = [t for i, t in enumerate(node.inputs) if i != _data_input(node) and t.name]
        if any((dims := constant_shape(t)) is None or math.prod(dims) != 1 for t in others):
            return "its other operands are not scalar constants"
        return None
    if node.op in _BINARY and _data_input(node) is None and len(node.inputs) == 2:  # two branches meet
        first, second = (shape(t) for t in node.inputs)
        return None if first == second else f"its operands' shapes {_dims(first)} and {_dims(second)} differ"
    if node.op in _BINARY:
        const = node.inputs[1 - (_data_input(node) or 0)] if len(node.inputs) == 2 else None
        dims = constant_shape(const) if const is not None else None
        if dims is None or not _per_channel(dims, rank, in_dims[0] if in_dims else 0):
            return f"its constant of shape {_dims(dims)} is not a scalar or one value per channel"
        return None
    return f"{node.op} is not a layer dense mode moves"


def _channel_last_problem(node: gs.Node, last: bool) -> str | None:
    """A Transpose that moves the channels last or back (timm's LayerNorm2d: Transpose ->
    LayerNormalization(axis=-1) -> Transpose), or a layer on a channel-last pooled tensor: both
    run on the map as they are."""
    dims = shape(node.inputs[0]) or ()
    rank = len(dims)
    if node.op == "Transpose":
        wanted = [0, rank - 1, *range(1, rank - 1)] if last else [0, *range(2, rank), 1]
        perm = list(node.attrs.get("perm", []))
        return None if rank >= 3 and perm == wanted else f"its perm {perm} is not {wanted}"
    if node.op == "LayerNormalization":
        axis = int(node.attrs.get("axis", -1)) % rank
        return None if axis == rank - 1 else f"it normalizes over axes {list(range(axis, rank))} of channels-last data"
    if node.op in _BINARY and _data_input(node) is not None:
        const = constant_shape(node.inputs[1 - (_data_input(node) or 0)]) if len(node.inputs) == 2 else None
        full = None if const is None or len(const) > rank else (1,) * (rank - len(const)) + tuple(const)
        if full is None or any(d != 1 for d in full[:-1]) or full[-1] not in (1, dims[-1]):
            return f"its constant of shape {_dims(const)} is not a scalar or one value per channel"
        return None
    if node.op in Elementwise.ops or node.op in _BINARY:
        return not_pointwise(node)
    return f"{node.op} on channels-last data is not a layer dense mode moves"


def _per_channel(dims: tuple[int, ...], rank: int, channels: int) -> bool:
    if len(dims) > rank:
        return False
    full = (1,) * (rank - len(dims)) + tuple(dims)
    return full[0] == 1 and full[1] in (1, channels) and all(d == 1 for d in full[2:])


def _dims(dims: tuple | None) -> str:
    return "unknown" if dims is None else str(list(dims))


def affine(node: gs.Node) -> bool:
    """A moved node keeps the head affine (a dense map then averages to the logits)."""
    if node.op in ("Mul", "Div"):  # x * c, x / c; not c / x nor x * f(x)
        return any(constant_shape(t) is not None for t in node.inputs[1 if node.op == "Div" else 0 :])
    return node.op in _AFFINE


def behind_global_pool(data: gs.Tensor) -> bool:
    """`data` is computed from a global pool of an image map through ops on the pooled vector:
    its shape no longer depends on the input size."""
    seen: set[int] = set()
    stack = [data]
    while stack and len(seen) < 64:
        node = producer(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        source = node.inputs[0] if node.inputs else None
        if node.op in GLOBAL_POOLS or (node.op in SPATIAL_REDUCES and source is not None and _pools_all_spatial(node)):
            return True
        stack.extend(t for t in node.inputs if not isinstance(t, gs.Constant))
    return False


def _pools_all_spatial(node: gs.Node) -> bool:
    """Over every spatial axis of an image map (not a LayerNorm over tokens): axes 2.., or 1..-2
    of a map read channel-last (tf2onnx's Keras GlobalAveragePooling2D)."""
    rank = len(shape(node.inputs[0]) or ())
    if rank < 4:
        return False
    try:
        return (axes_of(node, rank) or set()) >= map_spatial_axes(node, rank)
    except Refusal:  # channel-last through a Tensordot that is not pointwise: no image map
        return False


# -- dense mode ----------------------------------------------------------------------------------------


def densify(head: Head) -> Head:
    """Dense mode: run the 1 x 1 head (and the layers moved with it) before the global pool, whose
    node is dropped."""
    pool = head.pool
    if pool is None or any(d != 1 for d in head.feature_shape[1:]):
        return head
    flat = replace(
        head.flatten, ops=(pool.op, *head.flatten.ops), feature=pool.source, feature_shape=pool.source_shape,
        perm=None, keepdims=None,
    )  # fmt: skip
    return replace(head, flatten=flat, linear=head.linear and pool.op in LINEAR_POOLS, dense=True)


def dense_notices(heads: list[Head], dense: bool) -> list[str]:
    """What dense mode did not do, per head, and where the map is not the logits' spread."""
    notices = []
    for head in heads if dense else []:
        if not head.dense:
            notices.append(f"head {head.name}: dense mode does not apply ({head.not_dense}); rewritten as usual")
        elif head.flatten.between and not head.linear:
            moved = ", ".join(n.op for n in head.flatten.between)
            notices.append(
                f"head {head.name}: {moved} moved in front of the {head.pool.op if head.pool else 'pool'} with the FC "
                "layers; the map is the nonlinear head at every location"
            )
    return notices


def conv_classifier(graph: gs.Graph, node: gs.Node) -> tuple[FcLayer, FlattenMatch] | None:
    """A 1 x 1 Conv on a pooled map whose only reader flattens it to `[N, M]` (Keras's classifier),
    behind a global pool and pointwise layers: the pair is the head's one layer."""
    if node.op != "Conv" or len(node.inputs) < 2 or not_pointwise(node) is not None or node.attrs.get("group", 1) != 1:
        return None
    flatten = sole_user(graph, node.outputs[0])
    in_dims, out_dims = static_tail(node.inputs[0]), static_tail(node.outputs[0])
    if flatten is None or flatten.op not in _FLATTENS or in_dims is None or out_dims is None:
        return None
    flat_dims = shape(flatten.outputs[0])
    if flat_dims is None or len(flat_dims) != 2 or flat_dims[1] != out_dims[0] or not _pooled(node.inputs[0]):
        return None
    found = pointwise_prefix(graph, node, node.inputs[0])
    if not isinstance(found, FlattenMatch):
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    m, c = out_dims[0], in_dims[0]
    kernel = (m, *found.feature_shape)
    layer = FcLayer(
        nodes=(node, flatten), op="Conv", weight=node.inputs[1], weight_is_mk=True, alpha=1.0, bias=bias, beta=1.0,
        in_features=c, out_features=m, input_shape=found.feature_shape, kernel_shape=kernel,
        output=flatten.outputs[0],
    )  # fmt: skip
    return layer, found


# -- the rewrite ---------------------------------------------------------------------------------------


def move_onto_map(edit: Edit, nodes: tuple[gs.Node, ...], source: gs.Tensor) -> gs.Tensor:
    """Run `nodes` (in graph order) on the map `source`: each input they read from the pool or a
    flatten now comes from what that pool or flatten read. Returns what the first FC layer reads."""
    rank = len(shape(source) or ())
    moved = {id(t) for n in nodes for t in n.outputs}
    last = nodes[-1].outputs[0] if nodes else source  # a LayerNorm's stays its (Transpose's) output
    for node in nodes:
        flat = len(shape(node.outputs[0]) or ()) == 2  # it worked on the flattened [N, C] vector
        for index, tensor in enumerate(node.inputs):
            if tensor.name and constant_shape(tensor) is None and id(tensor) not in moved:
                node.inputs[index] = _on_map(tensor, moved, source)
            elif node.op in _BINARY and flat and rank > 2 and math.prod(constant_shape(tensor) or ()) > 1:
                value = constant(tensor)
                assert value is not None
                node.inputs[index] = edit.constant(f"{tensor.name}_map", value.reshape(-1, *([1] * (rank - 2))))
        if node.op == "LayerNormalization" and not _normalizes_last_axis(node, rank):
            _channel_last(edit, node, rank)
    return last


def _normalizes_last_axis(node: gs.Node, rank: int) -> bool:
    """A LayerNormalization over the last axis of the map: it already reads channels-last data."""
    return len(shape(node.outputs[0]) or ()) == rank > 2 and int(node.attrs.get("axis", -1)) % rank == rank - 1


def _on_map(tensor: gs.Tensor, moved: set[int], source: gs.Tensor) -> gs.Tensor:
    """The map-side tensor a pooled or flattened `tensor` came from."""
    while tensor is not source and id(tensor) not in moved:
        node = producer(tensor)
        assert node is not None, f"'{tensor.name}' does not come from the map"
        tensor = node.inputs[0]
    return tensor


def _channel_last(edit: Edit, node: gs.Node, rank: int) -> None:
    """LayerNormalization over the channels of `[N, C, *S]`: channel-last, normalized on the last
    axis, channel-first again."""
    to_last = [0, *range(2, rank), 1]
    back = [0, rank - 1, *range(1, rank - 1)]
    moved = edit.variable(f"{node.name or 'layernorm'}_channel_last")
    edit.add_node("Transpose", f"{moved.name}_in", [node.inputs[0]], [moved], at=node, perm=to_last)
    node.inputs[0] = moved
    for i in (1, 2):
        if len(node.inputs) > i and node.inputs[i].name and len(constant_shape(node.inputs[i]) or ()) > 1:
            value = constant(node.inputs[i])
            assert value is not None
            node.inputs[i] = edit.constant(f"{node.inputs[i].name}_channels", value.reshape(-1))
    output = node.outputs[0]
    normalized = edit.variable(f"{moved.name}_normalized")
    node.outputs[0] = normalized
    node.attrs["axis"] = -1
    edit.add_node("Transpose", f"{moved.name}_out", [normalized], [output], at=node, perm=back)
