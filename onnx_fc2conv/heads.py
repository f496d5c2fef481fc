"""Find classifier heads: a flattened feature map feeding a chain of FC layers.

A match step returns a typed `Head` or a `Skipped` record with the reason; nothing here mutates
the graph. The rewrite (rewrite.py) consumes the records.

Recognised flattens (the tensor the FC reads is a row-major flattening of `x[N, C, *S]`):
- `Flatten(axis=1)`;
- `Reshape` whose target resolves to `[N, C*prod(S)]`, whether constant (`[-1, K]`, `[0, -1]`,
  `[1, K]` with the batch baked) or computed from `Shape` (`x.view(x.size(0), -1)`);
- `Squeeze` of the `1 x 1` spatial axes of a pooled map;
- `ReduceMean`/`ReduceMax`/... over all spatial axes with `keepdims=0` (made `keepdims=1`);
- any of the above behind `Transpose(perm=[0, 2, .., r-1, 1])` (NHWC flatten); the kernel is
  then read in that layout and permuted back to channel-first.
- a rank-2 graph input `[N, K]` (a plain MLP): it becomes `[N, K, *S]` with `1 x 1` kernels.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx

from .graph import GraphIndex, attr, node_label
from .shape_eval import evaluate_int_tensor

ELEMENTWISE_UNARY = frozenset(
    {
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu",
        "Celu", "Gelu", "Erf", "Dropout", "Identity", "Cast", "Softplus", "Softsign", "Mish",
        "ThresholdedRelu", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil",
        "Round", "Sign", "Swish",
    }
)  # fmt: skip
LINEAR_UNARY = frozenset({"Dropout", "Identity", "Cast", "Neg"})
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "PRelu", "Pow", "Max", "Min", "Sum"})
CLASS_AXIS_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
INDEX_OPS = frozenset({"ArgMax", "ArgMin", "TopK"})
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
SPATIAL_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"})
LINEAR_POOLS = frozenset({"GlobalAveragePool", "ReduceMean", "ReduceSum"})
FLATTEN_TAIL_OPS = frozenset({"Flatten", "Reshape", "Squeeze"})


@dataclass(frozen=True)
class FcLayer:
    """One FC layer (Gemm, or MatMul with an optional bias Add) and the Conv it becomes."""

    nodes: tuple[str, ...]
    op: str
    weight: str
    weight_is_mk: bool  # True: stored [M, K] (Gemm transB=1); False: [K, M]
    alpha: float
    bias: str | None
    beta: float
    in_features: int
    out_features: int
    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    output: str

    @property
    def parameters(self) -> int:
        return math.prod(self.kernel_shape) + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class TailOp:
    """A node after the first FC layer and what the rewrite must do with it."""

    node: str
    op: str
    action: str  # keep | per_feature | class_axis | legacy_softmax | to_identity | bn_unwrap
    inputs: tuple[int, ...] = ()  # per_feature: which inputs hold per-feature constants
    extra: tuple[str, ...] = ()  # bn_unwrap: the Unsqueeze and Squeeze around the BN


@dataclass(frozen=True)
class Pool:
    """A global pool between the feature map and the FC layers (for dense mode)."""

    node: str
    op: str
    source: str  # the map before pooling
    source_shape: tuple[int, ...]


@dataclass(frozen=True)
class Head:
    kind: str  # flatten | reshape | squeeze | reduce | nhwc | mlp
    flatten_ops: tuple[str, ...]  # op types between feature map and first FC, for messages
    feature: str  # tensor the first Conv reads
    feature_shape: tuple[int, ...]  # (C, *spatial) at the original size, channel-first
    ref_input: str  # tensor where the original head subgraph starts (verification)
    perm: tuple[int, ...] | None  # channel-last Transpose absorbed into the kernel
    keepdims_node: str | None  # reduce switched to keepdims=1
    pool: Pool | None
    layers: tuple[FcLayer, ...]
    tail: tuple[TailOp, ...]
    outputs: tuple[str, ...]
    linear: bool  # no nonlinearity after the pool: dense-mode map averages to the logits
    dense: bool = False

    @property
    def reads_input(self) -> bool:
        return self.kind == "mlp"  # the feature is a graph input: a plain MLP

    @property
    def spatial_rank(self) -> int:
        return len(self.feature_shape) - 1

    @property
    def window(self) -> tuple[int, ...]:
        return self.layers[0].kernel_shape[2:]

    @property
    def description(self) -> str:
        parts = list(self.flatten_ops)
        for layer in self.layers:
            parts.append(layer.op)
        return " -> ".join(parts)


@dataclass(frozen=True)
class Skipped:
    node: str
    reason: str


@dataclass
class HeadSearch:
    heads: list[Head] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    candidates: int = 0


@dataclass(frozen=True)
class _Flatten:
    kind: str
    ops: tuple[str, ...]
    feature: str
    feature_shape: tuple[int, ...]
    ref_input: str
    perm: tuple[int, ...] | None
    keepdims_node: str | None
    pool: Pool | None


class _Refusal(Exception):
    """Internal: a head cannot be rewritten exactly; the message is the user-facing reason."""


# --------------------------------------------------------------------------------------------
# FC layers


def _fc_candidate(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """Gemm, or MatMul with a constant 2-D operand, on a rank-2 (or unknown-rank) input."""
    if node.op_type == "Gemm":
        return True
    if node.op_type != "MatMul" or len(node.input) != 2:
        return False
    const_shapes = [ix.constant_shape(i) for i in node.input]
    if not any(s is not None and len(s) == 2 for s in const_shapes):
        return False
    data = node.input[0] if const_shapes[0] is None else node.input[1]
    rank = ix.rank(data)
    return rank in (None, 2)


def _per_feature_shape(shape: tuple[int, ...], width: int) -> bool:
    """A constant that broadcasts along the last axis of [N, width] as one value per feature."""
    return shape in ((width,), (1, width))


def _scalar_shape(shape: tuple[int, ...]) -> bool:
    return math.prod(shape) == 1 and len(shape) <= 2


def _match_fc(ix: GraphIndex, node: onnx.NodeProto, data: str, first_shape: tuple[int, ...]) -> FcLayer:
    """The FC layer `node` reading `data`; `first_shape` is the (C, *S) the kernel covers."""
    label = node_label(node)
    k_expected = math.prod(first_shape)
    if node.op_type == "Gemm":
        if node.input[0] != data:
            raise _Refusal(f"{label} reads the head tensor as its weight operand")
        if attr(node, "transA", 0):
            raise _Refusal(f"{label} has transA=1: its input is not a flattened feature map")
        weight = node.input[1]
        wshape = ix.constant_shape(weight)
        if wshape is None:
            raise _Refusal(f"{label}: weight '{weight}' is not a constant")
        if len(wshape) != 2:
            raise _Refusal(f"{label}: weight '{weight}' has rank {len(wshape)}, expected 2")
        trans_b = bool(attr(node, "transB", 0))
        m, k = (wshape[0], wshape[1]) if trans_b else (wshape[1], wshape[0])
        alpha = float(attr(node, "alpha", 1.0))
        beta = float(attr(node, "beta", 1.0))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None:
            bshape = ix.constant_shape(bias)
            if bshape is None:
                raise _Refusal(f"{label}: bias '{bias}' is not a constant")
            if not (_per_feature_shape(bshape, m) or _scalar_shape(bshape)):
                raise _Refusal(f"{label}: bias shape {list(bshape)} is not per-feature ([{m}] or [1, {m}]) or scalar")
        op, nodes, output = "Gemm", (node.name,), node.output[0]
    else:
        if node.input[0] != data:
            raise _Refusal(f"{label}: the weight is the left operand (x @ W expected)")
        weight = node.input[1]
        wshape = ix.constant_shape(weight)
        if wshape is None or len(wshape) != 2:
            raise _Refusal(f"{label}: weight '{weight}' is not a constant 2-D tensor")
        k, m = wshape
        trans_b, alpha, beta, bias = False, 1.0, 1.0, None
        op, nodes, output = "MatMul", (node.name,), node.output[0]
        add = ix.sole_user(output)
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == output else add.input[0]
            oshape = ix.constant_shape(other)
            if oshape is not None and _per_feature_shape(oshape, m):
                bias, op, nodes, output = other, "MatMul+Add", (node.name, add.name), add.output[0]
    if k != k_expected:
        raise _Refusal(
            f"{label}: weight has {k} input features but the feature map {list(first_shape)} has {k_expected}"
        )
    kernel = (m, first_shape[0], *first_shape[1:])
    return FcLayer(
        nodes=nodes, op=op, weight=weight, weight_is_mk=trans_b, alpha=alpha, bias=bias, beta=beta,
        in_features=k, out_features=m, input_shape=first_shape, kernel_shape=kernel, output=output,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The flatten between the feature map and the first FC


def _spatial_axes(node: onnx.NodeProto, ix: GraphIndex, rank: int) -> set[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = ix.constant(node.input[1])
        if value is None:
            return None
        axes = [int(a) for a in value.reshape(-1)]
    if axes is None:
        return set(range(rank))
    return {int(a) % rank for a in axes}


def _reshape_is_flatten(ix: GraphIndex, node: onnx.NodeProto, src_shape: tuple) -> bool:
    """True if the Reshape maps [N, *tail] to [N, prod(tail)] for every batch the model allows."""
    k = math.prod(src_shape[1:])
    batches = [src_shape[0]] if isinstance(src_shape[0], int) else [1, 3]
    allowzero = attr(node, "allowzero", 0)
    for n in batches:
        if len(node.input) > 1:
            target = evaluate_int_tensor(ix, node.input[1], n)
        else:  # Reshape before opset 5 takes its target as an attribute
            shape_attr = attr(node, "shape")
            target = None if shape_attr is None else np.array(shape_attr, np.int64)
        if target is None or target.ndim != 1 or len(target) != 2:
            return False
        dims = [int(d) for d in target]
        resolved = []
        for i, d in enumerate(dims):
            resolved.append((n, k)[i] if (d == 0 and not allowzero) else d)
        if resolved.count(-1) > 1:
            return False
        if -1 in resolved:
            known = math.prod(d for d in resolved if d != -1)
            if known <= 0 or (n * k) % known:
                return False
            resolved[resolved.index(-1)] = (n * k) // known
        if resolved != [n, k]:
            return False
    return True


def _channel_last_perm(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def _static(ix: GraphIndex, name: str) -> tuple | None:
    shape = ix.shape(name)
    if shape is None or ix.static_tail(name) is None:
        return None
    return shape


def _match_pool(ix: GraphIndex, feature: str) -> Pool | None:
    """A global pool producing `feature` ([N, C, 1, ...]) from a larger map."""
    node = ix.producer.get(feature)
    if node is None:
        return None
    source = node.input[0] if node.input else ""
    src_shape = ix.static_tail(source) if source else None
    if src_shape is None or len(src_shape) < 2:
        return None
    rank = len(src_shape) + 1
    if node.op_type in GLOBAL_POOLS:
        return Pool(node.name, node.op_type, source, src_shape)
    if node.op_type in SPATIAL_REDUCES and attr(node, "keepdims", 1):
        axes = _spatial_axes(node, ix, rank)
        if axes == set(range(2, rank)):
            return Pool(node.name, node.op_type, source, src_shape)
    return None


def _read_only_by_fc_layers(ix: GraphIndex, data: str) -> bool:
    """The flattened tensor feeds FC layers only (several heads on one map: each is its own head)."""
    if data in ix.output_set:
        return False
    users = ix.users(data)
    return bool(users) and all(_fc_candidate(ix, u) for u in users)


def _match_flatten(ix: GraphIndex, fc: onnx.NodeProto, data: str, mlp_rank: int) -> _Flatten:
    label = node_label(fc)
    skipped_ops: list[str] = []
    while True:
        if data in ix.graph_inputs:
            shape = ix.shape(data)
            if shape is not None and len(shape) == 2 and isinstance(shape[1], int):
                feature_shape = (shape[1], *([1] * mlp_rank))
                return _Flatten("mlp", ("input", *skipped_ops), data, feature_shape, data, None, None, None)
            raise _Refusal(f"{label} reads graph input '{data}' whose shape is not [N, K]")
        node = ix.producer.get(data)
        if node is None:
            raise _Refusal(f"{label} reads '{data}', which no node produces")
        if not _read_only_by_fc_layers(ix, data):
            raise _Refusal(f"the flattened tensor '{data}' before {label} is also used elsewhere")
        if node.op_type not in FLATTEN_TAIL_OPS and node.op_type not in SPATIAL_REDUCES:
            raise _Refusal(f"{label} reads '{data}' from {node_label(node)}, not from a flattened feature map")
        src = node.input[0]
        src_shape = _static(ix, src)
        if src_shape is None:
            raise _Refusal(
                f"{node_label(node)} before {label}: the shape of its input '{src}' is unknown "
                "(export with static shapes or run shape inference)"
            )
        if len(src_shape) >= 3:
            break
        out_shape = ix.shape(data)
        if node.op_type in FLATTEN_TAIL_OPS and out_shape is not None and tuple(out_shape) == tuple(src_shape):
            skipped_ops.insert(0, node.op_type)  # a no-op on [N, K]: look further up
            data = src
            continue
        raise _Refusal(f"{node_label(node)} before {label} reads a rank-{len(src_shape)} tensor, not a map")
    rank = len(src_shape)
    kind = node.op_type.lower()
    if node.op_type == "Flatten":
        if attr(node, "axis", 1) % rank != 1:
            raise _Refusal(f"{node_label(node)} flattens at axis {attr(node, 'axis', 1)}, not 1")
    elif node.op_type == "Reshape":
        if not _reshape_is_flatten(ix, node, src_shape):
            raise _Refusal(f"{node_label(node)} before {label} is not a flatten to [N, C*H*W]")
    elif node.op_type == "Squeeze":
        axes = _spatial_axes(node, ix, rank)
        if axes != set(range(2, rank)) or any(d != 1 for d in src_shape[2:]):
            raise _Refusal(f"{node_label(node)} before {label} does not squeeze 1 x 1 spatial axes")
    else:  # a reduce with keepdims=0: the global pool is the flatten
        if attr(node, "keepdims", 1) or _spatial_axes(node, ix, rank) != set(range(2, rank)):
            raise _Refusal(f"{node_label(node)} before {label} is not a keepdims=0 reduce over the spatial axes")
        feature_shape = (int(src_shape[1]), *([1] * (rank - 2)))
        pool = Pool(node.name, node.op_type, src, tuple(int(d) for d in src_shape[1:]))
        ops = (node.op_type, *skipped_ops)
        return _Flatten("reduce", ops, data, feature_shape, data, None, node.name, pool)
    feature, perm = src, None
    ops: tuple[str, ...] = (node.op_type, *skipped_ops)
    producer = ix.producer.get(src)
    if (
        producer is not None
        and producer.op_type == "Transpose"
        and tuple(attr(producer, "perm", ())) == _channel_last_perm(rank)
    ):
        # An NHWC flatten. Besides the flatten, only Shape nodes may read the transposed map
        # (Keras/tf2onnx compute the Reshape target from Shape(x)); they keep their meaning
        # because the Transpose stays for them.
        others = [u for u in ix.users(src) if u is not node]
        absorbable = (
            src not in ix.output_set
            and all(u.op_type == "Shape" for u in others)
            and _static(ix, producer.input[0]) is not None
        )
        if absorbable:
            feature, perm = producer.input[0], _channel_last_perm(rank)
            ops = ("Transpose", *ops)
            kind = "nhwc"
        elif any(d != 1 for d in src_shape[1:-1]):
            # Not absorbed, the [N, H, W, C] map would be read as [N, C', H', W']: exact only at
            # the exported size (a 1 x 1 map cannot grow, so that case stays exact).
            raise _Refusal(
                f"{node_label(producer)} before {label} moves the channels last and its output is also "
                "used elsewhere: the kernel layout cannot be proven"
            )
    feature_shape = tuple(int(d) for d in ix.static_tail(feature))  # type: ignore[union-attr]
    pool = _match_pool(ix, feature)
    return _Flatten(kind, ops, feature, feature_shape, feature, perm, None, pool)


# --------------------------------------------------------------------------------------------
# After the first FC: later FC layers and the ops that keep working on [N, M, *S]


def _downstream(ix: GraphIndex, tensor: str) -> set[str]:
    seen = {tensor}
    queue = deque([tensor])
    while queue:
        for user in ix.users(queue.popleft()):
            for out in user.output:
                if out and out not in seen:
                    seen.add(out)
                    queue.append(out)
    return seen


def _walk_tail(
    ix: GraphIndex, first: FcLayer, nodes_by_name: dict[str, onnx.NodeProto], claimed: set[str]
) -> tuple[list[FcLayer], list[TailOp], list[str], bool]:
    """Later FC layers and tail ops, breadth first from the first FC's output."""
    layers = [first]
    tail: list[TailOp] = []
    outputs: list[str] = []
    linear = True
    spatial = first_spatial(first)
    downstream = _downstream(ix, first.output)
    visited: set[str] = set(first.nodes)
    probes: list[onnx.NodeProto] = []
    queue: deque[tuple[str, int]] = deque([(first.output, first.out_features)])
    while queue:
        tensor, width = queue.popleft()
        if tensor in ix.output_set:
            outputs.append(tensor)
        for user in ix.users(tensor):
            if user.name in visited:
                continue
            visited.add(user.name)
            label = node_label(user)
            op = user.op_type
            if op in ("Gemm", "MatMul") and _fc_candidate(ix, user):
                layer = _match_fc(ix, user, tensor, (width, *([1] * spatial)))
                layers.append(layer)
                claimed.update(layer.nodes)
                visited.update(layer.nodes)
                queue.append((layer.output, layer.out_features))
                continue
            if op in ELEMENTWISE_UNARY:
                linear &= op in LINEAR_UNARY
                tail.append(TailOp(user.name, op, "keep"))
            elif op in ELEMENTWISE_BINARY or op == "BatchNormalization":
                action, idx, affine = _binary_action(ix, user, tensor, width, downstream)
                linear &= affine
                tail.append(TailOp(user.name, op, action, idx))
            elif op == "Unsqueeze":
                tail.append(_bn_unwrap(ix, user, visited))
                user = nodes_by_name[tail[-1].extra[1]]  # continue after the Squeeze
            elif op in CLASS_AXIS_OPS:
                _require_class_axis(user, ix, label)
                linear = False
                legacy = ix.opset < 13 and spatial > 0
                tail.append(TailOp(user.name, op, "legacy_softmax" if legacy else "class_axis"))
            elif op in INDEX_OPS:
                _require_class_axis(user, ix, label)
                linear = False
                tail.append(TailOp(user.name, op, "class_axis"))
                for out in user.output:
                    if out and ix.users(out):
                        raise _Refusal(f"the output of {label} is used by further nodes")
                    if out in ix.output_set:
                        outputs.append(out)
                continue
            elif op in FLATTEN_TAIL_OPS and _is_noop_flatten(ix, user, tensor, width):
                tail.append(TailOp(user.name, op, "to_identity"))
            elif op == "Shape":
                probes.append(user)  # allowed only as the size of a final flatten: checked below
                continue
            else:
                raise _Refusal(f"{label} after the FC layers is not supported")
            queue.append((user.output[0], width))
    identities = {t.node for t in tail if t.action == "to_identity"}
    for probe in probes:
        _require_shape_only_for(ix, probe, identities)
    return layers, tail, outputs, linear


