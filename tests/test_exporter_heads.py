"""Heads as exporters write them, spanning several rules: each converts exactly."""

from __future__ import annotations

from builders import GraphBuilder, assert_close, backbone, big_input, conv_params, convert, gemm, ops, relaxed, run

C, M = 4, 5


def test_convnext_layernorm_between_pool_and_fc() -> None:
    g = GraphBuilder(opset=17)
    x = g.input("input", [1, 3, 5, 4])
    feat = backbone(g, x, 3, C, pad=True)
    pooled = g.op("GlobalAveragePool", [feat])
    t = g.op("Transpose", [pooled], perm=[0, 2, 3, 1])
    ln = g.op("LayerNormalization", [t, g.const("ln_s", g.rand((C,))), g.const("ln_b", g.rand((C,)))], axis=-1)
    t = g.op("Transpose", [ln], perm=[0, 3, 1, 2])
    flat = g.op("Flatten", [t], axis=1)
    g.output(gemm(g, flat, C, M))
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == [
        "Conv", "Relu", "GlobalAveragePool", "Transpose", "LayerNormalization", "Transpose", "Conv",
    ]  # fmt: skip
    assert conv_params(out)[1][0].shape == (M, C, 1, 1)
    for shape in [(1, 3, 5, 4), (1, 3, 9, 11)]:
        xv = big_input(shape)
        assert_close(run(out, {"input": xv})["output"].reshape(1, M), run(relaxed(model), {"input": xv})["output"])


def test_mobilenetv3_gemm_hardswish_dropout_gemm() -> None:
    g = GraphBuilder(opset=17)
    x = g.input("input", [1, 3, 5, 4])
    feat = backbone(g, x, 3, C, pad=True)
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [feat])], axis=1)
    y = g.op("HardSwish", [gemm(g, flat, C, 6)])
    y = g.op("Dropout", [y])
    g.output(gemm(g, y, 6, M))
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "GlobalAveragePool", "Conv", "HardSwish", "Dropout", "Conv"]
    assert [k.shape for k, _ in conv_params(out)[1:]] == [(6, C, 1, 1), (M, 6, 1, 1)]
    for shape in [(1, 3, 5, 4), (1, 3, 8, 10)]:
        xv = big_input(shape)
        assert_close(run(out, {"input": xv})["output"].reshape(1, M), run(relaxed(model), {"input": xv})["output"])
