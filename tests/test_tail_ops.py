"""Ops between and after the FC layers keep working on [N, M, h, w] (DESIGN.md, "Between and after")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from builders import (
    GraphBuilder,
    assert_close,
    assert_sliding,
    backbone,
    big_input,
    convert,
    dims,
    gemm,
    image_model,
    initializer,
    ops,
)
from onnx import TensorProto, helper, numpy_helper

import onnx_fc2conv

M = 5
HIDDEN = 6
WINDOW = (5, 4)


# Each entry: opset, and a function adding the op(s) on `x` of width `m`; returns the output.
def _unary(op: str, **attrs) -> Callable:
    return lambda g, x, m: g.op(op, [x], **attrs)


def _prelu(g, x, m):
    return g.op("PRelu", [x, g.const("slope", g.rand((m,)))])


def _clip_inputs(g, x, m):
    return g.op("Clip", [x, g.const("lo", np.array(-0.3, np.float32)), g.const("hi", np.array(0.4, np.float32))])


def _clip_max_only(g, x, m):
    return g.op("Clip", [x, "", g.const("hi", np.array(0.2, np.float32))])


def _erf_gelu(g, x, m):
    d = g.op("Div", [x, g.const("sqrt2", np.array(1.4142135, np.float32))])
    e = g.op("Erf", [d])
    a = g.op("Add", [e, g.const("one", np.array(1.0, np.float32))])
    y = g.op("Mul", [x, a])
    return g.op("Mul", [y, g.const("half", np.array(0.5, np.float32))])


ELEMENTWISE = {
    "Relu": (17, _unary("Relu"), ["Relu"]),
    "LeakyRelu": (17, _unary("LeakyRelu", alpha=0.2), ["LeakyRelu"]),
    "PRelu": (17, _prelu, ["PRelu"]),
    "Sigmoid": (17, _unary("Sigmoid"), ["Sigmoid"]),
    "Tanh": (17, _unary("Tanh"), ["Tanh"]),
    "HardSigmoid": (17, _unary("HardSigmoid", alpha=0.3, beta=0.4), ["HardSigmoid"]),
    "HardSwish": (17, _unary("HardSwish"), ["HardSwish"]),
    "Clip-inputs": (13, _clip_inputs, ["Clip"]),
    "Clip-max-only": (17, _clip_max_only, ["Clip"]),
    "Clip-attrs-opset9": (9, _unary("Clip", min=-0.5, max=0.5), ["Clip"]),
    "Elu": (17, _unary("Elu", alpha=0.7), ["Elu"]),
    "Selu": (17, _unary("Selu"), ["Selu"]),
    "Gelu-opset20": (20, _unary("Gelu"), ["Gelu"]),
    "Gelu-tanh-opset20": (20, _unary("Gelu", approximate="tanh"), ["Gelu"]),
    "Erf-GELU": (17, _erf_gelu, ["Div", "Erf", "Add", "Mul", "Mul"]),
    "Dropout": (17, _unary("Dropout"), ["Dropout"]),
    "Identity": (17, _unary("Identity"), ["Identity"]),
    "Softplus": (17, _unary("Softplus"), ["Softplus"]),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_between_and_after(name: str) -> None:
    opset, add, op_nodes = ELEMENTWISE[name]

    def head(g, x, k):
        y = add(g, gemm(g, x, k, HIDDEN), HIDDEN)
        return add(g, gemm(g, y, HIDDEN, M, trans_b=0), M)

    model = image_model(head, opset=opset)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", *op_nodes, "Conv", *op_nodes]
    assert dims(out.graph.output[0]) == ["batch", M, "out_height", "out_width"]
    if name == "PRelu":
        slopes = [initializer(out, n.input[1]) for n in out.graph.node if n.op_type == "PRelu"]
        assert [s.shape for s in slopes] == [(HIDDEN, 1, 1), (M, 1, 1)]
    assert_sliding(model, out, big_input((2, 3, 8, 7)), window=WINDOW)


# ------------------------------------------------------------------------------------------------
# Per-feature and scalar constants


CONST_SHAPES = {"vec": (M,), "row": (1, M), "scalar0": (), "scalar1": (1,), "scalar11": (1, 1)}


@pytest.mark.parametrize("shape_kind", list(CONST_SHAPES))
@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
@pytest.mark.parametrize("const_first", [False, True])
def test_per_feature_and_scalar_constants(op: str, shape_kind: str, const_first: bool) -> None:
    shape = CONST_SHAPES[shape_kind]
    names: dict[str, str] = {}

    def head(g, x, k):
        y = gemm(g, x, k, M)
        value = g.rand(shape) + (2.0 if op == "Div" else 0.0)  # keep divisors away from 0
        names["c"] = g.const("c", value.astype(np.float32))
        return g.op(op, [names["c"], y] if const_first else [y, names["c"]])

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", op]
    node = out.graph.node[-1]
    const = node.input[0] if const_first else node.input[1]
    value = initializer(out, const)
    original = initializer(model, names["c"])
    if shape_kind in ("vec", "row"):
        assert value.shape == (M, 1, 1)
    else:
        assert value.shape == shape  # scalars stay as they are
    np.testing.assert_array_equal(value.reshape(-1), original.reshape(-1))
    assert_sliding(model, out, big_input((1, 3, 7, 6)), window=WINDOW)


def test_per_feature_constant_shared_by_two_nodes_is_copied_not_corrupted() -> None:
    """One [M] constant read by a tail Add and by another graph output's Add: the other keeps [M]."""
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    flat = g.op("Flatten", [backbone(g, x, 3, 4)], axis=1)
    y = gemm(g, flat, 48, M)
    c = g.const("c", g.rand((M,)))
    side = g.input("side", ["N", M])
    g.output(g.op("Add", [y, c]), "output")
    g.output(g.op("Add", [side, c]), "side_out")
    model = g.build()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(verify=False))
    out = result.model
    side_add = next(n for n in out.graph.node if "side" in n.input)
    assert initializer(out, side_add.input[1]).shape == (M,)
    head_add = next(n for n in out.graph.node if n.op_type == "Add" and "side" not in n.input)
    assert initializer(out, head_add.input[1]).shape == (M, 1, 1)


