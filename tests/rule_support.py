"""What the rule tests share: models from ONNX text with seeded weights, the refusal records a
model gets, and the checks that the tests of several rules run on their own cases."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
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
    rand,
    relaxed,
    run,
)
from onnx import numpy_helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, NotConvertibleError
from onnx_fc2conv.rules.base import Code

C, M = 4, 5  # channels of the standard backbone's map, classes
WINDOW = (5, 4)  # the standard image size: the window of one map location

_IR_FOR_OPSET = {11: 6, 13: 7, 17: 8}


def text_model(
    graph: str, *, opset: int = 17, seed: int = 0, **weights: tuple[int, ...] | np.ndarray
) -> onnx.ModelProto:
    """A checked model from the ONNX text of its graph; each keyword is an initializer, given as an
    array or as a shape to fill with seeded random values."""
    header = f'<ir_version: {_IR_FOR_OPSET[opset]}, opset_import: ["" : {opset}]>\n'
    model = onnx.parser.parse_model(header + graph)
    for i, (name, value) in enumerate(weights.items()):
        array = value if isinstance(value, np.ndarray) else rand(value, seed + i, scale=0.5)
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    onnx.checker.check_model(model, full_check=True)
    return model


def refused(model: onnx.ModelProto) -> NotConvertibleError:
    """convert() refuses the model with exit code 3; the error, for its reasons."""
    with pytest.raises(NotConvertibleError) as info:
        onnx_fc2conv.convert(model, ConvertOptions())
    assert info.value.exit_code == 3
    return info.value


def skipped(model: onnx.ModelProto) -> list[tuple[str, Code, str]]:
    """(node, code, reason) of every FC candidate inspect() skips."""
    return [(s.node, s.code, s.reason) for s in onnx_fc2conv.inspect(model).skipped]


_FC_HEAD = """
    g (float[1, 3, 5, 4] input{inputs}) => ({outputs}) {{
        conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
        flat = Flatten <axis = 1> (conv)
        fc = Gemm <transB = 1> (flat, w, b)
        {tail}
    }}
"""


def fc_head_model(
    tail: str, outputs: str, *, inputs: str = "", opset: int = 17, **weights: tuple[int, ...] | np.ndarray
) -> onnx.ModelProto:
    """The rule tests' usual head: `[1, 3, 5, 4]` -> 2x2 Conv (C channels) -> Flatten -> Gemm 'fc'
    (M classes), then `tail` (ONNX text lines) writing `outputs`; `inputs` adds graph inputs."""
    text = _FC_HEAD.format(inputs=inputs, outputs=outputs, tail=tail)
    return text_model(text, opset=opset, conv_w=(C, 3, 2, 2), w=(M, 48), b=(M,), **weights)


def assert_refused_head(model: onnx.ModelProto, code: Code, reason: str, node: str = "fc") -> None:
    """convert() refuses the model naming `node` with `reason` alone; inspect() records it with `code`."""
    assert refused(model).reasons == [f"{node}: {reason}"]
    assert skipped(model) == [(node, code, reason)]


def backbone_refusals(model: onnx.ModelProto) -> list[tuple[str, Code, str]]:
    """(node, code, reason) of every backbone node inspect() refuses."""
    return [(s.node, s.code, s.reason) for s in onnx_fc2conv.inspect(model).backbone_refusals]


def bn_inputs(g: GraphBuilder, m: int) -> list[str]:
    """Scale, bias, mean and (positive) variance of a BatchNormalization over `m` features."""
    return [
        g.const("bn_scale", g.rand((m,))),
        g.const("bn_bias", g.rand((m,))),
        g.const("bn_mean", g.rand((m,))),
        g.const("bn_var", np.abs(g.rand((m,))) + 0.5),
    ]


# -- global pools before the head (flatten_pool, flatten_reduce, flatten_squeeze) -----------------


def pooled_model(kind: str) -> onnx.ModelProto:
    g = GraphBuilder(opset=18 if kind == "reducemean_input_axes" else 17)
    x = g.input("input", ["N", 3, 5, 4])
    feat = backbone(g, x, 3, C, pad=True)
    if kind == "reducemean_attr":
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
    else:
        raise ValueError(kind)
    g.output(y)
    return g.build()


def assert_pooled_head(kind: str, expected_ops: list[str], description: str) -> None:
    """The head becomes a 1 x 1 Conv after the pool, and equals the original at any size."""
    model = pooled_model(kind)
    result = convert(model)
    out = result.model
    assert ops(out) == expected_ops
    assert result.heads[0].description == description
    assert conv_params(out)[1][0].shape == (M, C, 1, 1)
    if kind.startswith("reducemean"):
        node = next(n for n in out.graph.node if n.op_type == "ReduceMean")
        assert next(a.i for a in node.attribute if a.name == "keepdims") == 1
    # a global pool always leaves 1 x 1: the output dims say so exactly; the batch keeps the input's name N
    assert dims(out.graph.output[0]) == ["N", M, 1, 1]
    # a global pool reads the whole image: the converted model equals the original at any size
    for shape in [(1, 3, 5, 4), (2, 3, 9, 7)]:
        x = big_input(shape)
        expected = run(relaxed(model), {"input": x})["output"]
        got = run(out, {"input": x})["output"]
        assert got.shape == (*expected.shape, 1, 1)
        assert_close(got.reshape(expected.shape), expected)


# -- class-axis normalisation (tail_class_axis, tail_legacy_softmax) --------------------------------


def assert_class_axis_normalised(op: str, opset: int, axis: int | None, expected_tail: list[str]) -> None:
    """Relu -> `op` after the FC: rewritten to `expected_tail`, normalising over the classes per pixel."""
    attrs = {} if axis is None else {"axis": axis}
    model = image_model(lambda g, x, k: g.op(op, [g.op("Relu", [gemm(g, x, k, M)])], **attrs), opset=opset)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu", *expected_tail]
    y = assert_sliding(model, out, big_input((2, 3, 9, 8)), window=WINDOW)["output"]
    assert y.shape == (2, M, 5, 5)
    # normalised per pixel over the M classes, not over M * h * w jointly
    if op == "Softmax":
        assert_close(y.sum(axis=1), np.ones((2, 5, 5), np.float32), atol=1e-5)
    elif op == "LogSoftmax":
        assert_close(np.exp(y).sum(axis=1), np.ones((2, 5, 5), np.float32), atol=1e-5)
    else:
        assert_close(y.sum(axis=1), np.ones((2, 5, 5), np.float32))


def qlinear_matmul_head(g: GraphBuilder, rng: np.random.Generator) -> tuple[str, str, str]:
    """`input [1, 3, 5, 4] -> Conv/Relu -> Flatten -> QuantizeLinear -> QLinearMatMul` with an int8
    weight `[48, M]` from `rng`: the uint8 FC output, its scale and its zero point."""
    flat = g.op("Flatten", [backbone(g, g.input("input", [1, 3, 5, 4]), 3, 4)], axis=1)
    x_s, x_z = g.const("x_s", np.array(0.05, np.float32)), g.const("x_z", np.array(0, np.uint8))
    y_s, y_z = g.const("y_s", np.array(0.05, np.float32)), g.const("y_z", np.array(128, np.uint8))
    weight = g.const("w_q", rng.integers(-127, 128, (48, M)).astype(np.int8))
    w_s, w_z = g.const("w_s", np.array(0.01, np.float32)), g.const("w_z", np.array(0, np.int8))
    y = g.op("QLinearMatMul", [g.op("QuantizeLinear", [flat, x_s, x_z]), x_s, x_z, weight, w_s, w_z, y_s, y_z])
    return y, y_s, y_z
