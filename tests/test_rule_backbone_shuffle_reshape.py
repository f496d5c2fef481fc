"""rules/backbone_shuffle_reshape: a Reshape that keeps its input's batch and spatial dims (a channel
shuffle) gets its target from `Shape` at run time; other Reshapes that bake the size are refused."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, assert_sliding, backbone, big_input, convert, gemm, ops
from rule_support import backbone_refusals, refused

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
    flat_hw = g.op("Reshape", [feat, g.const("t", np.array([1, 4, 12], np.int64))], name="bake")
    sm = g.op("Softmax", [flat_hw], axis=-1)
    back = g.op("Reshape", [sm, g.const("t2", np.array([1, 4, 4, 3], np.int64))], name="unbake")
    g.output(gemm(g, g.op("Flatten", [back], axis=1), 48, M))
    model = g.build()
    err = refused(model)
    assert err.reasons[0] == (
        "Reshape 'bake' bakes the spatial size into its target shape [1, 4, 12]; the model cannot run at other sizes"
    )
    assert str(err) == err.reasons[0]
    # the way back to [1, 4, 4, 3] is the end of a reshape round trip from the map: it follows
    # Shape(map) (rules/backbone_own_shape), so only the node that truly pins the size is named
    assert backbone_refusals(model) == [("bake", Code.BAKED_SIZE, err.reasons[0])]
