"""A plain MLP: the first FC layer reads a graph input `[N, K]`.

The input becomes `[N, K, *S]` and every FC layer a `1 x 1` convolution: each location is the
MLP applied to that location's `K` values.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import shape
from .base import Code, Refusal
from .flatten_base import FlattenKind, FlattenMatch

RULES: list = []  # a step of the head walker


def match_input(data: gs.Tensor, skipped_ops: list[str], mlp_rank: int, fc_label: str) -> FlattenMatch:
    found = shape(data)
    if found is not None and len(found) == 2 and isinstance(found[1], int):
        feature_shape = (found[1], *([1] * mlp_rank))
        return FlattenMatch(FlattenKind.MLP, ("input", *skipped_ops), None, data, feature_shape)
    raise Refusal(Code.INPUT_NOT_NK, f"{fc_label} reads graph input '{data.name}' whose shape is not [N, K]")