_SHAPE_ARITHMETIC = frozenset(
    {"Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity", "Mul", "Div", "Add", "Sub", "ReduceProd"}
)


def _require_shape_only_for(ix: GraphIndex, probe: onnx.NodeProto, identities: set[str]) -> None:
    """A `Shape` of a head tensor may only compute the target of a final flatten that is dropped."""
    queue = deque([probe.output[0]])
    seen: set[str] = set()
    while queue:
        tensor = queue.popleft()
        if tensor in ix.output_set:
            raise _Refusal(f"{node_label(probe)} after the FC layers feeds a graph output")
        for user in ix.users(tensor):
            if user.name in identities and user.input[0] != tensor:
                continue
            if user.op_type not in _SHAPE_ARITHMETIC:
                raise _Refusal(f"{node_label(probe)} after the FC layers feeds {node_label(user)}")
            if user.name not in seen:
                seen.add(user.name)
                queue.extend(o for o in user.output if o)


def first_spatial(layer: FcLayer) -> int:
    return len(layer.kernel_shape) - 2


def _binary_action(
    ix: GraphIndex, node: onnx.NodeProto, tensor: str, width: int, downstream: set[str]
) -> tuple[str, tuple[int, ...], bool]:
    """How a binary op on the head changes: (action, per-feature input indices, affine?)."""
    per_feature: list[int] = []
    label = node_label(node)
    head_inputs = 0
    for i, inp in enumerate(node.input):
        if not inp:
            continue
        if inp == tensor or inp in downstream:
            head_inputs += 1
            continue
        shape = ix.constant_shape(inp)
        if shape is None:
            raise _Refusal(f"{label} combines the head with non-constant tensor '{inp}'")
        if node.op_type == "BatchNormalization":
            if shape != (width,):
                raise _Refusal(f"{label}: parameter '{inp}' has shape {list(shape)}, expected [{width}]")
            continue
        if _per_feature_shape(shape, width) and width > 1:
            per_feature.append(i)
        elif not _scalar_shape(shape):
            raise _Refusal(f"{label}: constant '{inp}' of shape {list(shape)} is neither per-feature nor scalar")
    affine = head_inputs == 1 and (
        node.op_type in ("Add", "Sub", "BatchNormalization", "Mul")
        or (node.op_type == "Div" and node.input[0] in downstream | {tensor})
    )
    return ("per_feature" if per_feature else "keep"), tuple(per_feature), affine


