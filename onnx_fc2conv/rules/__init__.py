"""The rules, one small unit per pattern, collected from the modules of this package.

A module named `tail_*` holds rules for ops after an FC layer, `flatten_*` the forms of the
flatten before it, `backbone_*` fixes of backbone nodes that bake the input size. Each module
lists its rules in `RULES`; adding a pattern is adding a module (or a rule to one) and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def _modules(prefix: str) -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith(prefix))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def _collect(prefix: str) -> list:
    """Rules of every module; a rule that must be tried before others of its op sets `order`."""
    rules = [rule for module in _modules(prefix) for rule in module.RULES]
    return sorted(rules, key=lambda rule: getattr(rule, "order", 50))


TAIL_RULES = _collect("tail_")
FLATTEN_RULES = _collect("flatten_")
BACKBONE_RULES = _collect("backbone_")


def tail_rules_for(op: str) -> list:
    return [rule for rule in TAIL_RULES if op in rule.ops]
