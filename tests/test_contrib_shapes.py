"""QOperator models: the shapes of onnxruntime's quantized ops are inferred (contrib_shapes.py),
so a head behind `QLinearGlobalAveragePool` is matched and its output declared as it runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

import onnx_fc2conv
from onnx_fc2conv.graph import value_info_dims
from onnx_fc2conv.shapes import inferred_skeleton

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_qoperator_global_pool_head_converts_and_verifies_at_batch_2_and_two_larger_sizes() -> None:
    result = onnx_fc2conv.convert(str(MODELS / "ort_qop_resnet_gap.onnx"))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops[-3:] == ["QLinearGlobalAveragePool", "QLinearConv", "DequantizeLinear"]
    assert "QGemm" not in ops and "Flatten" not in ops
    assert value_info_dims(result.model.graph.output[0]) == ("batch", 10, 1, 1)
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2
    assert result.verification.passed


def _qlinear_model() -> onnx.ModelProto:
    """uint8 [N, 4, H, W] -> QLinearConv 3x3 stride 2 -> QLinearAveragePool 2x2 -> QLinearGlobalAveragePool."""
    text = """
    <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
    g (uint8[N, 4, H, W] x) => (uint8[N, 8, 1, 1] y) {
        s = Constant <value = float {0.1}> ()
        z = Constant <value = uint8 {128}> ()
        ws = Constant <value = float {0.05}> ()
        wz = Constant <value = int8 {0}> ()
        c = QLinearConv <strides = [2, 2], pads = [1, 1, 1, 1]> (x, s, z, w, ws, wz, s, z)
        p = com.microsoft.QLinearAveragePool <kernel_shape = [2, 2], strides = [2, 2]> (c, s, z, s, z)
        y = com.microsoft.QLinearGlobalAveragePool <channels_last = 0> (p, s, z, s, z)
    }
    """
    model = onnx.parser.parse_model(text)
    w = np.random.default_rng(0).integers(-5, 5, (8, 4, 3, 3)).astype(np.int8)
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    return model


def test_qlinear_ops_get_their_float_ops_shape_arithmetic() -> None:
    model = _qlinear_model()
    inferred = inferred_skeleton(model)
    dims = {vi.name: value_info_dims(vi) for vi in inferred.graph.value_info}
    assert dims["c"] == ("N", 8, "floor(H/2 - 1/2) + 1", "floor(W/2 - 1/2) + 1")
    assert dims["p"] == ("N", 8, "floor(floor(H/2 - 1/2)/2 - 1/2) + 1", "floor(floor(W/2 - 1/2)/2 - 1/2) + 1")
    assert value_info_dims(inferred.graph.output[0]) == ("N", 8, 1, 1)
    # the same arithmetic as onnxruntime's kernels, at an odd size
    model.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.UINT8, None) for n in ("c", "p"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 255, (2, 4, 17, 12)).astype(np.uint8)
    _, c_out, p_out = sess.run(None, {"x": x})
    floor = math.floor
    assert c_out.shape == (2, 8, floor(17 / 2 - 1 / 2) + 1, floor(12 / 2 - 1 / 2) + 1) == (2, 8, 9, 6)
    assert p_out.shape == (2, 8, 4, 3)