def _bn_unwrap(ix: GraphIndex, unsq: onnx.NodeProto, visited: set[str]) -> TailOp:
    """`Unsqueeze -> BatchNormalization -> Squeeze` (torch's BatchNorm1d on [N, M])."""
    label = node_label(unsq)
    axes = _spatial_axes(unsq, ix, 3)
    bn = ix.sole_user(unsq.output[0])
    squeeze = ix.sole_user(bn.output[0]) if bn is not None and bn.op_type == "BatchNormalization" else None
    if (
        bn is None
        or axes != {2}
        or squeeze is None
        or squeeze.op_type != "Squeeze"
        or _spatial_axes(squeeze, ix, 3) != {2}
    ):
        raise _Refusal(f"{label} after the FC layers is not part of Unsqueeze -> BatchNormalization -> Squeeze")
    for inp in bn.input[1:]:
        if not ix.is_constant(inp):
            raise _Refusal(f"{node_label(bn)}: parameter '{inp}' is not a constant")
    visited.update({bn.name, squeeze.name})
    return TailOp(bn.name, "BatchNormalization", "bn_unwrap", (), (unsq.name, squeeze.name))


def _require_class_axis(node: onnx.NodeProto, ix: GraphIndex, label: str) -> None:
    if node.op_type in CLASS_AXIS_OPS:
        default = -1 if ix.opset >= 13 else 1
    else:
        default = -1 if node.op_type == "TopK" else 0
    axis = attr(node, "axis", default)
    if axis not in (-1, 1):
        raise _Refusal(f"{label} works on axis {axis}, not the class axis")


