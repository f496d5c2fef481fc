"""rules/backbone_shuffle_reshape: a Reshape that keeps its input's batch and spatial dims (a channel
shuffle) gets its target from `Shape` at run time; other Reshapes that bake the size are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_sliding, backbone, big_input, convert, gemm, ops
from rule_support import backbone_refusals, refused

from onnx_fc2conv.rules.backbone_base import resolves
from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def _image(g: GraphBuilder) -> str:
    """input [1, 3, 5, 4] -> Conv/Relu -> [1, 4, 4, 3]"""
    return backbone(g, g.input("input", [1, 3, 5, 4]), 3, C)


def _shuffle_model() -> onnx.ModelProto:
    g = GraphBuilder()
    feat = _image(g)  # [1, 4, 4, 3]
    groups = g.op("Reshape", [feat, g.const("t5", np.array([1, 2, 2, 4, 3], np.int64))], name="shuffle_split")
    swapped = g.op("Transpose", [groups], perm=[0, 2, 1, 3, 4])
    merged = g.op("Reshape", [swapped, g.const("t4", np.array([1, 4, 4, 3], np.int64))], name="shuffle_merge")
    mixed = backbone(g, merged, C, C)  # [1, 4, 3, 2]
    flat = g.op("Flatten", [mixed], axis=1)
    g.output(gemm(g, flat, C * 3 * 2, M))
    return g.build()


def test_channel_shuffle_reshape_made_size_agnostic() -> None:
    model = _shuffle_model()
    result = convert(model)
    assert {f.node for f in result.backbone_fixes} == {"shuffle_split", "shuffle_merge"}
    out = result.model
    assert ops(out).count("Shape") == 2 and ops(out)[-1] == "Conv"
    assert {c.check for c in result.verification.comparisons} == {"same size", "larger size"}
    assert_sliding(model, out, big_input((1, 3, 8, 7)), window=(5, 4))


def test_reshape_baking_size_is_refused() -> None:
    g = GraphBuilder()
    feat = _image(g)  # [1, 4, 4, 3]
    # the spatial dims regrouped (4 x 3 as 2 x 6): no size but the exported one has such a split
    flat_hw = g.op("Reshape", [feat, g.const("t", np.array([1, 4, 2, 6], np.int64))], name="bake")
    sm = g.op("Softmax", [flat_hw], axis=-1)
    back = g.op("Reshape", [sm, g.const("t2", np.array([1, 4, 4, 3], np.int64))], name="unbake")
    g.output(gemm(g, g.op("Flatten", [back], axis=1), 48, M))
    model = g.build()
    err = refused(model)
    assert err.reasons[0] == (
        "Reshape 'bake' bakes the spatial size into its target shape [1, 4, 2, 6]; the model cannot run at other sizes"
    )
    assert str(err) == err.reasons[0]
    # the way back to [1, 4, 4, 3] is the end of a reshape round trip from the map: it follows
    # Shape(map) (rules/backbone_own_shape), so only the node that truly pins the size is named
    assert backbone_refusals(model) == [("bake", Code.BAKED_SIZE, err.reasons[0])]


def _torch_pad(g: GraphBuilder, x: str) -> str:
    """torch's ONNX export of a constant pad of 1: the pads are computed from constants through
    ConstantOfShape, Reshape, Slice, Transpose and Cast, where onnx's shape inference loses them."""
    zero = onnx.helper.make_tensor("v", onnx.TensorProto.INT64, [1], [0])
    zeros = g.op("ConstantOfShape", [g.const("n", np.array([4], np.int64))], value=zero)
    pads = g.op("Concat", [g.const("p", np.array([1, 1, 1, 1], np.int64)), zeros], axis=0)
    pairs = g.op("Reshape", [pads, g.const("t", np.array([-1, 2], np.int64))])
    ends = [g.const(k, np.array([v], np.int64)) for k, v in (("s0", -1), ("s1", -(2**63) + 1), ("ax", 0), ("st", -1))]
    reversed_pairs = g.op("Slice", [pairs, *ends])
    flat = g.op("Reshape", [g.op("Transpose", [reversed_pairs], perm=[1, 0]), g.const("t1", np.array([-1], np.int64))])
    return g.op("Pad", [x, g.op("Cast", [flat], to=7), g.const("zero", np.array(0.0, np.float32))], mode="constant")


def test_group_norm_reshape_after_a_computed_pad_needs_nothing() -> None:
    """GroupNorm's `[0, G, -1]` after a Pad whose pads are computed (timm's ResNetV2 stem): the
    probe at a larger size still knows the Pad's output, so the target is seen to fit there."""
    g = GraphBuilder()
    padded = _torch_pad(g, _image(g))  # [1, 4, 6, 5]
    grouped = g.op("Reshape", [padded, g.const("g", np.array([0, 2, -1], np.int64))], name="group_norm_split")
    scale, bias = g.const("sc", np.ones(2, np.float32)), g.const("b", np.zeros(2, np.float32))
    normed = g.op("InstanceNormalization", [grouped, scale, bias])
    back = g.op("Reshape", [normed, g.op("Shape", [padded])])
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [back])], axis=1)
    g.output(gemm(g, pooled, C, M))
    model = g.build()
    result = convert(model)
    assert result.backbone_fixes == []
    assert result.valid_sizes.step == (1, 1)
    assert {c.check for c in result.verification.comparisons} == {"same size", "larger size"}
    assert ops(result.model)[-3:] == ["Reshape", "GlobalAveragePool", "Conv"]


@pytest.mark.parametrize(
    ("target", "in_shape", "fits"),
    [
        ([-1, 4], ("N", 6, 5, 4), True),  # Keras's Dense at every position: -1 takes the batch too
        ([-1, 7], ("N", 6, 5, 4), False),  # 7 does not divide the known 120
        ([0, -1], ("N", 6, 5, 4), True),
        ([0, 120], ("N", 6, 5, 4), True),
        ([0, 121], ("N", 6, 5, 4), False),
        ([1, 120], ("N", 6, 5, 4), True),  # fits, pinning the batch alone (batch.py judges that)
        ([-1, 5, 4], (2, 6, 5, 4), True),
        ([-1, 5, 4], None, False),
    ],
)
def test_resolves_with_a_symbolic_batch(target: list[int], in_shape: tuple | None, fits: bool) -> None:
    assert resolves(target, in_shape) is fits
