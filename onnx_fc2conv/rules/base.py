"""What every rule shares: refusal codes, the refusal itself, and the records rules return.

A rule is a small unit with a `match` step that returns a typed record (or None when the node
is not its business) and raises `Refusal` when the node is its business but cannot be
rewritten exactly; and a `rewrite` step that applies a record to the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import onnx_graphsurgeon as gs

from ..graph import Edit, node_id

if TYPE_CHECKING:
    from collections.abc import Iterable


GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})


class Code(str, Enum):
    """Stable refusal codes (what a pipeline matches on; the reason is for people)."""

    TRANS_A = "trans-a"
    WEIGHT_OPERAND = "weight-operand"
    NOT_CONSTANT = "not-constant"
    WEIGHT_RANK = "weight-rank"
    BIAS_SHAPE = "bias-shape"
    FEATURE_COUNT = "feature-count"
    INPUT_NOT_NK = "input-not-nk"
    NO_PRODUCER = "no-producer"
    SHARED_FLATTEN = "shared-flatten"
    NOT_FLATTENED = "not-flattened"
    UNKNOWN_SHAPE = "unknown-shape"
    SYMBOLIC_SIZE = "symbolic-size"
    NOT_A_MAP = "not-a-map"
    FLATTEN_AXIS = "flatten-axis"
    RESHAPE_NOT_FLATTEN = "reshape-not-flatten"
    SQUEEZE_NOT_SPATIAL = "squeeze-not-spatial"
    REDUCE_NOT_SPATIAL = "reduce-not-spatial"
    CHANNEL_LAST_SHARED = "channel-last-shared"
    TENSORDOT_LAYOUT = "tensordot-layout"
    UNSUPPORTED_OP = "unsupported-op"
    NON_CONSTANT_OPERAND = "non-constant-operand"
    CONSTANT_SHAPE = "constant-shape"
    CLASS_AXIS = "class-axis"
    INDEX_USED = "index-used"
    SHAPE_PROBE = "shape-probe"
    BATCHNORM_PATTERN = "batchnorm-pattern"
    NO_OUTPUT = "no-output"
    BAKED_SIZE = "baked-size"
    BAKED_BATCH = "baked-batch"
    FIXED_RESIZE = "fixed-resize"
    FIXED_EXPAND = "fixed-expand"
    TOKEN_SEQUENCE = "token-sequence"
    QDQ_PER_CHANNEL = "qdq-per-channel"
    BLOCK_QUANTIZED = "block-quantized"
    QUANT_AXIS = "quant-axis"
    QUANTIZED_SCALING = "quantized-scaling"
    DYNAMIC_QUANTIZATION = "dynamic-quantization"
    QUANTIZED_OPERATOR = "quantized-operator"


class Refusal(Exception):
    """A node cannot be rewritten exactly: a stable code and the readable reason naming it."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Action(str, Enum):
    """What the rewrite does with an op after the FC layers."""

    KEEP = "keep"
    PER_FEATURE = "per_feature"
    CLASS_AXIS = "class_axis"
    LEGACY_SOFTMAX = "legacy_softmax"
    TO_IDENTITY = "to_identity"
    BN_UNWRAP = "bn_unwrap"


@dataclass(frozen=True, eq=False)
class TailOp:
    """A node after the first FC layer, the rule that matched it and what its rewrite does."""

    rule: TailRule
    node: gs.Node
    action: Action
    next: tuple[gs.Tensor, ...]  # where the walk goes on ([N, width] tensors); () ends the branch
    affine: bool  # keeps the head affine (a dense map then averages to the logits)
    inputs: tuple[int, ...] = ()  # per-feature constants: which inputs
    extra: tuple[gs.Node, ...] = ()  # nodes the rewrite removes (BatchNorm1d's Unsqueeze/Squeeze)
    outputs: tuple[gs.Tensor, ...] = ()  # graph outputs this op ends in (index ops)

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str:
        return node_id(self.node)


@dataclass
class TailWalk:
    """State of one head's walk that tail rules may read (the walker owns it)."""

    graph: gs.Graph
    opset: int
    spatial: int  # spatial rank of the map the head runs on
    downstream: set[int] = field(default_factory=set)  # ids of tensors computed from the first FC
    visited: set[int] = field(default_factory=set)  # ids of nodes already claimed by this head

    def from_head(self, tensor: gs.Tensor) -> bool:
        return id(tensor) in self.downstream


class TailRule(Protocol):
    """An op after an FC layer: `match` -> TailOp, None (not mine) or Refusal; `rewrite`."""

    ops: frozenset[str]

    def match(self, walk: TailWalk, node: gs.Node, tensor: gs.Tensor, width: int) -> TailOp | None: ...

    def rewrite(self, op: TailOp, edit: Edit, spatial: int) -> None: ...


def per_feature_shape(shape: tuple[int, ...], width: int) -> bool:
    """A constant that broadcasts along the last axis of [N, width] as one value per feature."""
    return shape in ((width,), (1, width))


def scalar_shape(shape: tuple[int, ...]) -> bool:
    size = 1
    for d in shape:
        size *= d
    return size == 1 and len(shape) <= 2


def per_feature_operand(label: str, operand: gs.Tensor, shape: tuple[int, ...], width: int) -> bool:
    """A constant operand of an op on `[N, width]`: True when it holds one value per feature (it
    moves to the channel axis), False when it is a scalar; any other shape is refused."""
    if per_feature_shape(shape, width) and width > 1:
        return True
    if scalar_shape(shape):
        return False
    raise Refusal(
        Code.CONSTANT_SHAPE,
        f"{label}: constant '{operand.name}' of shape {list(shape)} is neither per-feature nor scalar",
    )


def axes_of(node: gs.Node, rank: int) -> set[int] | None:
    """The `axes` of a reduce/squeeze/unsqueeze, attribute or constant input; None: not constant."""
    from ..graph import constant

    axes: Iterable[int] | None = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
        value = constant(node.inputs[1])
        if value is None:
            return None
        axes = [int(a) for a in value.reshape(-1)]
    if axes is None:
        return set(range(rank))
    return {int(a) % rank for a in axes}
