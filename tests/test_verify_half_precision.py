"""A model that computes in float16 between float32 inputs and outputs (what
`convert_float_to_float16(..., keep_io_types=True)` writes) is held to the float16 tolerance, not
to float32's: its outputs carry float16 rounding. A changed weight still fails."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, convert, gemm, image_model, ops
from onnx import TensorProto, numpy_helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions
from onnx_fc2conv.verify.model_types import half_precision

C, M, SPATIAL = 16, 10, (9, 8)


def _half_inside() -> onnx.ModelProto:
    """`input f32 -> Cast(f16) -> Conv 2x2 -> Relu -> Flatten -> Gemm -> Relu -> Gemm -> Cast(f32)`."""
    g = GraphBuilder(opset=17, dtype=np.float16)
    x = g.input("input", ["N", 3, *SPATIAL], elem=TensorProto.FLOAT)
    y = g.op("Cast", [x], to=TensorProto.FLOAT16)
    y = g.op("Conv", [y, g.const("conv_w", g.rand((C, 3, 2, 2))), g.const("conv_b", g.rand((C,)))], kernel_shape=[2, 2])
    y = g.op("Flatten", [g.op("Relu", [y])], axis=1)
    k = C * (SPATIAL[0] - 1) * (SPATIAL[1] - 1)
    y = g.op("Gemm", [y, g.const("fc1_w", g.rand((32, k), 0.05)), g.const("fc1_b", g.rand((32,)))], transB=1)
    y = g.op("Gemm", [g.op("Relu", [y]), g.const("fc2_w", g.rand((M, 32))), g.const("fc2_b", g.rand((M,)))], transB=1)
    g.output(g.op("Cast", [y], to=TensorProto.FLOAT), elem=TensorProto.FLOAT, shape=["N", M])
    return g.build()


def test_half_precision_is_read_from_weights_and_casts() -> None:
    assert half_precision(_half_inside()) == "float16"
    model = _half_inside()
    for t in model.graph.initializer:  # float32 weights; the Cast still says float16
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    assert half_precision(model) == "float16"
    assert half_precision(image_model(lambda g, x, k: gemm(g, x, k, M))) == ""


def test_float32_outputs_of_float16_arithmetic_get_the_float16_bound() -> None:
    result = convert(_half_inside())
    assert ops(result.model) == ["Cast", "Conv", "Relu", "Conv", "Relu", "Conv", "Cast"]
    larger = [c for c in result.verification.comparisons if c.check == "larger size"]
    assert larger and all(c.passed for c in larger)
    for c in larger:  # the float16 bound: rtol x 100 (an output of magnitude >= 1 also gets atol x 100 of it)
        assert c.allowed >= 1e-2 * c.max_abs / max(c.max_rel, 1e-30) * 0.99


def test_a_changed_weight_still_fails() -> None:
    original = _half_inside()
    converted = onnx_fc2conv.convert(original, ConvertOptions(verify=False)).model
    for t in converted.graph.initializer:
        if t.data_type == TensorProto.FLOAT16 and len(t.dims) == 4 and t.dims[0] == M:
            w = numpy_helper.to_array(t).copy()
            w.flat[0] += np.float16(1.0)
            t.CopyFrom(numpy_helper.from_array(w, t.name))
            break
    else:
        raise AssertionError("no last-layer kernel found")
    assert not onnx_fc2conv.verify(original, converted).passed


def test_a_stale_value_info_on_the_output_does_not_type_the_reference() -> None:
    """convert_float_to_float16 leaves `value_info` entries saying float16 for the float32 output its
    last Cast writes; the reference's cut of the original head takes the inferred type."""
    model = _half_inside()
    output = model.graph.output[0].name
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(output, TensorProto.FLOAT16, ["N", M]))
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed
    assert {c.check for c in result.verification.comparisons} >= {"same size", "larger size"}
