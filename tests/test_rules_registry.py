"""The registry lists every rule module: a module under rules/ either registers its rules in `RULES`
or is one of the documented steps and records the walker uses itself; each has its test file."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import onnx_fc2conv.rules as rules_package
from onnx_fc2conv.rules import BACKBONE_RULES, FLATTEN_RULES, TAIL_RULES

RULES_DIR = Path(rules_package.__file__).parent
TESTS = Path(__file__).resolve().parent
REGISTRIES = {"tail_": TAIL_RULES, "flatten_": FLATTEN_RULES, "backbone_": BACKBONE_RULES}

# Modules that register no rule: (the module that uses it, what it uses).
STEPS = {
    "backbone_base": ("onnx_fc2conv.backbone", "BackboneFix"),  # the record backbone rules return
    "flatten_base": ("onnx_fc2conv.heads", "FlattenMatch"),  # the record of a matched flatten
    "flatten_channel_last": ("onnx_fc2conv.heads", "tensordot_fc"),  # a Tensordot's FC is no head candidate
    "flatten_mlp": ("onnx_fc2conv.heads", "match_input"),  # the flatten when an FC reads a graph input
    "flatten_nhwc": ("onnx_fc2conv.heads", "absorb"),  # after every flatten rule: a channel-last Transpose
    "flatten_pool": ("onnx_fc2conv.heads", "match_pool"),  # the global pool before a flatten
}
RECORDS = {"backbone_base", "flatten_base"}


def _rule_modules() -> list[str]:
    return sorted(p.stem for p in RULES_DIR.glob("*.py") if p.stem not in ("__init__", "base"))


def _module(name: str):
    return importlib.import_module(f"{rules_package.__name__}.{name}")


def test_rule_modules_are_found() -> None:
    names = _rule_modules()
    assert {"tail_elementwise", "flatten_flatten", "backbone_resize_sizes"} <= set(names)
    assert set(STEPS) <= set(names), "a step listed here no longer exists"


@pytest.mark.parametrize("name", _rule_modules())
def test_rule_module_is_registered_or_a_documented_step(name: str) -> None:
    module = _module(name)
    assert module.__doc__, f"rules/{name}.py states its pattern and algebra in its docstring"
    prefix = next((p for p in REGISTRIES if name.startswith(p)), None)
    assert prefix is not None, f"rules/{name}.py: the registry collects only {sorted(REGISTRIES)} modules"
    found = getattr(module, "RULES", None)
    assert isinstance(found, list), f"rules/{name}.py has no RULES list, so the registry cannot collect it"
    if name in STEPS:
        assert found == [], f"rules/{name}.py is listed as a step but registers rules"
        user, attribute = STEPS[name]
        assert getattr(importlib.import_module(user), attribute) is getattr(module, attribute)
    else:
        assert found, f"rules/{name}.py registers no rule in RULES"
        registry = REGISTRIES[prefix]
        assert all(any(rule is known for known in registry) for rule in found)


@pytest.mark.parametrize("prefix", list(REGISTRIES))
def test_registry_holds_exactly_the_rules_of_its_modules(prefix: str) -> None:
    declared = [rule for name in _rule_modules() if name.startswith(prefix) for rule in _module(name).RULES]
    registry = REGISTRIES[prefix]
    assert len(registry) == len(declared)
    assert {id(rule) for rule in registry} == {id(rule) for rule in declared}
    for rule in registry:
        assert rule.ops, f"{type(rule).__name__} claims no op"


@pytest.mark.parametrize("name", [n for n in _rule_modules() if n not in RECORDS])
def test_rule_module_has_its_test_file(name: str) -> None:
    assert (TESTS / f"test_rule_{name}.py").is_file()
