"""`Squeeze` of the `1 x 1` spatial axes of a pooled map `[N, C, 1, 1]` -> `[N, C]`."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import node_label
from .base import Code, Refusal, axes_of
from .flatten_base import FlattenKind


class SqueezeOp:
    ops = frozenset({"Squeeze"})
    kind = FlattenKind.SQUEEZE

    def check(self, node: gs.Node, src_shape: tuple, fc_label: str) -> None:
        rank = len(src_shape)
        if axes_of(node, rank) != set(range(2, rank)) or any(d != 1 for d in src_shape[2:]):
            raise Refusal(
                Code.SQUEEZE_NOT_SPATIAL, f"{node_label(node)} before {fc_label} does not squeeze 1 x 1 spatial axes"
            )


RULES = [SqueezeOp()]
