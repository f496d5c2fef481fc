"""The record a flatten rule returns: where the head's map is and how it was flattened."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import onnx_graphsurgeon as gs

RULES: list = []  # records only; the flatten rules are the other flatten_* modules


class FlattenKind(str, Enum):
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    SQUEEZE = "squeeze"
    REDUCE = "reduce"
    NHWC = "nhwc"
    MLP = "mlp"


@dataclass(frozen=True, eq=False)
class Pool:
    """A global pool between the feature map and the FC layers (for dense mode)."""

    node: gs.Node
    source: gs.Tensor  # the map before pooling
    source_shape: tuple[int, ...]

    @property
    def op(self) -> str:
        return self.node.op


@dataclass(frozen=True, eq=False)
class FlattenMatch:
    kind: FlattenKind
    ops: tuple[str, ...]  # op types between the map and the first FC, for messages
    node: gs.Node | None  # the flatten node (None: a graph input)
    feature: gs.Tensor  # what the first Conv reads
    feature_shape: tuple[int, ...]  # (C, *spatial), channel-first
    perm: tuple[int, ...] | None = None  # a channel-last Transpose absorbed into the kernel
    keepdims: gs.Node | None = None  # a reduce to switch to keepdims=1
    reduce_source: gs.Tensor | None = None  # that reduce then reads this channel-first map
    channel_last: gs.Tensor | None = None  # the rewrite transposes this into reduce_source (a new tensor)
    between: tuple[gs.Node, ...] = ()  # elementwise ops after the flatten that move onto the map
    pool: Pool | None = None
