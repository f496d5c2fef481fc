"""fixed_width: an FC layer whose width does not grow with the input (a Dense layer applied at
every position of an NHWC map, as tf2onnx writes Keras's on a 4-D tensor) runs as it is and does
not block the conversion; one whose width grows (an FC across a spatial axis) is still refused."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, relaxed, run
from rule_support import refused

import onnx_fc2conv

C, HIDDEN, M = 4, 6, 5


def _per_position_model(across_width: bool = False) -> onnx.ModelProto:
    """Conv -> Transpose to NHWC -> Reshape [-1, K] -> MatMul -> Reshape back (from Shape, as a
    Keras Tensordot) -> Transpose to NCHW -> GlobalAveragePool -> Flatten -> Gemm, with a symbolic
    batch. `across_width`: the rows are the map's last (width) axis instead, an FC across positions."""
    g = GraphBuilder(opset=13)
    x = backbone(g, g.input("input", ["N", 3, 7, 6]), 3, C)  # [N, 4, 6, 5]
    k = 5 if across_width else C
    nhwc = x if across_width else g.op("Transpose", [x], perm=[0, 2, 3, 1])
    rows = g.op("Reshape", [nhwc, g.const("rows", np.array([-1, k], np.int64))], name="rows")
    mixed = g.op("MatMul", [rows, g.const("w", g.rand((k, HIDDEN)))], name="per_position")
    lead = g.op("Slice", [g.op("Shape", [nhwc]), g.const("s", np.array([0])), g.const("e", np.array([3]))])
    back = g.op("Concat", [lead, g.const("width", np.array([HIDDEN], np.int64))], axis=0)
    y = g.op("Relu", [g.op("Reshape", [mixed, back])])
    nchw = y if across_width else g.op("Transpose", [y], perm=[0, 3, 1, 2])
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [nchw])], axis=1)
    g.output(gemm(g, pooled, C if across_width else HIDDEN, M), shape=["N", M])
    return g.build()


def test_a_dense_layer_at_every_position_stays_as_it_is() -> None:
    model = _per_position_model()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions())
    assert result.verification is not None and result.verification.passed
    assert [h.layers[0].op for h in result.heads] == ["Gemm"]  # the classifier, behind its pool
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("MatMul") == 1 and ops[-1] == "Conv"
    assert any(
        n.startswith("FC layer per_position stays as it is: it reads 4 features per row") for n in result.notices
    )
    for size in ((9, 8), (12, 7)):
        x = big_input((2, 3, *size))
        got = run(result.model, {"input": x})["output"]
        assert got.shape == (2, M, 1, 1)
        assert_close(got.reshape(2, M), run(relaxed(model), {"input": x})["output"])


def test_an_fc_across_a_spatial_axis_is_still_refused() -> None:
    err = refused(_per_position_model(across_width=True))
    assert err.reasons == [
        "per_position: Reshape 'rows' before MatMul 'per_position' is not a flatten to [N, C*H*W]",
    ]


def test_an_fc_layer_on_constants_is_a_weight_and_stays() -> None:
    """An MLP on a fixed table (Swin V2's continuous position bias) reads no input: a weight
    computed at run time, not a head; the classifier behind the pool is rewritten."""
    g = GraphBuilder(opset=13)
    x = backbone(g, g.input("input", [1, 3, 7, 6]), 3, C)
    table = g.op("MatMul", [g.const("table", g.rand((C, 2))), g.const("mlp_w", g.rand((2, 1)))], name="bias_mlp")
    bias = g.op("Reshape", [table, g.const("t", np.array([1, C, 1, 1], np.int64))])
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("Add", [x, bias])])], axis=1)
    g.output(gemm(g, pooled, C, M), shape=[1, M])
    model = g.build()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions())
    assert result.verification is not None and result.verification.passed
    assert "FC layers that read no input compute weights at run time and stay as they are: bias_mlp" in result.notices
    x = big_input((1, 3, 10, 9))
    assert_close(run(result.model, {"input": x})["output"].reshape(1, M), run(relaxed(model), {"input": x})["output"])