# ------------------------------------------------------------------------------------------------
# Class-axis ops


@pytest.mark.parametrize(
    ("op", "opset", "axis"),
    [
        ("Softmax", 11, None),
        ("Softmax", 11, 1),
        ("Softmax", 11, -1),
        ("LogSoftmax", 11, None),
        ("Softmax", 13, None),
        ("Softmax", 13, 1),
        ("Softmax", 17, -1),
        ("LogSoftmax", 17, None),
        ("LogSoftmax", 13, 1),
        ("Hardmax", 13, None),
        ("Hardmax", 11, 1),
    ],
)
def test_class_axis_normalisation(op: str, opset: int, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    model = image_model(lambda g, x, k: g.op(op, [g.op("Relu", [gemm(g, x, k, M)])], **attrs), opset=opset)
    result = convert(model)
    out = result.model
    legacy = opset < 13
    if legacy:
        assert ops(out) == ["Conv", "Relu", "Conv", "Relu", "Transpose", op, "Transpose"]
    else:
        assert ops(out) == ["Conv", "Relu", "Conv", "Relu", op]
    y = assert_sliding(model, out, big_input((2, 3, 9, 8)), window=WINDOW)["output"]
    assert y.shape == (2, M, 5, 5)
    # normalised per pixel over the M classes, not over M * h * w jointly
    if op == "Softmax":
        assert_close(y.sum(axis=1), np.ones((2, 5, 5), np.float32), atol=1e-5)
    elif op == "LogSoftmax":
        assert_close(np.exp(y).sum(axis=1), np.ones((2, 5, 5), np.float32), atol=1e-5)
    else:
        assert_close(y.sum(axis=1), np.ones((2, 5, 5), np.float32))


@pytest.mark.parametrize(
    ("op", "attrs", "opset"),
    [
        ("ArgMax", {"axis": 1, "keepdims": 0}, 13),
        ("ArgMax", {"axis": 1, "keepdims": 1}, 13),
        ("ArgMax", {"axis": -1, "keepdims": 0}, 17),
        ("ArgMin", {"axis": -1, "keepdims": 1}, 11),
    ],
)
def test_argmax_over_classes(op: str, attrs: dict, opset: int) -> None:
    model = image_model(
        lambda g, x, k: g.op(op, [gemm(g, x, k, M)], **attrs), opset=opset, out_elem=onnx.TensorProto.INT64
    )
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", op]
    assert next(a.i for a in out.graph.node[-1].attribute if a.name == "axis") == 1
    y = assert_sliding(model, out, big_input((2, 3, 7, 8)), window=WINDOW)["output"]
    assert y.shape == ((2, 1, 3, 5) if attrs["keepdims"] else (2, 3, 5))


@pytest.mark.parametrize("axis", [None, -1, 1])
def test_topk_over_classes(axis: int | None) -> None:
    g = GraphBuilder(opset=13)
    x = g.input("input", ["N", 3, 5, 4])
    flat = g.op("Flatten", [backbone(g, x, 3, 4)], axis=1)
    y = gemm(g, flat, 48, M)
    attrs = {} if axis is None else {"axis": axis}
    values, indices = g.op("TopK", [y, g.const("k", np.array([2], np.int64))], n_out=2, **attrs)
    g.output(values, "values")
    g.output(indices, "indices", elem=onnx.TensorProto.INT64)
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "TopK"]
    got = assert_sliding(model, out, big_input((2, 3, 6, 7)), window=WINDOW)
    assert got["values"].shape == (2, 2, 2, 4) and got["indices"].shape == (2, 2, 2, 4)
    assert [o.name for o in out.graph.output] == ["values", "indices"]


