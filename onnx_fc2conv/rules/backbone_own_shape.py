"""Reshape and Expand targets that hold a tensor's own dims, written as constants by a static export.

A static export folds `x.reshape(x.shape)`, `y.expand_as(x)` and the way back of a reshape round
trip (`x.reshape(N, 1, -1)` ... `.reshape(x.shape)`, a GroupNorm) into constant targets. Such a
target equals, at the exported size, the shape of a tensor T of the graph:

- T is the node's own input (a Reshape or Expand to its input's own shape, for example
  `[-1, 320, 1, 1]` on a map that is 1 x 1 only at the exported size): the node is the identity
  there and becomes `Identity`, which it stays at every size;
- T is the start of a reshape round trip (reached through Reshapes and shape-keeping ops, so it
  has the same element count): the target becomes `Shape(T)`;
- T is the other operand of a broadcasting op that reads the Expand (`expand_as`): the target
  becomes `Shape(T)`.

Each rewrite gives the same constant at the exported size, so the model is unchanged there.
A Reshape whose `-1` keeps the batch at the exported size but takes the spatial dims into it at
other sizes is refused, naming the dims its target contradicts.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import Edit, ancestors, constant_ints, node_id, node_label, producer, shape, users
from .backbone_base import BackboneContext, BackboneFix, resolves
from .base import Code, Refusal

_COUNT_KEEPING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_BROADCASTING = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "PRelu", "Where", "And", "Or", "Xor",
     "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "BitShift", "Mod"}
)  # fmt: skip
_ROUND_TRIP_STEPS = 32


def own_shape(target: list[int], dims: tuple | None, allowzero: bool = False) -> bool:
    """`target` (0 copies a dim, one -1 takes the rest) gives exactly `dims`: every other entry
    equals its dim, so the -1 takes the one left (the batch, when it is symbolic)."""
    if dims is None or len(dims) != len(target) or target.count(-1) > 1:
        return False
    return all(t == d or t == -1 or (t == 0 and not allowzero) for t, d in zip(target, dims, strict=True))


def _static(dims: tuple | None) -> bool:
    return dims is not None and all(isinstance(d, int) for d in dims)


def _shape_keeping(ctx: BackboneContext, node: gs.Node) -> bool:
    """One output holding the elements of its first input, in the same number; an op that keeps
    the shape only at the exported size (a Transpose of a square `[N, C, H*W]`, C = H*W, that
    swaps channels and positions) is no step of a round trip, so the probe must agree."""
    if node.op in _COUNT_KEEPING:
        return True
    if len(node.outputs) != 1 or not node.inputs or shape(node.outputs[0]) != shape(node.inputs[0]):
        return False
    before, after = ctx.probe(node.inputs[0]), ctx.probe(node.outputs[0])
    return before is None or after is None or before == after


def round_trip_start(ctx: BackboneContext, tensor: gs.Tensor, target: list[int]) -> gs.Tensor | None:
    """The nearest tensor upstream of `tensor`, through Reshapes and shape-keeping ops, whose
    shape the target holds (a Reshape on the way is judged on its own)."""
    for _ in range(_ROUND_TRIP_STEPS):
        node = producer(tensor)
        if node is None or not ctx.fed(id(node)) or not _shape_keeping(ctx, node):
            return None
        tensor = node.inputs[0]
        if _static(shape(tensor)) and own_shape(target, shape(tensor)):
            return tensor
    return None


def broadcast_partner(node: gs.Node, target: list[int]) -> gs.Tensor | None:
    """The other operand of a broadcasting op reading the node's output, of shape `target`, if it
    does not depend on the node itself (`y.expand_as(x)` -> x, `x * interpolate(g, x.shape[-2:])` -> x)."""
    out = node.outputs[0]
    for user in users(out):
        if user.op not in _BROADCASTING:
            continue
        for other in user.inputs:
            if other is out or not _static(shape(other)) or list(shape(other)) != target:
                continue
            if all(n is not node for n in ancestors([other])):
                return other
    return None


def _folds_spatial_into_batch(target: list[int], dims: tuple, probe: tuple | None) -> bool:
    """A leading -1 that is the batch at the exported size and batch x spatial dims at the probe."""
    if target[0] != -1 or len(dims) < 2 or any(t <= 0 for t in target[1:]) or not _static(dims[1:]):
        return False
    if probe is None or not _static(probe[1:]):
        return False
    rest = math.prod(target[1:])
    return rest == math.prod(dims[1:]) and rest != math.prod(probe[1:]) and math.prod(probe[1:]) % rest == 0


def _constant_target(ctx: BackboneContext, node: gs.Node) -> tuple[list[int], gs.Tensor, tuple] | None:
    """A Reshape fed by an image input: its constant target, its data and the data's shape (None:
    not a candidate)."""
    if not ctx.fed(id(node)) or len(node.inputs) < 2:
        return None
    target, data = constant_ints(node.inputs[1]), node.inputs[0]
    in_shape = shape(data)
    if target is None or in_shape is None:
        return None
    return target, data, in_shape


class OwnShapeReshape:
    ops = frozenset({"Reshape"})
    order = 20  # after the unit-dim Transpose, before the channel-shuffle rule's refusals

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        found = _constant_target(ctx, node)
        if found is None:
            return None
        target, data, in_shape = found
        allowzero = bool(node.attrs.get("allowzero", 0))
        probe = ctx.probe(data)
        if own_shape(target, in_shape, allowzero):
            if own_shape(target, probe, allowzero):
                return None  # the identity at every size as it is
            return BackboneFix(
                node_id(node), "Reshape", f"target {target} is its input's own shape: Identity", self, node
            )
        if resolves(target, probe, allowzero):
            return None
        start = round_trip_start(ctx, data, target)
        if start is None:
            return None
        change = f"target {target} now Shape({start.name}), the tensor its reshape round trip started from"
        return BackboneFix(node_id(node), "Reshape", change, self, node, start.name)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        rewrite_target(fix, edit)


class BatchFoldingReshape:
    """What no other Reshape rule took: a leading -1 that is the batch only at the exported size."""

    ops = frozenset({"Reshape"})
    order = 60  # after the channel-shuffle rule, which rebuilds targets that keep the spatial dims

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        found = _constant_target(ctx, node)
        if found is None:
            return None
        target, data, in_shape = found
        if _folds_spatial_into_batch(target, in_shape, ctx.probe(data)):
            raise Refusal(
                Code.BAKED_SIZE,
                f"{node_label(node)} keeps the batch at the exported size only: its target {target} holds "
                f"{math.prod(target[1:])} elements per image, the exported {list(in_shape[1:])}; "
                "at other sizes its -1 takes the spatial dims into the batch",
            )
        return None

    def rewrite(self, fix: BackboneFix, edit: object) -> None:
        """Never matched with a fix."""


class OwnShapeExpand:
    ops = frozenset({"Expand"})
    order = 20  # before the fixed-shape refusal

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not ctx.fed(id(node)):
            return None
        target, in_shape = constant_ints(node.inputs[1]), shape(node.inputs[0])
        if target is None:
            return None
        if _static(in_shape) and list(in_shape) == target:
            return BackboneFix(
                node_id(node), "Expand", f"target {target} is its input's own shape: Identity", self, node
            )
        other = broadcast_partner(node, target)
        if other is None:
            return None
        change = f"target {target} now Shape({other.name}), the operand it is expanded against"
        return BackboneFix(node_id(node), "Expand", change, self, node, other.name)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        rewrite_target(fix, edit)


def rewrite_target(fix: BackboneFix, edit: Edit) -> None:
    """Identity (no tensor named) or the target taken from `Shape(T)` at run time."""
    node = fix.target
    if fix.data is None:
        node.op = "Identity"
        while len(node.inputs) > 1:
            node.inputs.pop()
        node.attrs.clear()
        return
    source = edit.graph.tensors()[fix.data]
    base = node.name or node.outputs[0].name
    dims = edit.variable(f"{base}_fc2conv_shape")
    edit.add_node("Shape", f"{base}_fc2conv_Shape", [source], [dims], at=node)
    node.inputs[1] = dims


RULES = [OwnShapeReshape(), OwnShapeExpand(), BatchFoldingReshape()]
