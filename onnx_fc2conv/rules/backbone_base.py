"""The record a backbone rule returns: a fix it can apply, described for the report."""

from __future__ import annotations

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
