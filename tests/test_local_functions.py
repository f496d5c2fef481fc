"""Model-local functions (TorchScript's export_modules_as_functions wraps each Conv2d and Linear in
one) are inlined before anything reads the model: the head inside them is found and converted, and
the original that verification runs is inlined alike."""

from __future__ import annotations

import onnx
from builders import assert_sliding, big_input, convert, ops, rand
from onnx import numpy_helper
from rule_support import WINDOW, C, M

_MODEL = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N, 3, 5, 4] input) => (float[N, 5] fc) {
    conv = local.Conv2d (input, conv_w)
    flat = Flatten <axis = 1> (conv)
    fc = local.Linear (flat, w, b)
}
<domain: "local", opset_import: ["" : 17]>
Conv2d (x, kernel) => (y) {
    y = Conv <kernel_shape = [2, 2]> (x, kernel)
}
<domain: "local", opset_import: ["" : 17]>
Linear (x, weight, bias) => (y) {
    y = Gemm <transB = 1> (x, weight, bias)
}
"""


def function_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(_MODEL)
    for seed, (name, shape) in enumerate({"conv_w": (C, 3, 2, 2), "w": (M, 48), "b": (M,)}.items()):
        model.graph.initializer.append(numpy_helper.from_array(rand(shape, seed, scale=0.5), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_head_inside_local_functions_is_converted() -> None:
    model = function_model()
    result = convert(model)
    assert ops(result.model) == ["Conv", "Conv"]
    assert not result.model.functions
    assert result.notices[0] == "model-local functions inlined (Conv2d, Linear)"
    assert_sliding(model, result.model, big_input((2, 3, 8, 7)), WINDOW)
