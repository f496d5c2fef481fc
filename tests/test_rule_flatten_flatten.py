"""rules/flatten_flatten: `Flatten(axis=1)` of a map `[N, C, *S]` before the first FC layer."""

from __future__ import annotations

import pytest
from builders import (
    GraphBuilder,
    assert_sliding,
    backbone,
    big_input,
    conv_params,
    convert,
    dims,
    gemm,
    image_model,
    ops,
)
from rule_support import refused, skipped, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5
K = C * 4 * 3


@pytest.mark.parametrize(
    ("spatial", "names", "big"),
    [((6,), ["length"], (9,)), ((3, 4, 3), ["depth", "height", "width"], (4, 6, 5))],
)
def test_other_spatial_ranks(spatial: tuple[int, ...], names: list[str], big: tuple[int, ...]) -> None:
    model = image_model(lambda g, x, k: g.op("Relu", [gemm(g, x, k, M)]), spatial=spatial)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu"]
    kernel = conv_params(out)[1][0]
    assert kernel.shape == (M, C, *(s - 1 for s in spatial))
    assert dims(out.graph.input[0]) == ["N", 3, *names]
    assert dims(out.graph.output[0]) == ["N", M, *(f"out_{n}" for n in names)]
    axes = tuple(range(2, 2 + len(spatial)))
    assert_sliding(model, out, big_input((2, 3, *big)), window=spatial, spatial_axes=axes)


def test_flatten_of_the_graph_input_itself() -> None:
    """No backbone: the input [N, C, H, W] is the feature map; the head becomes one Conv on it."""
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 4, 3])
    g.output(gemm(g, g.op("Flatten", [x], axis=1), 36, M))
    model = g.build()
    result = convert(model)
    assert ops(result.model) == ["Conv"]
    assert conv_params(result.model)[0][0].shape == (M, 3, 4, 3)
    assert_sliding(model, result.model, big_input((2, 3, 6, 7)), window=(4, 3))


@pytest.mark.parametrize("axis", [1, -3])
def test_flatten_axis_spelled_negative(axis: int) -> None:
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    g.output(gemm(g, g.op("Flatten", [backbone(g, x, 3, C)], axis=axis), K, M))
    model = g.build()
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
    assert_sliding(model, result.model, big_input((1, 3, 6, 6)), window=(5, 4))


def test_flatten_at_other_axis() -> None:
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[4, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            fl = Flatten <axis = 2> (conv)
            fc = Gemm <transB = 1> (fl, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(M, 12),
        b=(M,),
    )
    err = refused(model)
    assert err.reasons == ["fc: Flatten 'fl' flattens at axis 2, not 1"]
    assert skipped(model) == [("fc", Code.FLATTEN_AXIS, "Flatten 'fl' flattens at axis 2, not 1")]
