"""rules/flatten_mlp: a plain MLP reading a graph input `[N, K]` becomes 1 x 1 Convs on `[N, K, *S]`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, big_input, conv_params, convert, dims, gemm, ops, run
from rule_support import refused, skipped, text_model

from onnx_fc2conv.rules.base import Code

QUESTION_W = np.array([[0, 1, 1], [2, 3, 5]], np.float32)
QUESTION_B = np.array([8, 13], np.float32)


def _question_model() -> onnx.ModelProto:
    g = GraphBuilder()
    x = g.input("input", ["N", 3])
    y = g.op("Gemm", [x, g.const("W", QUESTION_W, exact_name=True), g.const("b", QUESTION_B, exact_name=True)],
             transB=1)  # fmt: skip
    g.output(g.op("Relu", [y]))
    return g.build()


@pytest.mark.parametrize("source", ["built", "golden"])
def test_question_mlp(source: str, models_dir) -> None:
    model = _question_model() if source == "built" else onnx.load(str(models_dir / "question_mlp.onnx"))
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu"]
    kernel, bias = conv_params(out)[0]
    np.testing.assert_array_equal(kernel, np.array([[[[0]], [[1]], [[1]]], [[[2]], [[3]], [[5]]]], np.float32))
    np.testing.assert_array_equal(bias, [8, 13])
    conv = out.graph.node[0]
    assert {a.name: list(a.ints) for a in conv.attribute if a.name in ("kernel_shape", "pads")} == {
        "kernel_shape": [1, 1],
        "pads": [0, 0, 0, 0],
    }
    in_dims = dims(out.graph.input[0])
    assert in_dims[1:] == [3, "height", "width"] and isinstance(in_dims[0], str)
    assert dims(out.graph.output[0])[1:] == [2, "out_height", "out_width"]
    assert result.heads[0].kind == "mlp"
    # any [N, 3, H, W]: every pixel is ReLU(W x + b)
    for shape in [(1, 3, 1, 1), (2, 3, 4, 7), (3, 3, 5, 2)]:
        x = big_input(shape)
        y = run(out, {out.graph.input[0].name: x})[out.graph.output[0].name]
        expected = np.maximum(np.einsum("mk,nkhw->nmhw", QUESTION_W, x) + QUESTION_B[None, :, None, None], 0)
        assert_close(y, expected)
    # the integer example itself: x = [1, 2, 3] -> [max(0+2+3+8, 0), 2+6+15+13] = [13, 36]
    x = np.broadcast_to(np.array([1, 2, 3], np.float32)[None, :, None, None], (1, 3, 2, 2)).copy()
    y = run(out, {out.graph.input[0].name: x})[out.graph.output[0].name]
    assert_close(y, np.broadcast_to(np.array([13, 36], np.float32)[None, :, None, None], (1, 2, 2, 2)))


@pytest.mark.parametrize("rank", [1, 3])
def test_mlp_spatial_rank_option(rank: int) -> None:
    result = convert(_question_model(), mlp_spatial_rank=rank)
    names = {1: ["length"], 3: ["depth", "height", "width"]}[rank]
    assert dims(result.model.graph.input[0])[1:] == [3, *names]
    assert conv_params(result.model)[0][0].shape == (2, 3, *([1] * rank))


def test_mlp_hidden_layer_and_legacy_softmax() -> None:
    """An MLP at opset 11 with Softmax(axis=1): every pixel of [N, K, H, W] is the MLP of that pixel."""
    g = GraphBuilder(opset=11)
    x = g.input("input", ["N", 3])
    y = g.op("Relu", [gemm(g, x, 3, 4)])
    g.output(g.op("Softmax", [gemm(g, y, 4, 2, trans_b=0)], axis=1))
    model = g.build()
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Transpose", "Softmax", "Transpose"]
    xv = big_input((2, 3, 3, 4))
    got = run(result.model, {"input": xv})["output"]
    pixels = run(model, {"input": xv.transpose(0, 2, 3, 1).reshape(-1, 3)})["output"]
    assert_close(got, pixels.reshape(2, 3, 4, 2).transpose(0, 3, 1, 2))


def test_input_of_unknown_width_is_refused() -> None:
    """The input's feature count is a symbol: the kernel's channel count cannot be proven."""
    model = text_model(
        """
        g (float[N, K] input) => (float[N, 2] fc) {
            fc = Gemm <transB = 1> (input, w, b)
        }
        """,
        w=(2, 3),
        b=(2,),
    )
    err = refused(model)
    reason = "Gemm 'fc' reads graph input 'input' whose shape is not [N, K]"
    assert err.reasons == [f"fc: {reason}"]
    assert skipped(model) == [("fc", Code.INPUT_NOT_NK, reason)]