# ------------------------------------------------------------------------------------------------
# BatchNorm after an FC


def _bn_inputs(g, m):
    return [
        g.const("bn_scale", g.rand((m,))),
        g.const("bn_bias", g.rand((m,))),
        g.const("bn_mean", g.rand((m,))),
        g.const("bn_var", np.abs(g.rand((m,))) + 0.5),
    ]


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_batchnorm1d_unsqueeze_bn_squeeze(opset: int) -> None:
    def head(g, x, k):
        y = gemm(g, x, k, HIDDEN)
        if opset >= 13:
            axes = g.const("axes", np.array([2], np.int64))
            u = g.op("Unsqueeze", [y, axes])
            bn = g.op("BatchNormalization", [u, *_bn_inputs(g, HIDDEN)], epsilon=1e-3)
            s = g.op("Squeeze", [bn, g.const("axes2", np.array([2], np.int64))])
        else:
            u = g.op("Unsqueeze", [y], axes=[2])
            bn = g.op("BatchNormalization", [u, *_bn_inputs(g, HIDDEN)], epsilon=1e-3)
            s = g.op("Squeeze", [bn], axes=[2])
        return g.op("Softmax", [gemm(g, g.op("Relu", [s]), HIDDEN, M)], axis=1 if opset < 13 else -1)

    model = image_model(head, opset=opset)
    result = convert(model)
    out = result.model
    softmax = ["Transpose", "Softmax", "Transpose"] if opset < 13 else ["Softmax"]
    assert ops(out) == ["Conv", "Relu", "Conv", "BatchNormalization", "Relu", "Conv", *softmax]
    assert_sliding(model, out, big_input((2, 3, 7, 7)), window=WINDOW)


def test_plain_batchnorm_on_n_m() -> None:
    def head(g, x, k):
        y = gemm(g, x, k, HIDDEN)
        bn = g.op("BatchNormalization", [y, *_bn_inputs(g, HIDDEN)])
        return gemm(g, g.op("Relu", [bn]), HIDDEN, M)

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "BatchNormalization", "Relu", "Conv"]
    assert_sliding(model, out, big_input((1, 3, 6, 8)), window=WINDOW)


