"""Denser maps by the a trous algorithm: output stride S / 2^k from the same weights.

One step, per spatial axis: take the last stride-2 layer L (a Conv, MaxPool or AveragePool) and
call its input `u`. Give L stride 1; double the dilations and the pads of every later Conv and
pool (they all have stride 1: L is the last strided layer). Then cell `2i + r` (r in {0, 1}) of the
new map is cell `i` of the model as it was, with L's window origin moved `r` pixels later on `u`
(L's begin pad reduced by r, or `u` cropped by r where the pad is 0). Cell `2i` is today's map.
Why: L at stride 1 gives `y'[n]`, and `y'[2j + r]` is L's window at origin `2j - p + r`, the
shifted L's cell `j`. A layer with dilation `2d` and pads `2p` reads `y'[n - 2p + 2dt]`; at
`n = 2i + r` those are `y'[2(i - p + dt) + r]`: the undilated layer on the parity-r sub-grid,
padding included (an index falls outside `y'` exactly when it falls outside the sub-grid).

`k` steps (L_1 the last strided layer, L_k the earliest) give stride S / 2^k: cell
`2^k j + sum_m r_m 2^(k-m)` is cell `j` of the original with each L_m shifted by `r_m`
(docs/denser-maps.md). Each step is refused, with a code, where the identity cannot hold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from enum import Enum

import onnx
from onnx import helper

from .errors import NotConvertibleError
from .geometry import CHANNEL_OPS, Geometry, output_geometry
from .graph import opset_version

log = logging.getLogger(__name__)

_WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose"})
_STRIDED_L_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})
_PER_PIXEL_OPS = CHANNEL_OPS | {"Softmax", "LogSoftmax"}
METADATA_KEY = "onnx_fc2conv.a_trous"  # the levels, as JSON: what `verify` needs to rebuild the reference


class DilationCode(str, Enum):
    """Why an output stride cannot be reached exactly (stable, for pipelines to match on)."""

    OUTPUT_STRIDE = "output-stride"
    NO_GEOMETRY = "no-geometry"
    TOO_FEW_STRIDED = "too-few-strided"
    STRIDE_NOT_TWO = "stride-not-two"
    PARALLEL_STRIDED = "parallel-strided"
    CEIL_MODE = "ceil-mode"
    AUTO_PAD = "auto-pad"
    AVERAGE_POOL_OPSET = "average-pool-opset"
    NOT_DILATABLE = "not-dilatable"
    CROSSING_PATH = "crossing-path"
    SPATIAL_CONSTANT = "spatial-constant"
    POOL_PAD = "pool-pad"


class DilationRefusal(NotConvertibleError):
    """The a trous rewrite cannot be exact on this model: a code and a sentence naming the node."""

    def __init__(self, code: DilationCode, reason: str) -> None:
        super().__init__(f"--output-stride: {reason} [{code.value}]", [reason])
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Level:
    """One a trous step: the strided layer L, its input `u` and its begin pads as exported."""

    node: str  # L's output tensor (stable across the original and the converted model)
    u: str
    op: str
    begin_pads: tuple[int, ...]


@dataclass(frozen=True)
class Dilation:
    """What the rewrite did: the levels, last strided layer first; the old and new stride."""

    levels: tuple[Level, ...]
    old_stride: int
    new_stride: int
    dilated_nodes: int

    @property
    def factor(self) -> int:
        return 2 ** len(self.levels)

    def describe(self) -> str:
        layers = ", ".join(f"{lv.op} -> '{lv.node}'" for lv in self.levels)
        return (
            f"output stride {self.old_stride} -> {self.new_stride} (a trous): stride 1 on {layers}; "
            f"{self.dilated_nodes} later layer dilations doubled"
        )


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_ints(node: onnx.NodeProto, name: str, values: list[int]) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, [int(v) for v in values]))


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _spatial_rank(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    kernel = _attr(node, "kernel_shape")
    if kernel is not None:
        return len(kernel)
    weights = {t.name: t for t in model.graph.initializer}
    w = weights.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        raise DilationRefusal(DilationCode.NO_GEOMETRY, f"{_label(node)} has no known kernel shape")
    return len(w.dims) - 2


def _strides(model: onnx.ModelProto, node: onnx.NodeProto) -> list[int]:
    return list(_attr(node, "strides", [1] * _spatial_rank(model, node)))


def _auto_pad(node: onnx.NodeProto) -> str:
    value = _attr(node, "auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else value


class _Graph:
    """Producers and users by tensor name, over a ModelProto's nodes (edited in place)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.users: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.input:
                self.users.setdefault(t, []).append(i)
        self.constants = {t.name for t in model.graph.initializer}
        for n in self.nodes:  # Constant nodes and everything computed only from constants
            if all(t in self.constants or not t for t in n.input) and n.op_type not in ("RandomNormal",):
                self.constants.update(o for o in n.output if o)
        self.inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}

    def descendants(self, start: int) -> list[int]:
        seen: set[int] = set()
        stack = [start]
        while stack:
            for out in self.nodes[stack.pop()].output:
                for user in self.users.get(out, []):
                    if user not in seen:
                        seen.add(user)
                        stack.append(user)
        return sorted(seen)

    def ancestors(self, start: int) -> set[int]:
        seen: set[int] = set()
        stack = [start]
        while stack:
            for t in self.nodes[stack.pop()].input:
                p = self.producer.get(t)
                if p is not None and p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen


