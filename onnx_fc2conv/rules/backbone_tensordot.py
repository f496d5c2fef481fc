"""A Tensordot exported with a fixed batch: constant targets of the exported size follow the input.

tf2onnx writes a Keras `Dense` on a channel-last map X `[N, H, W, C]` as `Reshape [N*H*W, C] ->
MatMul [C, K] -> Reshape [N, H, W, K]` (rules/flatten_channel_last). With a symbolic batch both
targets come from `Shape(X)`; with a fixed batch tf2onnx folds them into constants of the exported
size, `[49, 16]` and `[1, 7, 7, 12]`, and the model runs at that size only.

Row `(n*H + h)*W + w` of the `[N*H*W, C]` matrix is location `(n, h, w)` at every size. When what
runs between the two Reshapes maps each row alone (an FC whose constant weight is `[C, K]` on the
last axis, its bias per feature or a scalar; elementwise ops whose constants broadcast along the
last axis), the round trip is the same function at every size, so:

    Reshape(X, [P, C])           -> Reshape(X, [-1, C])                         (P = N*H*W at export)
    Reshape(rows, [N, H, W, K])  -> Reshape(rows, Concat(Shape(X)[:-1], [K]))

Both give the exported constants at the exported size, so the model is unchanged there. A round trip
that does anything else (an FC that mixes rows, a per-row constant, a way back that does not put
the rows back at the locations of X) is refused, naming the first Reshape whose target is baked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Edit, constant_ints, constant_shape, node_id, node_label, producer, shape, users
from .backbone_base import BackboneContext, BackboneFix
from .base import Code, Refusal
from .flatten_channel_last import keeps_last_axis, row_fc_fault
from .tail_elementwise import Elementwise

_FC = frozenset({"MatMul", "Gemm"})
_PER_ROW = Elementwise.ops | {"Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min"}
_MAX_STEPS = 16


@dataclass(frozen=True, eq=False)
class RowsRoundTrip:
    """`merge` (X to rows `[P, C]`), the ops on the rows, `restore` (rows back to X's rank)."""

    merge: gs.Node
    steps: tuple[gs.Node, ...]
    restore: gs.Node
    source: tuple[int, ...]  # X's exported shape

    @property
    def locations(self) -> list[int]:
        return list(self.source[:-1])


def _target(node: gs.Node) -> list[int] | None:
    return constant_ints(node.inputs[1]) if len(node.inputs) > 1 else None


def _static(dims: tuple | None) -> bool:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims)


def _merges_locations(node: gs.Node) -> tuple[int, ...] | None:
    """X's exported shape when `node` reshapes a static X of rank 3+ to `[P, C]` or `[-1, C]`
    (P = X's element count over C: the locations, rows in order, channels kept)."""
    source, target = shape(node.inputs[0]), _target(node)
    if node.op != "Reshape" or target is None or not _static(source) or len(source) < 3 or len(target) != 2:
        return None
    dims = tuple(int(d) for d in source)
    return dims if target[1] == dims[-1] and target[0] in (-1, math.prod(dims[:-1])) else None


def _data_input(node: gs.Node) -> gs.Tensor | None:
    data = [t for t in node.inputs if t.name and constant_shape(t) is None]
    return data[0] if len(data) == 1 else None


def _round_trip_from(merge: gs.Node) -> RowsRoundTrip | None:
    """The round trip `merge` starts: its rows through one user each (FCs and elementwise ops) to
    a Reshape back to X's rank; None when the rows go anywhere else."""
    source = _merges_locations(merge)
    if source is None:
        return None
    tensor, steps = merge.outputs[0], []
    for _ in range(_MAX_STEPS):
        found = users(tensor)
        if len(found) != 1 or len(found[0].outputs) != 1:
            return None
        node = found[0]
        if node.op == "Reshape" and node.inputs[0] is tensor:
            target = _target(node)
            rank = len(target) if target is not None else len(shape(node.outputs[0]) or ())
            return RowsRoundTrip(merge, tuple(steps), node, source) if rank == len(source) else None
        if node.op not in _FC | _PER_ROW:
            return None
        steps.append(node)
        tensor = node.outputs[0]
    return None


