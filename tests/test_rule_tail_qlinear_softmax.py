"""rules/tail_qlinear_softmax: QLinearSoftmax (com.microsoft) over the classes normalises per location on a map."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, convert, ops
from onnx import helper

import onnx_fc2conv


def _model(opset: int, axis: int = -1) -> onnx.ModelProto:
    """`Conv/Relu -> Flatten -> QuantizeLinear -> QLinearMatMul -> QLinearSoftmax -> DequantizeLinear`."""
    g = GraphBuilder()
    flat = g.op("Flatten", [backbone(g, g.input("input", [1, 3, 5, 4]), 3, 4)], axis=1)
    rng = np.random.default_rng(0)
    x_s, x_z = g.const("x_s", np.array(0.05, np.float32)), g.const("x_z", np.array(0, np.uint8))
    y_s, y_z = g.const("y_s", np.array(0.05, np.float32)), g.const("y_z", np.array(128, np.uint8))
    weight = g.const("w_q", rng.integers(-127, 128, (48, 5)).astype(np.int8))
    w_s, w_z = g.const("w_s", np.array(0.01, np.float32)), g.const("w_z", np.array(0, np.int8))
    y = g.op("QLinearMatMul", [g.op("QuantizeLinear", [flat, x_s, x_z]), x_s, x_z, weight, w_s, w_z, y_s, y_z])
    o_s, o_z = g.const("o_s", np.array(1 / 256, np.float32)), g.const("o_z", np.array(0, np.uint8))
    y = g.op("QLinearSoftmax", [y, y_s, y_z, o_s, o_z], domain="com.microsoft", axis=axis, opset=opset)
    g.output(g.op("DequantizeLinear", [y, o_s, o_z]), shape=[1, 5])
    model = g.build(check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


@pytest.mark.parametrize("opset", [12, 13])  # before 13: coerced to 2-D at axis, which opset 13's semantics avoid
def test_the_classes_are_normalised_per_location(opset: int) -> None:
    result = convert(_model(opset), sizes=((9, 7), (8, 10)))
    assert ops(result.model) == ["Conv", "Relu", "QuantizeLinear", "QLinearConv", "QLinearSoftmax", "DequantizeLinear"]
    node = next(n for n in result.model.graph.node if n.op_type == "QLinearSoftmax")
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == {"axis": 1, "opset": 13}
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2


def test_another_axis_is_refused() -> None:
    found = onnx_fc2conv.inspect(_model(13, axis=0))
    assert [s.code.value for s in found.skipped] == ["class-axis"]
    assert "QLinearSoftmax" in found.skipped[0].reason and "works on axis 0" in found.skipped[0].reason