def _last_strided(g: _Graph) -> int | None:
    strided = [
        i
        for i, n in enumerate(g.nodes)
        if n.op_type in _WINDOW_OPS and any(s != 1 for s in _strides(g.model, n)) and not _is_constant_node(g, n)
    ]
    if not strided:
        return None
    for i in strided:
        before = g.ancestors(i)
        if all(j == i or j in before for j in strided):
            return i
    last = [i for i in strided if not any(i in g.ancestors(j) for j in strided if j != i)]
    names = ", ".join(_label(g.nodes[i]) for i in last[:3])
    raise DilationRefusal(
        DilationCode.PARALLEL_STRIDED, f"strided layers {names} run side by side: no single last strided layer"
    )


def _is_constant_node(g: _Graph, node: onnx.NodeProto) -> bool:
    return all(o in g.constants for o in node.output if o)


def _check_l(g: _Graph, node: onnx.NodeProto) -> None:
    strides = _strides(g.model, node)
    if node.op_type not in _STRIDED_L_OPS:
        raise DilationRefusal(DilationCode.NOT_DILATABLE, f"{_label(node)} is strided and cannot be given stride 1")
    if any(s != 2 for s in strides):
        raise DilationRefusal(
            DilationCode.STRIDE_NOT_TWO, f"{_label(node)} has strides {strides}; only stride 2 on every axis is exact"
        )
    if _attr(node, "ceil_mode", 0) and node.op_type != "MaxPool":
        raise DilationRefusal(
            DilationCode.CEIL_MODE, f"{_label(node)} uses ceil_mode: its last window has no stride-1 counterpart"
        )
    if _auto_pad(node) not in ("NOTSET", "VALID"):
        raise DilationRefusal(DilationCode.AUTO_PAD, f"{_label(node)} uses auto_pad={_auto_pad(node)}")
    if len([o for o in node.output if o]) > 1:
        raise DilationRefusal(DilationCode.NOT_DILATABLE, f"{_label(node)} also returns indices")


def _check_after(g: _Graph, l_index: int, after: list[int], opset: int) -> None:
    """Every node after L must be a stride-1 window (dilated exactly) or work pixel by pixel."""
    inside = {o for i in [l_index, *after] for o in g.nodes[i].output}
    for i in after:
        node = g.nodes[i]
        op = node.op_type
        for t in node.input:
            if t and t not in inside and t not in g.constants:
                raise DilationRefusal(
                    DilationCode.CROSSING_PATH,
                    f"{_label(node)} reads '{t}', computed before the last strided layer, at the old resolution",
                )
        if op in ("Conv", "MaxPool", "AveragePool"):
            if _auto_pad(node) not in ("NOTSET", "VALID"):
                raise DilationRefusal(DilationCode.AUTO_PAD, f"{_label(node)} uses auto_pad={_auto_pad(node)}")
            if op == "AveragePool" and opset < 19:
                raise DilationRefusal(
                    DilationCode.AVERAGE_POOL_OPSET,
                    f"{_label(node)} comes after the strided layer and AveragePool has no dilations before opset 19 "
                    f"(the model has opset {opset})",
                )
            if op == "MaxPool" and len([o for o in node.output if o]) > 1:
                raise DilationRefusal(DilationCode.NOT_DILATABLE, f"{_label(node)} also returns indices")
            continue
        if op in _PER_PIXEL_OPS:
            _check_constants(g, node, inside)
            continue
        if op == "Transpose" and not any(g.nodes[j].op_type in _WINDOW_OPS for j in g.descendants(i)):
            continue  # axes moved for a per-pixel op (a legacy Softmax's class axis): no window reads them
        raise DilationRefusal(
            DilationCode.NOT_DILATABLE,
            f"{_label(node)} comes after the last strided layer and cannot be dilated exactly",
        )


def _check_constants(g: _Graph, node: onnx.NodeProto, inside: set[str]) -> None:
    """A constant operand that varies over space would be read at the wrong cells."""
    weights = {t.name: t for t in g.model.graph.initializer}
    if node.op_type == "BatchNormalization":
        return
    for t in node.input:
        if t in inside or t not in weights:
            continue
        dims = list(weights[t].dims)
        if len(dims) >= 3 and any(d != 1 for d in dims[-2:]):
            raise DilationRefusal(
                DilationCode.SPATIAL_CONSTANT, f"{_label(node)} adds a constant '{t}' that varies over the map"
            )


