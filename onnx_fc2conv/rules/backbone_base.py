"""The record a backbone rule returns: a fix it can apply, described for the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx_graphsurgeon as gs

RULES: list = []  # records only


@dataclass(frozen=True)
class BackboneFix:
    """A backbone node made size-agnostic: which node, its op, and what changed."""

    node: str
    op: str
    change: str
    rule: Any = field(default=None, repr=False, compare=False)
    target: gs.Node | None = field(default=None, repr=False, compare=False)
    data: Any = field(default=None, repr=False, compare=False)

    def apply(self, edit: Any) -> None:
        self.rule.rewrite(self, edit)


@dataclass(frozen=True)
class BackboneContext:
    """What backbone rules read: the graph, its spatial rank, each tensor's shape at a probe size
    larger than the exported one (None where inference could not tell) and input dependence."""

    graph: gs.Graph
    spatial: int
    probe: Callable[[gs.Tensor], tuple | None]
    fed: Callable[[int], bool]  # by node id: depends on an image input (a run-time weight does not)
    grows: bool = True  # the model as it is runs at a size one larger than exported


def resolves(dims: list[int], in_shape: tuple | None, allowzero: bool = False) -> bool:
    """A Reshape target that fits an input of `in_shape` (0 copies a dim, -1 takes the rest). A
    symbolic batch (axis 0) is taken as 1: with a -1 the batch only scales what it takes, and
    without one a target that fits pins the batch alone (batch.py judges that). At the probe size
    the spatial dims are numbers, so a symbol on axis 0 is the batch (verification checks the rest)."""
    if in_shape and isinstance(in_shape[0], str):
        in_shape = (1, *in_shape[1:])
    if in_shape is None or not all(isinstance(d, int) for d in in_shape):
        return False
    dims = [in_shape[i] if d == 0 and not allowzero and i < len(in_shape) else d for i, d in enumerate(dims)]
    total, known = 1, 1
    for d in in_shape:
        total *= d
    for d in dims:
        known *= d if d != -1 else 1
    if dims.count(-1) > 1 or known <= 0:
        return False
    return total % known == 0 if -1 in dims else total == known
