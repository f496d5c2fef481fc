"""Flatten patterns and FC layer forms: each must become exact Conv nodes (DESIGN.md, the algebra)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import (
    GraphBuilder,
    assert_close,
    assert_sliding,
    backbone,
    big_input,
    conv_params,
    convert,
    dims,
    gemm,
    image_model,
    matmul,
    ops,
    relaxed,
    run,
)
from onnx import TensorProto, helper, numpy_helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, NotConvertibleError
from onnx_fc2conv import convert as api_convert
from onnx_fc2conv.rewrite import kernel_from_weight

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
# Flatten -> Gemm


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
    assert dims(out.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(out.graph.output[0]) == ["batch", M, "out_height", "out_width"]
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
    g = GraphBuilder()
    x = g.input("input", [1, 3, 2, 2])
    flat = g.op("Flatten", [x], axis=1)
    y = g.op("Gemm", [flat, g.const("w", g.rand((1, M)))], name="fc", transA=1)
    g.output(y)
    with pytest.raises(NotConvertibleError) as info:
        api_convert(g.build())
    assert info.value.reasons == ["fc: Gemm 'fc' has transA=1: its input is not a flattened feature map"]
    assert info.value.exit_code == 3


# ------------------------------------------------------------------------------------------------
# Flatten -> MatMul (+ Add)


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


# ------------------------------------------------------------------------------------------------
# The question's MLP


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


# ------------------------------------------------------------------------------------------------
# 1-D and 3-D feature maps


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
    assert dims(out.graph.input[0]) == ["batch", 3, *names]
    assert dims(out.graph.output[0]) == ["batch", M, *(f"out_{n}" for n in names)]
    axes = tuple(range(2, 2 + len(spatial)))
    assert_sliding(model, out, big_input((2, 3, *big)), window=spatial, spatial_axes=axes)


# ------------------------------------------------------------------------------------------------
# Reshape flattens


def _reshape_model(kind: str, batch: int | str) -> onnx.ModelProto:
    g = GraphBuilder(opset=14)
    x = g.input("input", [batch, 3, 5, 4])
    feat = backbone(g, x, 3, C)
    if kind == "shape_computed":
        shape = g.op("Shape", [feat])
        n = g.op("Gather", [shape, g.const("zero", np.array(0, np.int64))], axis=0)
        n = g.op("Unsqueeze", [n, g.const("axes", np.array([0], np.int64))])
        target = g.op("Concat", [n, g.const("minus1", np.array([-1], np.int64))], axis=0)
        flat = g.op("Reshape", [feat, target])
    else:
        target, allowzero = {
            "minus1_k": ([-1, K], 0),
            "zero_minus1": ([0, -1], 0),
            "n_k_allowzero": ([batch if isinstance(batch, int) else 1, K], 1),
            "one_k": ([1, K], 0),
        }[kind]
        attrs = {"allowzero": 1} if allowzero else {}
        flat = g.op("Reshape", [feat, g.const("target", np.array(target, np.int64))], **attrs)
    g.output(gemm(g, flat, K, M))
    return g.build()


@pytest.mark.parametrize(
    ("kind", "batch"),
    [
        ("minus1_k", "N"),
        ("zero_minus1", "N"),
        ("n_k_allowzero", 1),
        ("n_k_allowzero", 2),
        ("one_k", 1),
        ("shape_computed", "N"),
        ("shape_computed", 1),
    ],
)
def test_reshape_flatten(kind: str, batch: int | str) -> None:
    model = _reshape_model(kind, batch)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
    assert result.heads[0].kind == "reshape"
    assert result.heads[0].description == "Reshape -> Gemm"
    n = batch if isinstance(batch, int) else 2
    assert_sliding(model, result.model, big_input((n, 3, 7, 6)), window=(5, 4))


# ------------------------------------------------------------------------------------------------
# Pooled heads


def _pooled_model(kind: str) -> onnx.ModelProto:
    g = GraphBuilder(opset=18 if kind == "reducemean_input_axes" else 17)
    x = g.input("input", ["N", 3, 5, 4])
    feat = backbone(g, x, 3, C, pad=True)
    if kind == "reducemean_attr":
        g.opset = 17
        flat = g.op("ReduceMean", [feat], axes=[2, 3], keepdims=0)
        y = gemm(g, flat, C, M)
    elif kind == "reducemean_input_axes":
        flat = g.op("ReduceMean", [feat, g.const("axes", np.array([2, 3], np.int64))], keepdims=0)
        y = gemm(g, flat, C, M)
    elif kind == "gap_flatten_gemm":
        flat = g.op("Flatten", [g.op("GlobalAveragePool", [feat])], axis=1)
        y = gemm(g, flat, C, M)
    elif kind == "gap_squeeze_matmul":
        pooled = g.op("GlobalAveragePool", [feat])
        flat = g.op("Squeeze", [pooled, g.const("axes", np.array([2, 3], np.int64))])
        y = matmul(g, flat, C, M)
    elif kind == "gmp_flatten_gemm":
        flat = g.op("Flatten", [g.op("GlobalMaxPool", [feat])], axis=1)
        y = gemm(g, flat, C, M)
    g.output(y)
    return g.build()


@pytest.mark.parametrize(
    ("kind", "expected_ops", "description"),
    [
        ("reducemean_attr", ["Conv", "Relu", "ReduceMean", "Conv"], "ReduceMean -> Gemm"),
        ("reducemean_input_axes", ["Conv", "Relu", "ReduceMean", "Conv"], "ReduceMean -> Gemm"),
        ("gap_flatten_gemm", ["Conv", "Relu", "GlobalAveragePool", "Conv"], "Flatten -> Gemm"),
        ("gap_squeeze_matmul", ["Conv", "Relu", "GlobalAveragePool", "Conv"], "Squeeze -> MatMul+Add"),
        ("gmp_flatten_gemm", ["Conv", "Relu", "GlobalMaxPool", "Conv"], "Flatten -> Gemm"),
    ],
)
def test_pooled_heads(kind: str, expected_ops: list[str], description: str) -> None:
    model = _pooled_model(kind)
    result = convert(model)
    out = result.model
    assert ops(out) == expected_ops
    assert result.heads[0].description == description
    assert conv_params(out)[1][0].shape == (M, C, 1, 1)
    if kind.startswith("reducemean"):
        node = next(n for n in out.graph.node if n.op_type == "ReduceMean")
        assert next(a.i for a in node.attribute if a.name == "keepdims") == 1
    # a global pool always leaves 1 x 1: the output dims say so exactly
    assert dims(out.graph.output[0]) == ["batch", M, 1, 1]
    # a global pool reads the whole image: the converted model equals the original at any size
    for shape in [(1, 3, 5, 4), (2, 3, 9, 7)]:
        x = big_input(shape)
        expected = run(relaxed(model), {"input": x})["output"]
        got = run(out, {"input": x})["output"]
        assert got.shape == (*expected.shape, 1, 1)
        assert_close(got.reshape(expected.shape), expected)


# ------------------------------------------------------------------------------------------------
# NHWC (Keras-style) flatten


def _nhwc_model(h: int = 5, w: int = 6, c_in: int = 2) -> onnx.ModelProto:
    g = GraphBuilder(opset=13)
    x = g.input("input", [1, h, w, c_in])
    nchw = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    feat = backbone(g, nchw, c_in, C)
    nhwc = g.op("Transpose", [feat], perm=[0, 2, 3, 1])
    shape = g.op("Shape", [nhwc])
    first = g.op("Slice", [shape, g.const("s0", np.array([0], np.int64)), g.const("s1", np.array([1], np.int64))])
    target = g.op("Concat", [first, g.const("m1", np.array([-1], np.int64))], axis=0)
    flat = g.op("Reshape", [nhwc, target])
    g.output(matmul(g, flat, C * (h - 1) * (w - 1), M), shape=[1, M])
    return g.build()


def test_nhwc_transpose_reshape_matmul() -> None:
    h, w, c_in = 5, 6, 2
    model = _nhwc_model(h, w, c_in)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Transpose", "Conv", "Relu", "Conv"]
    head = result.heads[0]
    assert head.kind == "nhwc"
    assert head.description == "Transpose -> Reshape -> MatMul+Add"
    kernel, _ = conv_params(out)[1]
    w_km = next(
        onnx.numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name == next(n for n in model.graph.node if n.op_type == "MatMul").input[1]
    )
    np.testing.assert_array_equal(kernel, w_km.T.reshape(M, h - 1, w - 1, C).transpose(0, 3, 1, 2))
    # the input's axes 1 and 2 are the spatial ones
    assert dims(out.graph.input[0]) == ["batch", "height", "width", c_in]
    assert dims(out.graph.output[0]) == ["batch", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((1, 8, 7, c_in)), window=(h, w), spatial_axes=(1, 2))


def test_nhwc_kernel_from_weight_matches_design_formula() -> None:
    model = _nhwc_model()
    head = onnx_fc2conv.inspect(model).heads[0]
    layer = head.layers[0]
    m, c, h, w = layer.kernel_shape
    weight_km = np.arange(c * h * w * m, dtype=np.float32).reshape(c * h * w, m)
    got = kernel_from_weight(weight_km, layer, head.perm)
    np.testing.assert_array_equal(got, weight_km.T.reshape(m, h, w, c).transpose(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------------
# Exporter-shaped heads


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


def test_custom_dim_names_and_fixed_batch() -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M), batch=1)
    names = onnx_fc2conv.DimNames(batch="B", height="rows", width="cols")
    result = convert(model, dim_names=names)
    assert dims(result.model.graph.input[0]) == ["B", 3, "rows", "cols"]
    assert dims(result.model.graph.output[0]) == ["B", M, "out_rows", "out_cols"]


def test_convert_from_path(tmp_path) -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    result = api_convert(str(path), ConvertOptions())
    assert result.verification is not None and result.verification.passed
    assert ops(result.model) == ["Conv", "Relu", "Conv"]


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


def test_squeeze_axes_attribute_opset11() -> None:
    g = GraphBuilder(opset=11)
    x = g.input("input", [1, 3, 5, 4])
    pooled = g.op("GlobalAveragePool", [backbone(g, x, 3, C, pad=True)])
    g.output(matmul(g, g.op("Squeeze", [pooled], axes=[2, 3]), C, M))
    model = g.build()
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "GlobalAveragePool", "Conv"]
    xv = big_input((1, 3, 8, 9))
    assert_close(run(result.model, {"input": xv})["output"].reshape(1, M), run(relaxed(model), {"input": xv})["output"])


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


def test_two_heads_on_one_flatten_become_two_convs() -> None:
    """Multi-task heads: class scores and a box regression read the same flattened map."""
    rng = np.random.default_rng(21)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Flatten", ["r"], ["f"]),
            helper.make_node("Gemm", ["f", "w1", "b1"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
            helper.make_node("MatMul", ["f", "w2"], ["box0"]),
            helper.make_node("Add", ["box0", "b2"], ["boxes"]),
        ],
        "two_heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 6])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 5]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "cw"),
            numpy_helper.from_array(rng.standard_normal((5, 60)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.standard_normal((60, 4)).astype(np.float32), "w2"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = onnx_fc2conv.convert(model)
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Relu", "Conv", "Softmax", "Conv"]
    assert [h.outputs for h in result.heads] == [("probs",), ("boxes",)]
    assert {c.output for c in result.verification.comparisons if c.check == "larger size"} == {"probs", "boxes"}
    assert result.verification.passed


def test_reshape_with_its_target_as_an_attribute_is_a_flatten() -> None:
    """Before opset 5 Reshape took `shape` as an attribute (old model-zoo exports)."""
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("Reshape", ["c"], ["f"], shape=[1, -1]),
            helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
        ],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [
            numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "cw"),
            numpy_helper.from_array(rng.standard_normal((5, 32)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 4)])
    found = onnx_fc2conv.inspect(model)
    assert [h.description for h in found.heads] == ["Reshape -> Gemm"] and found.skipped == []
    converted = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(verify=False)).model
    assert [n.op_type for n in converted.graph.node] == ["Conv", "Conv"]
    kernel = next(t for t in converted.graph.initializer if t.name == "w")
    assert list(kernel.dims) == [5, 2, 4, 4]