# ------------------------------------------------------------------------------------------------
# A final flatten to [N, M] is dropped


@pytest.mark.parametrize("final", ["Flatten", "Reshape", "Reshape-zero"])
def test_final_flatten_becomes_identity(final: str) -> None:
    def head(g, x, k):
        y = gemm(g, x, k, M)
        if final == "Flatten":
            return g.op("Flatten", [y], axis=1)
        if final == "Reshape":
            return g.op("Reshape", [y, g.const("t", np.array([-1, M], np.int64))])
        return g.op("Reshape", [y, g.const("t", np.array([0, M], np.int64))])

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Identity"]
    assert dims(out.graph.output[0]) == ["batch", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((2, 3, 7, 6)), window=WINDOW)


def test_cast_between_layers_fp64_head_stays_exact() -> None:
    def head(g, x, k):
        y = g.op("Cast", [gemm(g, x, k, HIDDEN)], to=onnx.TensorProto.FLOAT)
        return gemm(g, y, HIDDEN, M)

    model = image_model(head)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Cast", "Conv"]
    assert_sliding(model, result.model, big_input((1, 3, 6, 6)), window=WINDOW)


def test_prelu_slope_row_becomes_m11() -> None:
    model = image_model(lambda g, x, k: g.op("PRelu", [gemm(g, x, k, M), g.const("s", g.rand((1, M)))]))
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "PRelu"]
    assert initializer(out, out.graph.node[-1].input[1]).shape == (M, 1, 1)
    assert_sliding(model, out, big_input((1, 3, 7, 6)), window=WINDOW)


def test_legacy_softmax_between_fcs() -> None:
    model = image_model(lambda g, x, k: gemm(g, g.op("Softmax", [gemm(g, x, k, HIDDEN)]), HIDDEN, M), opset=11)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Transpose", "Softmax", "Transpose", "Conv"]
    assert_sliding(model, result.model, big_input((2, 3, 7, 6)), window=WINDOW)


def test_logits_and_probabilities_both_outputs() -> None:
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    flat = g.op("Flatten", [backbone(g, x, 3, 4)], axis=1)
    logits = g.rename_output(gemm(g, flat, 48, M), "logits")
    g.outputs.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    g.output(g.op("Softmax", [logits], axis=-1), "probs")
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Softmax"]
    assert result.heads[0].outputs == ("logits", "probs")
    assert [dims(o) for o in out.graph.output] == [["batch", M, "out_height", "out_width"]] * 2
    got = assert_sliding(model, out, big_input((2, 3, 7, 6)), window=WINDOW)
    assert_close(got["probs"].sum(axis=1), np.ones((2, 3, 3), np.float32))


def _computed_final_reshape_model(extra_use: bool) -> onnx.ModelProto:
    """Flatten -> Gemm -> Reshape(y, Concat(Shape(y)[0], -1)): a final flatten with a computed target."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y0"], transB=1),
        helper.make_node("Shape", ["y0"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["bu"]),
        helper.make_node("Concat", ["bu", "m1"], ["shp"], axis=0),
        helper.make_node("Reshape", ["y0", "shp"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])]
    if extra_use:
        outputs.append(helper.make_tensor_value_info("shp", TensorProto.INT64, [2]))
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 18)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "m1"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 3])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_final_reshape_with_a_computed_target_is_dropped() -> None:
    result = onnx_fc2conv.convert(_computed_final_reshape_model(extra_use=False))
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Identity"]
    assert result.verification.passed


def test_shape_of_the_head_used_elsewhere_is_refused() -> None:
    with pytest.raises(onnx_fc2conv.NotConvertibleError) as err:
        onnx_fc2conv.convert(_computed_final_reshape_model(extra_use=True))
    # unnamed nodes are named by their first output in messages
    assert "Shape 's' after the FC layers feeds a graph output" in str(err.value)
