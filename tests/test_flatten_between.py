"""Elementwise ops with scalar constants between the flatten and the first FC move onto the map."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import assert_sliding, big_input, ops
from rule_support import assert_refused_head, text_model

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code


def _model(between: str) -> onnx.ModelProto:
    return text_model(
        f"""
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc) {{
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            {between}
            fc = Gemm <transB = 1> (x, w, b)
        }}
        """,
        conv_w=(4, 3, 2, 2),
        w=(5, 48),
        b=(5,),
        scale=np.array(0.5, np.float32),
        target=np.array([1, 48], np.int64),
    )


def test_dropout_and_a_scalar_mul_move_onto_the_map() -> None:
    model = _model("d = Dropout (flat)\n            x = Mul (d, scale)")
    result = onnx_fc2conv.convert(model)
    assert ops(result.model) == ["Conv", "Dropout", "Mul", "Conv"]
    assert result.heads[0].description == "Flatten -> Dropout -> Mul -> Gemm"
    assert result.heads[0].linear
    assert_sliding(model, result.model, big_input((1, 3, 8, 7)), window=(5, 4))


def test_a_relu_between_makes_the_head_nonlinear() -> None:
    model = _model("x = Relu (flat)")
    result = onnx_fc2conv.convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
    assert not result.heads[0].linear
    assert_sliding(model, result.model, big_input((1, 3, 8, 7)), window=(5, 4))


@pytest.mark.parametrize(
    ("redundant", "description"),
    [
        ("x = Reshape (flat, target)", "Flatten -> Reshape -> Gemm"),
        ("x = Flatten <axis = 1> (flat)", "Flatten -> Flatten -> Gemm"),
        ("r = Reshape (flat, target)\n            x = Flatten <axis = 1> (r)", "Flatten -> Reshape -> Flatten -> Gemm"),
    ],
)
def test_a_second_flatten_that_changes_nothing_goes_with_the_first(redundant: str, description: str) -> None:
    """`nn.Flatten()` then `x.reshape(n, -1)` in forward: the second is a no-op on [N, K]."""
    model = _model(redundant)
    result = onnx_fc2conv.convert(model)
    assert ops(result.model) == ["Conv", "Conv"]
    assert result.heads[0].description == description
    assert_sliding(model, result.model, big_input((1, 3, 8, 7)), window=(5, 4))


def test_a_flattened_tensor_read_elsewhere_is_still_refused() -> None:
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc, float[1, 48] x) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            x = Reshape (flat, target)
            fc = Gemm <transB = 1> (x, w, b)
        }
        """,
        conv_w=(4, 3, 2, 2),
        w=(5, 48),
        b=(5,),
        target=np.array([1, 48], np.int64),
    )
    assert_refused_head(model, Code.SHARED_FLATTEN, "the flattened tensor 'x' before Gemm 'fc' is also used elsewhere")
