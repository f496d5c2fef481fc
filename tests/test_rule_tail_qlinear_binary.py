"""rules/tail_qlinear_binary: QLinearAdd / QLinearMul after an FC layer move their per-feature integers
onto the channel axis; per-channel scales are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, convert, dims, initializer, ops
from onnx import helper

import onnx_fc2conv


def _model(op: str, operand_shape: tuple[int, ...], scale_shape: tuple[int, ...] = ()) -> onnx.ModelProto:
    """`Conv/Relu -> Flatten -> QuantizeLinear -> QLinearMatMul -> <op>(., b_q) -> DequantizeLinear`."""
    g = GraphBuilder()
    flat = g.op("Flatten", [backbone(g, g.input("input", [1, 3, 5, 4]), 3, 4)], axis=1)
    rng = np.random.default_rng(0)
    x_s, x_z = g.const("x_s", np.array(0.05, np.float32)), g.const("x_z", np.array(0, np.uint8))
    y_s, y_z = g.const("y_s", np.array(0.05, np.float32)), g.const("y_z", np.array(128, np.uint8))
    weight = g.const("w_q", rng.integers(-127, 128, (48, 5)).astype(np.int8))
    w_s, w_z = g.const("w_s", np.array(0.01, np.float32)), g.const("w_z", np.array(0, np.int8))
    y = g.op("QLinearMatMul", [g.op("QuantizeLinear", [flat, x_s, x_z]), x_s, x_z, weight, w_s, w_z, y_s, y_z])
    b = g.const("b_q", rng.integers(100, 160, operand_shape).astype(np.uint8), exact_name=True)
    b_s = g.const("b_s", np.full(scale_shape, 0.02, np.float32), exact_name=True)
    o_s, o_z = g.const("o_s", np.array(0.05, np.float32)), g.const("o_z", np.array(128, np.uint8))
    y = g.op(op, [y, y_s, y_z, b, b_s, g.const("b_z", np.array(128, np.uint8)), o_s, o_z], domain="com.microsoft")
    g.output(g.op("DequantizeLinear", [y, o_s, o_z]), shape=[1, 5])
    model = g.build(check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("operand_shape", [(5,), (1, 5)])
def test_per_feature_integers_move_to_the_channel_axis(op: str, operand_shape: tuple[int, ...]) -> None:
    original = _model(op, operand_shape)
    result = convert(original, sizes=((9, 7),))
    assert ops(result.model) == ["Conv", "Relu", "QuantizeLinear", "QLinearConv", op, "DequantizeLinear"]
    node = next(n for n in result.model.graph.node if n.op_type == op)
    moved = initializer(result.model, node.input[3])
    assert moved.shape == (5, 1, 1) and moved.dtype == np.uint8
    np.testing.assert_array_equal(moved.reshape(-1), initializer(original, "b_q").reshape(-1))
    # onnx's shape inference does not know the com.microsoft op; the symbolic pass gives the map's shape
    assert dims(result.model.graph.output[0]) == ["batch", 5, "out_height", "out_width"]


def test_a_scalar_operand_stays() -> None:
    result = convert(_model("QLinearAdd", ()), sizes=((9, 7),))
    node = next(n for n in result.model.graph.node if n.op_type == "QLinearAdd")
    assert node.input[3] == "b_q" and initializer(result.model, "b_q").shape == ()


def test_a_per_channel_scale_is_refused() -> None:
    found = onnx_fc2conv.inspect(_model("QLinearAdd", (5,), scale_shape=(5,)))
    assert [s.code.value for s in found.skipped] == ["qdq-per-channel"]
    assert "scale or zero point 'b_s' is not one value" in found.skipped[0].reason
