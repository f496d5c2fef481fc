"""A Reshape that only moves size-1 dims is a Transpose, which holds at every size.

tf2onnx writes the NHWC-to-NCHW move of a one-channel map (`[N, H, W, 1] -> [N, 1, H, W]`) as a
Reshape with the exported H and W in its target. The batch stays first, so the Transpose also
holds for other batch sizes.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import Edit, constant, node_id, shape
from .backbone_base import BackboneContext, BackboneFix


def unit_dim_permutation(in_shape: list, target: list[int]) -> list[int] | None:
    """The permutation a Reshape of `in_shape` to `target` performs, if it only moves unit dims.

    The batch (dim 0) may be symbolic when the target copies it (0) or takes the rest (-1).
    """
    if len(in_shape) != len(target) or not all(isinstance(d, int) for d in in_shape[1:]):
        return None
    if target[0] not in (0, -1, in_shape[0]) or list(in_shape[1:]) == list(target[1:]):
        return None
    src = [i for i in range(1, len(in_shape)) if in_shape[i] != 1]
    dst = [i for i in range(1, len(target)) if target[i] != 1]
    if [in_shape[i] for i in src] != [target[i] for i in dst] or any(d < 1 for d in target[1:]):
        return None
    unit_src = [i for i in range(1, len(in_shape)) if in_shape[i] == 1]
    unit_dst = [i for i in range(1, len(target)) if target[i] == 1]
    perm = [0] * len(target)
    for d, i in zip(dst, src, strict=True):
        perm[d] = i
    for d, i in zip(unit_dst, unit_src, strict=True):
        perm[d] = i
    return perm


class UnitDimReshape:
    ops = frozenset({"Reshape"})
    order = 10  # before the channel-shuffle rule, which refuses other Reshapes that pin a size

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if not ctx.fed(id(node)):
            return None  # a weight reshaped at run time: no input size reaches it
        if len(node.inputs) < 2:
            return None
        target, in_shape = constant(node.inputs[1]), shape(node.inputs[0])
        if target is None or in_shape is None:
            return None
        dims = [int(d) for d in target.reshape(-1)]
        perm = unit_dim_permutation(list(in_shape), dims)
        if perm is None:
            return None
        change = f"target {dims} moves only unit dims: Transpose {perm}"
        return BackboneFix(node_id(node), "Reshape", change, self, node, perm)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        node.op = "Transpose"
        while len(node.inputs) > 1:
            node.inputs.pop()
        node.attrs.clear()
        node.attrs["perm"] = list(fix.data)


RULES = [UnitDimReshape()]
