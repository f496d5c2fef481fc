"""runtime_weights: an FC layer that reads no input (a weight computed from constants) runs as it
is and does not block the conversion."""

from __future__ import annotations

import numpy as np
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, relaxed, run

import onnx_fc2conv

C, M = 4, 5


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
