"""FC layers (fc.py): Gemm and MatMul (+ Add) in every layout become exact Conv nodes (DESIGN.md, the algebra)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import assert_sliding, big_input, conv_params, convert, dims, gemm, image_model, matmul, ops
from rule_support import assert_refused_head, refused, skipped, text_model

import onnx_fc2conv
from onnx_fc2conv.rewrite import kernel_from_weight
from onnx_fc2conv.rules.base import Code

C, H0, W0 = 4, 4, 3  # feature map of image_model() with its default 5 x 4 input
K = C * H0 * W0
M = 5


def _weight_mk(model: onnx.ModelProto, node_index: int = 0) -> tuple[np.ndarray, onnx.NodeProto]:
    """The [M, K] weight of the n-th Gemm/MatMul of an original model, and the node."""
    fcs = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    node = fcs[node_index]
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}[node.input[1]]
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return (w if trans_b else w.T), node


# ------------------------------------------------------------------------------------------------
# Gemm


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
@pytest.mark.parametrize("bias", [None, "vec", "row", "scalar0", "scalar1"])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_flatten_gemm(opset: int, bias: str | None, trans_b: int) -> None:
    alpha, beta = 0.75, 1.5
    model = image_model(
        lambda g, x, k: gemm(g, x, k, M, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias), opset=opset
    )
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv"]
    assert out.opset_import[0].version == opset
    (kernel, conv_bias) = conv_params(out)[1]
    w_mk, gemm_node = _weight_mk(model)
    assert kernel.shape == (M, C, H0, W0)
    np.testing.assert_allclose(kernel, (alpha * w_mk).reshape(M, C, H0, W0), rtol=1e-6)
    if bias is None:
        assert conv_bias is None
    else:
        c = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == gemm_node.input[2]))
        np.testing.assert_allclose(conv_bias, np.broadcast_to(beta * c.reshape(-1), (M,)), rtol=1e-6)
        assert conv_bias.shape == (M,)
    assert dims(out.graph.input[0]) == ["N", 3, "height", "width"]
    assert dims(out.graph.output[0]) == ["N", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((2, 3, 8, 6)), window=(5, 4))


@pytest.mark.parametrize("alpha", [1.0, -2.5])
@pytest.mark.parametrize("beta", [1.0, 0.0, 3.0])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_alpha_beta(alpha: float, beta: float, trans_b: int) -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M, trans_b=trans_b, alpha=alpha, beta=beta))
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
    layer = result.rewrites[0].layers[0]
    assert layer.kernel_shape == (M, C, H0, W0)
    # zero copy only when the stored layout already is [M, K] and nothing scales it
    assert layer.weight_copied == (not (trans_b == 1 and alpha == 1.0))
    assert_sliding(model, result.model, big_input((1, 3, 7, 7)), window=(5, 4))


def test_kernel_from_weight_is_pure_and_exact() -> None:
    """The pure function: transB=0 weight [K, M] -> alpha * W.T reshaped, input untouched."""
    model = image_model(lambda g, x, k: gemm(g, x, k, M, trans_b=0, alpha=2.0))
    head = onnx_fc2conv.inspect(model).heads[0]
    layer = head.layers[0]
    w = np.arange(K * M, dtype=np.float32).reshape(K, M)
    before = w.copy()
    kernel = kernel_from_weight(w, layer, None)
    np.testing.assert_array_equal(w, before)
    np.testing.assert_array_equal(kernel, (2.0 * w.T).reshape(M, C, H0, W0))
    # a square weight: the layout comes from transB, never from the shape
    sq = onnx_fc2conv.inspect(image_model(lambda g, x, k: gemm(g, x, k, K, trans_b=0))).heads[0].layers[0]
    ws = np.arange(K * K, dtype=np.float32).reshape(K, K)
    np.testing.assert_array_equal(kernel_from_weight(ws, sq, None), ws.T.reshape(K, C, H0, W0))


def test_gemm_trans_a_is_refused() -> None:
    model = text_model(
        """
        g (float[1, 3, 2, 2] input) => (float[12, 5] fc) {
            flat = Flatten <axis = 1> (input)
            fc = Gemm <transA = 1> (flat, w)
        }
        """,
        w=(1, M),
    )
    err = refused(model)
    assert err.reasons == ["fc: Gemm 'fc' has transA=1: its input is not a flattened feature map"]
    assert skipped(model) == [("fc", Code.TRANS_A, "Gemm 'fc' has transA=1: its input is not a flattened feature map")]


def test_non_constant_gemm_weight() -> None:
    model = text_model(
        """
        g (float[1, 3, 5, 4] input, float[5, 48] weight) => (float[1, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            fc = Gemm <transB = 1> (flat, weight)
        }
        """,
        conv_w=(C, 3, 2, 2),
    )
    err = refused(model)
    assert err.reasons == ["fc: Gemm 'fc': weight 'weight' is not a constant"]
    assert skipped(model) == [("fc", Code.NOT_CONSTANT, "Gemm 'fc': weight 'weight' is not a constant")]


def test_bias_with_batch_rows() -> None:
    model = text_model(
        """
        g (float[2, 3, 5, 4] input) => (float[2, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            fc = Gemm <transB = 1> (flat, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(M, 48),
        b=(2, M),
    )
    reason = "Gemm 'fc': bias shape [2, 5] is not per-feature ([5] or [1, 5]) or scalar"
    assert_refused_head(model, Code.BIAS_SHAPE, reason)


# ------------------------------------------------------------------------------------------------
# MatMul (+ Add)


@pytest.mark.parametrize(
    ("bias", "bias_first", "expected_ops"),
    [
        (None, False, ["Conv", "Relu", "Conv"]),
        ("vec", False, ["Conv", "Relu", "Conv"]),
        ("vec", True, ["Conv", "Relu", "Conv"]),
        ("row", False, ["Conv", "Relu", "Conv"]),
        ("row", True, ["Conv", "Relu", "Conv"]),
    ],
)
def test_flatten_matmul(bias: str | None, bias_first: bool, expected_ops: list[str]) -> None:
    model = image_model(lambda g, x, k: matmul(g, x, k, M, bias=bias, bias_first=bias_first))
    result = convert(model)
    assert ops(result.model) == expected_ops
    kernel, conv_bias = conv_params(result.model)[1]
    w_mk, _ = _weight_mk(model)
    np.testing.assert_array_equal(kernel, w_mk.reshape(M, C, H0, W0))
    if bias is None:
        assert conv_bias is None
        assert result.rewrites[0].layers[0].old_op == "MatMul"
    else:
        add = next(n for n in model.graph.node if n.op_type == "Add")
        b = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in add.input)
        np.testing.assert_array_equal(conv_bias, b.reshape(M))
        assert result.rewrites[0].layers[0].old_op == "MatMul+Add"
    assert_sliding(model, result.model, big_input((2, 3, 6, 7)), window=(5, 4))


def test_matmul_weight_on_the_left() -> None:
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[5, 48] mm) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            mm = MatMul (w, flat)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(M, 1),
    )
    err = refused(model)
    assert err.reasons == ["mm: MatMul 'mm': the weight is the left operand (x @ W expected)"]
    assert skipped(model) == [
        ("mm", Code.WEIGHT_OPERAND, "MatMul 'mm': the weight is the left operand (x @ W expected)")
    ]


# ------------------------------------------------------------------------------------------------
# Chains


@pytest.mark.parametrize("fc", ["gemm0", "gemm1", "matmul"])
def test_chain_first_fc_full_kernel_later_fc_1x1(fc: str) -> None:
    widths = [7, 6, M]

    def layer(g, x, k, m):
        if fc == "matmul":
            return matmul(g, x, k, m)
        return gemm(g, x, k, m, trans_b=int(fc[-1]))

    def head(g, x, k):
        y = g.op("Relu", [layer(g, x, k, widths[0])])
        y = g.op("Relu", [layer(g, y, widths[0], widths[1])])
        return layer(g, y, widths[1], widths[2])

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv"]
    kernels = [k.shape for k, _ in conv_params(out)[1:]]
    assert kernels == [(7, C, H0, W0), (6, 7, 1, 1), (M, 6, 1, 1)]
    assert [r.kernel_shape for r in result.rewrites[0].layers] == kernels
    for i, (kernel, _) in enumerate(conv_params(out)[1:]):
        w_mk, _ = _weight_mk(model, i)
        np.testing.assert_array_equal(kernel.reshape(kernel.shape[0], -1), w_mk)
    assert_sliding(model, out, big_input((1, 3, 9, 6)), window=(5, 4))
