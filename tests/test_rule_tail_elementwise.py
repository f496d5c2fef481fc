"""rules/tail_elementwise: elementwise ops between and after the FC layers stay as they are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from builders import assert_sliding, big_input, convert, dims, gemm, image_model, ops

M = 5
HIDDEN = 6
WINDOW = (5, 4)


# Each entry: opset, a function adding the op(s) on `x` of width `m` (returns the output), the op list it adds.
def _unary(op: str, **attrs) -> Callable:
    return lambda g, x, m: g.op(op, [x], **attrs)


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
    "Shrink": (17, _unary("Shrink", bias=0.1, lambd=0.3), ["Shrink"]),
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
    assert dims(out.graph.output[0]) == ["N", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((2, 3, 8, 7)), window=WINDOW)


def test_cast_between_layers_fp64_head_stays_exact() -> None:
    def head(g, x, k):
        y = g.op("Cast", [gemm(g, x, k, HIDDEN)], to=onnx.TensorProto.FLOAT)
        return gemm(g, y, HIDDEN, M)

    model = image_model(head)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Cast", "Conv"]
    assert_sliding(model, result.model, big_input((1, 3, 6, 6)), window=WINDOW)
