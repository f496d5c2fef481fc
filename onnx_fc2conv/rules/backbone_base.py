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
    """A Reshape target that fits an input of `in_shape` (0 copies a dim, -1 takes the rest).

    A symbolic dim of the input (a batch left symbolic) fits when a 0 copies it, or when the -1
    takes it: then the target fits if its known dims divide the input's known ones (Keras's
    `[-1, C]` on `[N, H, W, C]`), whatever the symbol's value."""
    if in_shape is None or dims.count(-1) > 1:
        return False
    dims = [in_shape[i] if d == 0 and not allowzero and i < len(in_shape) else d for i, d in enumerate(dims)]
    symbols = [str(d) for d in in_shape if not isinstance(d, int)]
    copied = [str(d) for d in dims if not isinstance(d, int)]
    if any(copied.count(s) > symbols.count(s) for s in copied) or (
        symbols and len(copied) < len(symbols) and -1 not in dims
    ):
        return False
    total, known = 1, 1
    for d in in_shape:
        total *= d if isinstance(d, int) else 1
    for d in dims:
        known *= d if isinstance(d, int) and d != -1 else 1
    if known <= 0:
        return False
    return total % known == 0 if -1 in dims else total == known