def _is_noop_flatten(ix: GraphIndex, node: onnx.NodeProto, tensor: str, width: int) -> bool:
    """A Flatten/Reshape/Squeeze that leaves [N, width] as it is."""
    out_shape = ix.shape(node.output[0])
    in_shape = ix.shape(tensor)
    return (
        out_shape is not None
        and in_shape is not None
        and len(out_shape) == 2
        and len(in_shape) == 2
        and out_shape[1] == width
    )


# --------------------------------------------------------------------------------------------


def find_heads(
    model: onnx.ModelProto, *, dense: bool = False, mlp_rank: int = 2, ix: GraphIndex | None = None
) -> HeadSearch:
    """All FC heads of `model` (shape-inferred, unique node names) and why each other candidate fails."""
    ix = ix or GraphIndex(model)
    nodes_by_name = {n.name: n for n in model.graph.node}
    search = HeadSearch()
    claimed: set[str] = set()
    for node in model.graph.node:
        if node.name in claimed or not _fc_candidate(ix, node):
            continue
        search.candidates += 1
        claimed.add(node.name)
        data = _data_operand(ix, node)
        try:
            flat = _match_flatten(ix, node, data, mlp_rank)
            first = _match_fc(ix, node, data, flat.feature_shape)
            claimed.update(first.nodes)
            layers, tail, outputs, linear = _walk_tail(ix, first, nodes_by_name, claimed)
        except _Refusal as refusal:
            _claim_downstream(ix, node, claimed)
            search.skipped.append(Skipped(node.name, str(refusal)))
            continue
        if not outputs:
            search.skipped.append(Skipped(node.name, f"{node_label(node)}: the head reaches no graph output"))
            continue
        head = Head(
            kind=flat.kind, flatten_ops=flat.ops, feature=flat.feature, feature_shape=flat.feature_shape,
            ref_input=flat.ref_input, perm=flat.perm, keepdims_node=flat.keepdims_node, pool=flat.pool,
            layers=tuple(layers), tail=tuple(tail), outputs=tuple(dict.fromkeys(outputs)), linear=linear,
        )  # fmt: skip
        search.heads.append(densify(head) if dense else head)
    return search


