"""rules/backbone_spatial_merge: a Reshape that merges all spatial dims into one (`x.view(B, C, H*W)`
in global-context attention), with the product baked in, gets `-1` for it at run time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, run
from rule_support import refused

import onnx_fc2conv

C, M = 4, 5


def _context_model(size: tuple[int, int], allowzero: int = 0) -> onnx.ModelProto:
    """Global-context attention on the map x [1, C, h, w]: softmax over the h*w positions of a 1x1
    Conv, the map's channels pooled by it, added back; then a pooled classifier. Same seeded
    weights at every `size`; the merges' targets are the constants a static export writes there."""
    g = GraphBuilder(opset=14)
    x = backbone(g, g.input("input", [1, 3, *size]), 3, C)
    hw = (size[0] - 1) * (size[1] - 1)
    attn = g.op("Conv", [x, g.const("attn_w", g.rand((1, C, 1, 1)))], kernel_shape=[1, 1])
    t1 = g.const("t1", np.array([1, 1, hw], np.int64))
    merged = g.op("Reshape", [attn, t1], name="merge_attn", allowzero=allowzero)
    weights = g.op("Transpose", [g.op("Softmax", [merged], axis=-1)], perm=[0, 2, 1])  # [1, hw, 1]
    t2 = g.const("t2", np.array([1, C, hw], np.int64))
    flat = g.op("Reshape", [x, t2], name="merge_map", allowzero=allowzero)
    context = g.op("Reshape", [g.op("MatMul", [flat, weights]), g.const("t3", np.array([1, C, 1, 1], np.int64))])
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("Add", [x, context])])], axis=1)
    g.output(gemm(g, pooled, C, M), shape=[1, M])
    return g.build()


@pytest.mark.parametrize("allowzero", [0, 1])
def test_spatial_merge_follows_the_size(allowzero: int) -> None:
    result = onnx_fc2conv.convert(_context_model((7, 6), allowzero), onnx_fc2conv.ConvertOptions())
    assert result.verification is not None and result.verification.passed
    assert {c.check for c in result.verification.comparisons} == {"same size", "larger size"}
    changes = [(f.node, f.change) for f in result.backbone_fixes]
    merged = "now Shape(input)[0:2] + [-1]: the spatial dims merged at every size"
    assert changes[:2] == [("merge_attn", f"target [1, 1, 30] {merged}"), ("merge_map", f"target [1, 4, 30] {merged}")]
    for size in ((9, 8), (12, 7)):
        x = big_input((1, 3, *size))
        expected = run(_context_model(size, allowzero), {"input": x})["output"]
        assert_close(run(result.model, {"input": x})["output"].reshape(1, M), expected)


def test_a_merge_of_some_spatial_dims_is_refused() -> None:
    g = GraphBuilder(opset=14)
    x = backbone(g, g.input("input", [1, 3, 7, 6]), 3, C)  # [1, 4, 6, 5]
    rows = g.op("Reshape", [x, g.const("t", np.array([1, C * 6, 5], np.int64))], name="rows")
    back = g.op("Reshape", [g.op("Relu", [rows]), g.const("t2", np.array([1, C, 6, 5], np.int64))], name="back")
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [back])], axis=1)
    g.output(gemm(g, pooled, C, M), shape=[1, M])
    err = refused(g.build())
    assert err.reasons == [
        "Reshape 'rows' bakes the spatial size into its target shape [1, 24, 5]; the model cannot run at other sizes"
    ]
