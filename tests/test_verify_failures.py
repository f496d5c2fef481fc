"""Failures say why in one line: the row names the output; a model that cannot run names the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import gemm, image_model
from onnx import helper, numpy_helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, VerificationError
from onnx_fc2conv.api import verify_conversion

M = 3


def _pinned_after_backbone(converted: onnx.ModelProto) -> onnx.ModelProto:
    """The converted model with an `Add` of a `[1, C, 4, 3]` constant on the feature map: it runs at
    the original size only (a rewrite that left a size baked in)."""
    bad = onnx.ModelProto()
    bad.CopyFrom(converted)
    relu = next(n for n in bad.graph.node if n.op_type == "Relu")
    for node in bad.graph.node:
        node.input[:] = ["pinned_out" if i == relu.output[0] else i for i in node.input]
    bias = numpy_helper.from_array(np.zeros((1, 4, 4, 3), np.float32), "pinned_bias")
    bad.graph.initializer.append(bias)
    add = helper.make_node("Add", [relu.output[0], "pinned_bias"], ["pinned_out"], name="pinned")
    index = list(bad.graph.node).index(relu)
    bad.graph.node.insert(index + 1, add)
    return bad


@pytest.fixture(scope="module")
def models() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    model = image_model(lambda g, x, k: gemm(g, x, k, M))  # input [N, 3, 5, 4], feature map [4, 4, 3]
    return model, onnx_fc2conv.convert(model).model


def test_converted_model_that_cannot_run_at_a_larger_size(models) -> None:
    original, converted = models
    report = onnx_fc2conv.verify(original, _pinned_after_backbone(converted))
    assert [(c.check, c.passed) for c in report.comparisons] == [
        ("same size", True),
        ("same size", True),
        ("larger size", False),
        ("larger size", False),
    ]
    for row in report.failures:
        assert row.output == "output"  # the output, not the input
        assert row.note.startswith(f"the converted model at {list(row.input_shape)} cannot run: Add node 'pinned': ")
        assert "\n" not in row.note and len(row.note) < 400


def test_failure_line_names_output_check_and_cause(models) -> None:
    original, converted = models
    result = onnx_fc2conv.convert(original)
    result.model = _pinned_after_backbone(converted)
    with pytest.raises(VerificationError) as caught:
        verify_conversion(original, result, ConvertOptions())
    assert str(caught.value) == (
        "verification FAILED: output 'output' (larger size, input [2, 3, 8, 6]): "
        "the converted model at [2, 3, 8, 6] cannot run: Add node 'pinned': "
        "Attempting to broadcast an axis by a dimension other than 1. 3 by 5"
    )


def test_failure_line_gives_the_error_as_a_fraction_of_the_bound(models) -> None:
    original, converted = models
    bad = onnx.ModelProto()
    bad.CopyFrom(converted)
    bias = next(t for t in bad.graph.initializer if t.name == bad.graph.node[-1].input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.5), bias.name))
    result = onnx_fc2conv.convert(original)
    result.model = bad
    with pytest.raises(VerificationError) as caught:
        verify_conversion(original, result, ConvertOptions())
    message = str(caught.value)
    assert message.startswith(
        "verification FAILED: output 'output' (same size, input [1, 3, 5, 4]): max abs error 0.5, "
    )
    assert "x the allowed " in message