def _data_operand(ix: GraphIndex, node: onnx.NodeProto) -> str:
    """The operand carrying the activations. For `MatMul(W, x)` with a constant W on the left this
    is `x`, so that _match_fc refuses it for what it is (the weight on the left) instead of the
    matcher walking up from the weight and reporting a confusing reason."""
    if node.op_type == "MatMul" and ix.is_constant(node.input[0]) and not ix.is_constant(node.input[1]):
        return node.input[1]
    return node.input[0]


def densify(head: Head) -> Head:
    """Dense mode: run the 1 x 1 head before the global pool, whose node is dropped."""
    if head.pool is None or any(d != 1 for d in head.feature_shape[1:]):
        return head
    return Head(
        kind=head.kind, flatten_ops=(head.pool.op, *head.flatten_ops), feature=head.pool.source,
        feature_shape=head.pool.source_shape, ref_input=head.ref_input, perm=None, keepdims_node=None,
        pool=head.pool, layers=head.layers, tail=head.tail, outputs=head.outputs,
        linear=head.linear and head.pool.op in LINEAR_POOLS, dense=True,
    )  # fmt: skip


def _claim_downstream(ix: GraphIndex, node: onnx.NodeProto, claimed: set[str]) -> None:
    """Mark the FC layers chained after a refused one (through head ops only) so they are not
    reported again; FC layers further on, past other ops, are candidates of their own."""
    passable = ELEMENTWISE_UNARY | ELEMENTWISE_BINARY | {"BatchNormalization", "Unsqueeze", "Squeeze"}
    queue = deque(o for o in node.output if o)
    seen: set[str] = set()
    while queue:
        for user in ix.users(queue.popleft()):
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.op_type in ("Gemm", "MatMul"):
                claimed.add(user.name)
            elif user.op_type not in passable:
                continue
            queue.extend(o for o in user.output if o)