def _round_trip_to(restore: gs.Node) -> RowsRoundTrip | None:
    """The round trip `restore` ends, found from the merge it leads back to."""
    tensor = restore.inputs[0]
    for _ in range(_MAX_STEPS):
        node = producer(tensor)
        if node is None:
            return None
        if node.op == "Reshape":
            found = _round_trip_from(node)
            return found if found is not None and found.restore is restore else None
        data = _data_input(node) if node.op in _FC | _PER_ROW else None
        if data is None:
            return None
        tensor = data
    return None


def _fault(trip: RowsRoundTrip) -> str | None:
    """Why the round trip is not one function of each row at every size (None: it is)."""
    rows, width = trip.merge.outputs[0], trip.source[-1]
    for node in trip.steps:
        if node.op in _FC:
            fault, width = row_fc_fault(node, rows, width)
            if fault is not None:
                return fault
        elif keeps_last_axis(node, 2) is not rows:
            return f"{node_label(node)} on the rows is not the same for each row"
        rows = node.outputs[0]
    wanted = [*trip.locations, width]
    target = _target(trip.restore)
    back = target if target is not None else list(shape(trip.restore.outputs[0]) or ())
    fits = len(back) == len(wanted) and back.count(-1) <= 1
    if not fits or not all(b in (w, -1) for b, w in zip(back, wanted, strict=True)):
        return (
            f"{node_label(trip.restore)} puts the rows back as {back}, not at the locations "
            f"{trip.locations} of {node_label(trip.merge)}'s input (with {width} features)"
        )
    return None


def rows_round_trip(node: gs.Node) -> RowsRoundTrip | None:
    """The round trip that `node` (a Reshape) starts or ends, if any."""
    return _round_trip_from(node) or _round_trip_to(node)


class TensordotTargets:
    ops = frozenset({"Reshape"})
    order = 15  # before the round-trip rule (a Dense of C units on C channels) and the refusals

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not ctx.fed(id(node)) or len(node.inputs) < 2:
            return None
        trip = rows_round_trip(node)
        if trip is None:
            return None
        merge_target, restore_target = _target(trip.merge), _target(trip.restore)
        merge_baked = merge_target is not None and merge_target[0] != -1
        baked = trip.merge if merge_baked else trip.restore if restore_target is not None else None
        if (node is trip.merge and not merge_baked) or (node is trip.restore and restore_target is None):
            return None  # its target follows the input already
        fault = _fault(trip)
        if fault is not None:
            if node is not baked:
                return None  # the first baked Reshape of the round trip gave the reason
            raise Refusal(
                Code.TENSORDOT_LAYOUT,
                f"{node_label(node)} bakes the spatial size into its target shape {_target(node)}, "
                f"and its rows cannot follow other sizes: {fault}",
            )
        if node is trip.merge:
            change = f"target {merge_target} -> [-1, {trip.source[-1]}]"
            return BackboneFix(node_id(node), "Reshape", change, self, node, None)
        change = f"target {restore_target} -> Concat(Shape({trip.merge.inputs[0].name})[:-1], [{restore_target[-1]}])"
        return BackboneFix(node_id(node), "Reshape", change, self, node, trip.merge.inputs[0].name)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        base = node.name or node.outputs[0].name
        if fix.data is None:  # the merge: as many rows as locations
            channels = int(_target(node)[1])  # type: ignore[index]
            node.inputs[1] = edit.constant(f"{base}_fc2conv_rows", np.array([-1, channels], np.int64))
            return
        source_name = fix.data
        width = int(_target(node)[-1])  # type: ignore[index]  # K, or a -1 that takes it
        source_tensor = edit.graph.tensors()[source_name]
        dims, leading, target = (edit.variable(f"{base}_fc2conv_{k}") for k in ("shape", "locations", "target"))

        def ints(key: str, value: list[int]) -> gs.Constant:
            return edit.constant(f"{base}_fc2conv_{key}", np.array(value, np.int64))

        edit.add_node("Shape", f"{base}_fc2conv_Shape", [source_tensor], [dims], at=node)
        ends = [ints("l0", [0]), ints("l1", [-1])]
        edit.add_node("Slice", f"{base}_fc2conv_locations", [dims, *ends], [leading], at=node)
        edit.add_node("Concat", f"{base}_fc2conv_Concat", [leading, ints("width", [width])], [target], axis=0, at=node)
        node.inputs[1] = target


RULES = [TensordotTargets()]
