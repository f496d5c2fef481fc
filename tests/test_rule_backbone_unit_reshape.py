"""rules/backbone_unit_reshape: a Reshape that only moves size-1 dims (tf2onnx's NHWC-to-NCHW move of
a one-channel image) becomes a Transpose, which holds at every size."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, assert_sliding, backbone, big_input, convert, dims, gemm, ops

from onnx_fc2conv.rules.backbone_unit_reshape import unit_dim_permutation

C, M = 4, 5


def _one_channel_nhwc_model() -> onnx.ModelProto:
    """input [1, 5, 4, 1] -> Reshape [1, 1, 5, 4] -> Conv/Relu -> Flatten -> Gemm."""
    g = GraphBuilder(opset=13)
    x = g.input("input", [1, 5, 4, 1])
    nchw = g.op("Reshape", [x, g.const("target", np.array([1, 1, 5, 4], np.int64))], name="to_nchw")
    flat = g.op("Flatten", [backbone(g, nchw, 1, C)], axis=1)
    g.output(gemm(g, flat, C * 4 * 3, M))
    return g.build()


def test_unit_dim_reshape_becomes_transpose() -> None:
    model = _one_channel_nhwc_model()
    result = convert(model)
    assert [(f.node, f.op) for f in result.backbone_fixes] == [("to_nchw", "Reshape")]
    out = result.model
    assert ops(out) == ["Transpose", "Conv", "Relu", "Conv"]
    transpose = out.graph.node[0]
    assert [list(a.ints) for a in transpose.attribute if a.name == "perm"] == [[0, 3, 1, 2]]
    assert dims(out.graph.input[0])[1:] == ["height", "width", 1]
    assert_sliding(model, out, big_input((1, 8, 7, 1)), window=(5, 4), spatial_axes=(1, 2))


def test_unit_dim_permutation() -> None:
    assert unit_dim_permutation([1, 5, 4, 1], [1, 1, 5, 4]) == [0, 3, 1, 2]
    assert unit_dim_permutation([2, 1, 5, 4], [2, 5, 4, 1]) == [0, 2, 3, 1]
    # more than unit dims move, the batch moves, or nothing changes: not a Transpose
    assert unit_dim_permutation([1, 5, 4, 1], [1, 4, 5, 1]) is None
    assert unit_dim_permutation([2, 5, 4, 1], [1, 2, 5, 4]) is None
    assert unit_dim_permutation([1, 5, 4, 1], [1, 5, 4, 1]) is None
