"""rules/flatten_channel_last: an elementwise op joining two branches from one per-location tensor
(tf2onnx's GELU between ConvNeXt's two pointwise Dense layers) keeps the channel-last axes, so the
second Tensordot stays in the backbone as the first does."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, relaxed, run

import onnx_fc2conv

C, K, M = 4, 6, 5


def _tensordot(g: GraphBuilder, x: str, width: int, units: int, name: str) -> str:
    """Reshape [-1, width] -> MatMul -> Reshape back to x's leading dims (from Shape) -> Add bias."""
    rows = g.op("Reshape", [x, g.const("rows", np.array([-1, width], np.int64))], name=f"{name}_merge")
    dot = g.op("MatMul", [rows, g.const("w", g.rand((width, units)))], name=name)
    ends = [g.const(n, np.array([v], np.int64)) for n, v in [("s", 0), ("e", 3)]]
    target = g.op("Concat", [g.op("Slice", [g.op("Shape", [x]), *ends]), g.const("k", np.array([units]))], axis=0)
    return g.op("Add", [g.op("Reshape", [dot, target]), g.const("b", g.rand((units,)))])


def _gelu_between_dense_layers() -> onnx.ModelProto:
    g = GraphBuilder()
    last = g.op("Transpose", [backbone(g, g.input("input", ["N", 3, 5, 6]), 3, C)], perm=[0, 2, 3, 1])
    hidden = _tensordot(g, last, C, K, "pointwise_1")
    half = g.op("Mul", [hidden, g.const("half", np.array(0.5, np.float32))])
    erf = g.op("Erf", [g.op("Div", [hidden, g.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    gelu = g.op("Mul", [half, g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))])], name="gelu")
    mapped = _tensordot(g, gelu, K, C, "pointwise_2")
    pooled = g.op("ReduceMean", [mapped], axes=[1, 2], keepdims=0, name="pool")
    g.output(gemm(g, pooled, C, M, name="fc"))
    return g.build()


def test_a_gelu_between_two_dense_layers_on_the_map_keeps_them_in_the_backbone() -> None:
    model = _gelu_between_dense_layers()
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed
    assert [h.layers[0].names for h in result.heads] == [("fc",)]
    assert [n.op_type for n in result.model.graph.node].count("MatMul") == 2  # both Dense layers stay
    for size in ((9, 8), (12, 7)):
        x = big_input((2, 3, *size))
        got = run(result.model, {"input": x})["output"]
        assert got.shape == (2, M, 1, 1)
        assert_close(got.reshape(2, M), run(relaxed(model), {"input": x})["output"])
