"""rules/tail_legacy_softmax: before opset 13 a Softmax-family op on the map normalises per pixel
(classes moved last, normalised, moved back), not over `M * h * w` jointly."""

from __future__ import annotations

import pytest
from builders import assert_sliding, big_input, convert, gemm, image_model, ops
from rule_support import assert_class_axis_normalised, fc_head_model, refused, skipped

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, M = 4, 5
HIDDEN = 6


@pytest.mark.parametrize(
    ("op", "axis"),
    [("Softmax", None), ("Softmax", 1), ("Softmax", -1), ("LogSoftmax", None), ("Hardmax", 1)],
)
def test_class_axis_normalisation_opset11(op: str, axis: int | None) -> None:
    assert_class_axis_normalised(op, 11, axis, ["Transpose", op, "Transpose"])


def test_legacy_softmax_between_fcs() -> None:
    model = image_model(lambda g, x, k: gemm(g, g.op("Softmax", [gemm(g, x, k, HIDDEN)]), HIDDEN, M), opset=11)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Transpose", "Softmax", "Transpose", "Conv"]
    assert_sliding(model, result.model, big_input((2, 3, 7, 6)), window=(5, 4))


def test_legacy_softmax_over_the_batch_axis() -> None:
    model = fc_head_model("sm = Softmax <axis = 0> (fc)", "float[1, 5] sm", opset=11)
    err = refused(model)
    assert err.reasons == ["fc: Softmax 'sm' works on axis 0, not the class axis"]
    assert skipped(model) == [("fc", Code.CLASS_AXIS, "Softmax 'sm' works on axis 0, not the class axis")]
    assert onnx_fc2conv.inspect(model).opset == 11
