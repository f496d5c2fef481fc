"""Backbone nodes that bake the spatial size into a constant.

A Reshape with a constant target `[N, A.., H, W]` only runs at the exported size. When its last
`s` (spatial) dims copy the input's last `s` dims and its first dim copies the batch (the channel
shuffle of ShuffleNet), the target is rebuilt from `Shape(x)` at run time: exact at every size.
A Resize with constant `sizes` that are an exact multiple of its input becomes a Resize by
`scales`. Anything else that pins a spatial size is refused with the node's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import GraphIndex, attr, node_label
from .heads import Head

_BIG = 2**31 - 1


@dataclass(frozen=True)
class BackboneFix:
    node: str
    op: str
    change: str


def _spatial_count(ix: GraphIndex) -> int:
    ranks = [len(ix.shapes.get(i, ())) for i in ix.graph_inputs]
    image = [r for r in ranks if r >= 3]
    return (max(image) - 2) if image else 0


def _backbone_nodes(ix: GraphIndex, heads: list[Head]) -> list[onnx.NodeProto]:
    if not heads:
        return list(ix.graph.node)
    features = {h.feature for h in heads}
    ids = {id(n) for n in ix.ancestors(features)}
    return [n for n in ix.graph.node if id(n) in ids]


def fix_baked_sizes(
    model: onnx.ModelProto, ix: GraphIndex, heads: list[Head], *, dry_run: bool
) -> tuple[list[BackboneFix], list[str]]:
    """Make size-baking backbone nodes size-agnostic where exact; refusals name the others."""
    s = _spatial_count(ix)
    fixes: list[BackboneFix] = []
    refusals: list[str] = []
    if s == 0:
        return fixes, refusals
    for node in _backbone_nodes(ix, heads):
        if node.op_type == "Reshape":
            _reshape(model, ix, node, s, dry_run, fixes, refusals)
        elif node.op_type == "Resize":
            _resize(model, ix, node, dry_run, fixes, refusals)
        elif node.op_type in ("Expand", "Tile", "ConstantOfShape"):
            _shape_constant(ix, node, s, refusals)
    return fixes, refusals


def _reshape(model, ix: GraphIndex, node, s: int, dry_run: bool, fixes: list, refusals: list) -> None:
    if len(node.input) < 2:  # a Reshape before opset 5: its target is an attribute
        old = attr(node, "shape")
        if old is not None and any(d > 1 for d in list(old)[-s:]) and len(list(old)) >= s + 2:
            refusals.append(f"{node_label(node)} bakes the spatial size into its target shape {list(old)}")
        return
    target = ix.constant(node.input[1])
    in_shape = ix.shape(node.input[0])
    if target is None or in_shape is None or len(in_shape) < s + 1:
        return
    target = [int(d) for d in target.reshape(-1)]
    perm = _unit_dim_permutation(list(in_shape), target)
    if perm is not None:
        fixes.append(BackboneFix(node.name, "Reshape", f"target {target} moves only unit dims: Transpose {perm}"))
        if not dry_run:
            node.op_type = "Transpose"
            del node.input[1:]
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("perm", perm))
        return
    spatial_in = in_shape[-s:]
    if all(d == 1 for d in spatial_in):
        return
    if len(target) >= s + 2 and list(target[-s:]) == list(spatial_in) and (target[0] in (in_shape[0], -1, 0)):
        middle = target[1:-s]
        fixes.append(BackboneFix(node.name, "Reshape", f"target {target} now built from Shape(input)"))
        if not dry_run:
            _reshape_from_shape(model, ix, node, middle, s)
        return
    refusals.append(
        f"{node_label(node)} bakes the spatial size into its target shape {target}; the model cannot run at other sizes"
    )


def _unit_dim_permutation(in_shape: list, target: list[int]) -> list[int] | None:
    """The Transpose equal to a Reshape that only moves size-1 dims (NHWC <-> NCHW with C = 1).

    Dim 0 (the batch) stays first so the Transpose also holds for other batch sizes.
    """
    if len(in_shape) != len(target) or not all(isinstance(d, int) for d in in_shape) or list(in_shape) == target:
        return None
    if in_shape[0] != target[0]:
        return None
    src = [i for i in range(1, len(in_shape)) if in_shape[i] != 1]
    dst = [i for i in range(1, len(target)) if target[i] != 1]
    if [in_shape[i] for i in src] != [target[i] for i in dst] or any(d < 1 for d in target):
        return None
    unit_src = [i for i in range(1, len(in_shape)) if in_shape[i] == 1]
    unit_dst = [i for i in range(1, len(target)) if target[i] == 1]
    perm = [0] * len(target)
    for d, i in zip(dst, src, strict=True):
        perm[d] = i
    for d, i in zip(unit_dst, unit_src, strict=True):
        perm[d] = i
    return perm


def _reshape_from_shape(
    model: onnx.ModelProto, ix: GraphIndex, node: onnx.NodeProto, middle: list[int], s: int
) -> None:
    base = node.name
    shape_out, batch_out, tail_out, new_target = (
        f"{base}_fc2conv_{k}" for k in ("shape", "batch", "spatial", "target")
    )
    middle_name = f"{base}_fc2conv_middle"
    consts = {
        f"{base}_fc2conv_b0": np.array([0], np.int64),
        f"{base}_fc2conv_b1": np.array([1], np.int64),
        f"{base}_fc2conv_s0": np.array([-s], np.int64),
        f"{base}_fc2conv_s1": np.array([_BIG], np.int64),
        middle_name: np.array(middle, np.int64),
    }
    for name, value in consts.items():
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    new_nodes = [
        helper.make_node("Shape", [node.input[0]], [shape_out], name=f"{base}_fc2conv_Shape"),
        helper.make_node(
            "Slice", [shape_out, f"{base}_fc2conv_b0", f"{base}_fc2conv_b1"], [batch_out], name=f"{base}_fc2conv_batch"
        ),
        helper.make_node(
            "Slice", [shape_out, f"{base}_fc2conv_s0", f"{base}_fc2conv_s1"], [tail_out], name=f"{base}_fc2conv_spatial"
        ),
        helper.make_node(
            "Concat", [batch_out, middle_name, tail_out], [new_target], name=f"{base}_fc2conv_Concat", axis=0
        ),
    ]
    index = list(model.graph.node).index(node)
    for offset, new in enumerate(new_nodes):
        model.graph.node.insert(index + offset, new)
    node.input[1] = new_target


def _resize(model, ix: GraphIndex, node, dry_run: bool, fixes: list, refusals: list) -> None:
    if len(node.input) < 4 or not node.input[3]:
        return
    sizes = ix.constant(node.input[3])
    in_shape = ix.shape(node.input[0])
    if sizes is None or in_shape is None or not all(isinstance(d, int) for d in in_shape):
        refusals.append(f"{node_label(node)} resizes to fixed sizes; the model cannot run at other sizes")
        return
    sizes = [int(d) for d in sizes.reshape(-1)]
    ratios = [o / i for o, i in zip(sizes, in_shape, strict=False)]
    exact = len(sizes) == len(in_shape) and all(o % i == 0 for o, i in zip(sizes, in_shape, strict=True))
    if not exact:
        refusals.append(
            f"{node_label(node)} resizes to fixed sizes {sizes} that are not a whole multiple of its input "
            f"{list(in_shape)}; the model cannot run at other sizes"
        )
        return
    fixes.append(BackboneFix(node.name, "Resize", f"sizes {sizes} -> scales {ratios}"))
    if dry_run:
        return
    name = f"{node.name}_fc2conv_scales"
    model.graph.initializer.append(numpy_helper.from_array(np.array(ratios, np.float32), name))
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
    del node.input[3]


def _shape_constant(ix: GraphIndex, node, s: int, refusals: list) -> None:
    shape_input = node.input[1] if node.op_type in ("Expand", "Tile") else node.input[0]
    value = ix.constant(shape_input)
    if value is None or node.op_type == "Tile":
        return
    dims = [int(d) for d in value.reshape(-1)]
    if len(dims) >= s + 2 and any(d > 1 for d in dims[-s:]):
        refusals.append(f"{node_label(node)} expands to the fixed shape {dims}; the model cannot run at other sizes")
