"""rules/tail_per_feature: constant operands `[M]` / `[1, M]` after an FC layer become `[M, 1, 1]`; scalars stay."""

from __future__ import annotations

import numpy as np
import pytest
from builders import (
    GraphBuilder,
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
from rule_support import assert_refused_head, bn_inputs, fc_head_model, text_model

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, M = 4, 5
HIDDEN = 6
WINDOW = (5, 4)
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


def test_prelu_between_and_after() -> None:
    def prelu(g, x, m):
        return g.op("PRelu", [x, g.const("slope", g.rand((m,)))])

    def head(g, x, k):
        y = prelu(g, gemm(g, x, k, HIDDEN), HIDDEN)
        return prelu(g, gemm(g, y, HIDDEN, M, trans_b=0), M)

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "PRelu", "Conv", "PRelu"]
    assert dims(out.graph.output[0]) == ["N", M, "out_height", "out_width"]
    slopes = [initializer(out, n.input[1]) for n in out.graph.node if n.op_type == "PRelu"]
    assert [s.shape for s in slopes] == [(HIDDEN, 1, 1), (M, 1, 1)]
    assert_sliding(model, out, big_input((2, 3, 8, 7)), window=WINDOW)


def test_prelu_slope_row_becomes_m11() -> None:
    model = image_model(lambda g, x, k: g.op("PRelu", [gemm(g, x, k, M), g.const("s", g.rand((1, M)))]))
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "PRelu"]
    assert initializer(out, out.graph.node[-1].input[1]).shape == (M, 1, 1)
    assert_sliding(model, out, big_input((1, 3, 7, 6)), window=WINDOW)


def test_plain_batchnorm_on_n_m() -> None:
    def head(g, x, k):
        y = gemm(g, x, k, HIDDEN)
        bn = g.op("BatchNormalization", [y, *bn_inputs(g, HIDDEN)])
        return gemm(g, g.op("Relu", [bn]), HIDDEN, M)

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "BatchNormalization", "Relu", "Conv"]
    assert_sliding(model, out, big_input((1, 3, 6, 8)), window=WINDOW)


def test_head_mixing_with_backbone_tensor() -> None:
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 4] mix) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            fc = Gemm <transB = 1> (flat, w, b)
            pooled = GlobalAveragePool (conv)
            side_out = Flatten <axis = 1> (pooled)
            mix = Add (fc, side_out)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(C, 48),
        b=(C,),
    )
    reason = "Add 'mix' combines the head with non-constant tensor 'side_out'"
    assert_refused_head(model, Code.NON_CONSTANT_OPERAND, reason)


def test_per_feature_constant_of_wrong_width() -> None:
    model = fc_head_model("scale = Mul (fc, c)", "float[3, 5] scale", c=(3, M))
    reason = "Mul 'scale': constant 'c' of shape [3, 5] is neither per-feature nor scalar"
    assert_refused_head(model, Code.CONSTANT_SHAPE, reason)
