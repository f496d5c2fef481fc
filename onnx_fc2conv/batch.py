"""Which batch the written model may claim: follow the batch axis from the inputs to the outputs.

Exporters bake the exported batch into constants: a final `Reshape [1, 1000]`, a `[1, C]` target
after a pool. Where a Reshape's constant target copies the batch (its first dim is the exported
batch, the input's first dim is the batch and the other dims keep their sizes), a `0` there
(allowzero=0: "copy the input's dim") is exact for every batch. A node that moves the batch into
another axis (a `Reshape [-1]` that flattens the batch with the features, a Concat or a reduce over
the batch axis, a Flatten at axis 0, an Expand or Tile that repeats it) pins the batch: the written
model then keeps the exported batch, and the result names the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .graph import Edit, constant, node_id, node_label, shape
from .heads import Skipped
from .layout import InputLayout
from .rules.backbone_base import BackboneFix
from .rules.backbone_tensordot import rows_round_trip
from .rules.base import Code, axes_of

_AXIS_OPS = frozenset({"Concat", "Split", "Gather", "Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "TopK"})
_DEFAULT_AXIS = {"Softmax": -1, "LogSoftmax": -1, "Hardmax": -1, "TopK": -1}  # opset 13 (1 before: never 0)
_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2"})
_SIZE_ONLY = frozenset({"Shape", "Size"})


@dataclass
class BatchPlan:
    fixes: list[BackboneFix] = field(default_factory=list)
    pins: list[Skipped] = field(default_factory=list)


class _BatchTarget:
    """Rewrite: the Reshape's first target dim copies the batch: a 0 (allowzero=0), else
    `Concat(Shape(x)[0:1], rest)` (allowzero=1 reads a 0 as a zero-sized dim)."""

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        rest = np.array(fix.data[1:], np.int64)
        if not node.attrs.get("allowzero", 0):
            node.inputs[1] = edit.constant(f"{node.inputs[1].name}_any_batch", np.concatenate([[0], rest]))
            return
        base = node.name or node.outputs[0].name
        dims, batch, target = (edit.variable(f"{base}_batch_{k}") for k in ("shape", "dim", "target"))
        start, stop = (
            edit.constant(f"{base}_batch_{k}", np.array([v], np.int64)) for k, v in (("start", 0), ("stop", 1))
        )
        edit.add_node("Shape", f"{base}_batch_Shape", [node.inputs[0]], [dims], at=node)
        edit.add_node("Slice", f"{base}_batch_Slice", [dims, start, stop], [batch], at=node)
        rest_const = edit.constant(f"{base}_batch_rest", rest)
        edit.add_node("Concat", f"{base}_batch_Concat", [batch, rest_const], [target], at=node, axis=0)
        node.inputs[1] = target


def plan_batch(graph: gs.Graph, layouts: dict[str, InputLayout]) -> BatchPlan:
    """Fixes that free the batch, and the nodes that pin it (graph cleaned up and sorted)."""
    plan = BatchPlan()
    batch_axis: dict[int, int] = {}
    for tensor in graph.inputs:
        layout = layouts.get(tensor.name)
        if layout is not None and isinstance((shape(tensor) or ())[layout.batch], int):
            batch_axis[id(tensor)] = layout.batch
    if not batch_axis:
        return plan  # the batch is symbolic already (or there is no image input)
    for node in graph.nodes:
        axis = next((batch_axis[id(t)] for t in node.inputs if id(t) in batch_axis), None)
        if axis is None or node.op in _SIZE_ONLY:
            continue
        try:
            out = _follow(node, axis, plan)
        except _Pinned as pinned:
            plan.pins.append(Skipped(node_id(node), f"{node_label(node)} {pinned}", Code.BAKED_BATCH))
            continue
        for tensor in node.outputs:
            batch_axis[id(tensor)] = out
    return plan


class _Pinned(Exception):
    """Why a node pins the batch (completes a sentence naming the node)."""


def _follow(node: gs.Node, axis: int, plan: BatchPlan) -> int:
    """Where the batch axis is in the node's outputs."""
    op = node.op
    if op == "Transpose":
        perm = list(node.attrs.get("perm") or reversed(range(len(shape(node.inputs[0]) or ()))))
        if axis not in perm:
            raise _Pinned(f"has a perm {perm} without the batch axis")
        return perm.index(axis)
    if op == "Reshape":
        return _reshape(node, axis, plan)
    if op == "Flatten":
        if node.attrs.get("axis", 1) == 0 or axis != 0:
            raise _Pinned("flattens the batch into the features")
        return 0
    rank = len(shape(node.inputs[0]) or ())
    if op in _AXIS_OPS and rank and node.attrs.get("axis", _DEFAULT_AXIS.get(op, 0)) % rank == axis:
        raise _Pinned("works along the batch axis")
    if op in _REDUCES and rank and axis in (axes_of(node, rank) or set(range(rank))):
        raise _Pinned("reduces over the batch axis")
    if op in ("Expand", "Tile"):  # a shape computed from Shape(x) follows x's batch; verification runs batch 2
        value = constant(node.inputs[1])
        if value is not None and (value.size <= axis or value.reshape(-1)[axis] != 1):
            raise _Pinned("repeats along the batch axis")
    if op in ("Squeeze", "Unsqueeze") and axis != 0:
        raise _Pinned("moves the batch axis")
    return axis


def _reshape(node: gs.Node, axis: int, plan: BatchPlan) -> int:
    in_shape, out_shape = shape(node.inputs[0]), shape(node.outputs[0])
    target = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if axis == 0 and _batch_major_rows(node):
        return 0
    if target is None:  # computed from Shape at run time: trust what inference says, verification runs batch 2
        if axis == 0 and in_shape and out_shape and out_shape[0] == in_shape[0]:
            return 0
        raise _Pinned("computes a target that does not keep the batch first")
    dims = [int(d) for d in target.reshape(-1)]
    zero_copies = not node.attrs.get("allowzero", 0)
    if axis != 0 or not in_shape or not dims or not all(isinstance(d, int) for d in in_shape):
        raise _Pinned(f"reshapes the batch with target {dims}")
    rest_in = math.prod(in_shape[1:])
    rest_out = [d for d in dims[1:]]
    keeps_rest = -1 in rest_out or math.prod(rest_out) == rest_in
    if keeps_rest and ((dims[0] == 0 and zero_copies) or (dims[0] == -1 and -1 not in rest_out)):
        return 0
    if keeps_rest and dims[0] == in_shape[0]:
        copied = [0, *dims[1:]] if zero_copies else f"Concat(Shape(input)[0:1], {dims[1:]})"
        change = f"target {dims} -> {copied}: the batch is copied, not fixed"
        fix = BackboneFix(node_id(node), "Reshape", change, _BatchTarget(), node, [0, *dims[1:]])
        plan.fixes.append(fix)
        return 0
    raise _Pinned(f"folds the batch into its target {dims}")


def _batch_major_rows(node: gs.Node) -> bool:
    """A Reshape of a rows round trip (a Tensordot) that follows the batch: `[-1, C]` makes the
    batch the outer factor of the rows, which the ops between map alone, and a target computed from
    Shape puts it back first."""
    trip = rows_round_trip(node)
    if trip is None or constant(trip.restore.inputs[1]) is not None:
        return False
    merged = constant(trip.merge.inputs[1])
    return merged is not None and int(merged.reshape(-1)[0]) == -1