def _dilate(node: onnx.NodeProto, rank: int) -> None:
    dil = list(_attr(node, "dilations", [1] * rank))
    pads = list(_attr(node, "pads", [0] * 2 * rank))
    kernel = list(_attr(node, "kernel_shape", []))
    if node.op_type != "Conv" and kernel and any(2 * p >= kernel[a % rank] for a, p in enumerate(pads)):
        raise DilationRefusal(  # exact by the algebra, but onnxruntime rejects a pool pad >= its kernel
            DilationCode.POOL_PAD,
            f"{_label(node)}: doubled pads {[2 * p for p in pads]} would reach its kernel {kernel}, "
            "which onnxruntime's pools reject",
        )
    _set_ints(node, "dilations", [2 * d for d in dil])
    _set_ints(node, "pads", [2 * p for p in pads])


def step(model: onnx.ModelProto) -> tuple[Level, int]:
    """One a trous step on `model` (in place); the level it used and how many layers it dilated."""
    g = _Graph(model)
    l_index = _last_strided(g)
    if l_index is None:
        raise DilationRefusal(DilationCode.TOO_FEW_STRIDED, "the model has no strided layer left to give stride 1")
    node = g.nodes[l_index]
    _check_l(g, node)
    after = g.descendants(l_index)
    _check_after(g, l_index, after, opset_version(model))
    rank = _spatial_rank(model, node)
    pads = list(_attr(node, "pads", [0] * 2 * rank))
    level = Level(node.output[0], node.input[0], node.op_type, tuple(int(p) for p in pads[:rank]))
    _set_ints(node, "strides", [1] * rank)
    if _attr(node, "ceil_mode", 0):  # a max over one more end pad (ignored cells) gives the ceil window
        _set_ints(node, "pads", pads[:rank] + [p + 1 for p in pads[rank:]])
        node.attribute.remove(next(a for a in node.attribute if a.name == "ceil_mode"))  # no effect at stride 1
    dilated = 0
    for i in after:
        n = g.nodes[i]
        if n.op_type in ("Conv", "MaxPool", "AveragePool"):
            _dilate(n, _spatial_rank(model, n))
            dilated += 1
    log.info("a trous: %s gets stride 1, %d later layers dilated", _label(node), dilated)
    return level, dilated


def model_stride(model: onnx.ModelProto) -> int:
    """The output stride S of the model's maps (one value on every axis), or a refusal."""
    strides = set()
    for out, geo in output_geometry(model).items():
        if not isinstance(geo, Geometry):
            raise DilationRefusal(DilationCode.NO_GEOMETRY, f"output '{out}' has no window geometry: {geo}")
        strides.update(geo.stride)
    if len(strides) != 1:
        raise DilationRefusal(
            DilationCode.NO_GEOMETRY, f"the maps' strides differ by axis or output: {sorted(strides)}"
        )
    return strides.pop()


def steps_for(stride: int, output_stride: int) -> int:
    """k with stride / 2^k == output_stride, or a refusal."""
    k, s = 0, stride
    while s > output_stride and s % 2 == 0:
        s //= 2
        k += 1
    if s != output_stride:
        raise DilationRefusal(
            DilationCode.OUTPUT_STRIDE,
            f"output stride {output_stride} is not the model's stride {stride} divided by a power of 2",
        )
    return k


def apply(model: onnx.ModelProto, output_stride: int) -> Dilation:
    """Rewrite `model` in place to reach `output_stride` (see the module docstring); the levels are
    recorded in its metadata, so that `verify` can rebuild the reference from the written model."""
    stride = model_stride(model)
    k = steps_for(stride, output_stride)
    levels, dilated = [], 0
    for _ in range(k):
        level, count = step(model)
        levels.append(level)
        dilated += count
    dilation = Dilation(tuple(levels), stride, output_stride, dilated)
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dataclasses.asdict(dilation))
    return dilation


def recorded(model: onnx.ModelProto) -> Dilation | None:
    """The a trous rewrite a written model records, or None (a model without one, or unreadable)."""
    text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if text is None:
        return None
    try:
        found = json.loads(text)
        levels = tuple(
            Level(str(v["node"]), str(v["u"]), str(v["op"]), tuple(int(p) for p in v["begin_pads"]))
            for v in found["levels"]
        )
        return Dilation(levels, int(found["old_stride"]), int(found["new_stride"]), int(found["dilated_nodes"]))
    except (ValueError, KeyError, TypeError):
        return None


def shifted_pads(node: onnx.NodeProto, rank: int, shift: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """L's pads with the window origin moved `shift` later per axis, and what to crop from `u`
    where the begin pad is too small (it is then 0: cropping is exact)."""
    pads = list(_attr(node, "pads", [0] * 2 * rank))
    crop = [0] * rank
    for a, r in enumerate(shift):
        take = min(pads[a], r)
        pads[a] -= take
        crop[a] = r - take
    return pads, crop


__all__ = ["Dilation", "DilationCode", "DilationRefusal", "Level", "apply", "shifted_pads"]
