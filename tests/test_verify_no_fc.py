"""Models without an FC layer: same size at batch 1 and 2, and larger sizes against the original.

At a larger size the reference is the original graph itself with every input dim left free. Where
the original cannot run there, or pins an output to its exported shape, there is no other
reference: the size is not compared and a note says why.
"""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, backbone, ops
from onnx import numpy_helper
from test_verify_batch import as_converted

import onnx_fc2conv

C = 4


def _fully_convolutional() -> onnx.ModelProto:
    g = GraphBuilder()
    x = g.input("input", [1, 3, 6, 5])
    feat = backbone(g, backbone(g, x, 3, C), C, C)
    g.output(g.op("GlobalAveragePool", [feat]))
    return g.build()


def test_no_fc_model_is_verified_at_batch_2_and_larger_sizes() -> None:
    model = _fully_convolutional()
    result = onnx_fc2conv.convert(model)
    assert result.rewrites == []
    report = result.verification
    assert report.passed, report
    assert [(c.check, c.input_shape) for c in report.comparisons] == [
        ("same size", (1, 3, 6, 5)),
        ("same size", (2, 3, 6, 5)),
        ("larger size", (2, 3, 9, 7)),
        ("larger size", (2, 3, 9, 10)),
    ]
    assert all(
        c.output == "output" and c.shape == (2 if c.input_shape[0] == 2 else 1, C, 1, 1) for c in report.comparisons
    )


def test_no_fc_model_with_one_changed_weight_fails_everywhere() -> None:
    model = _fully_convolutional()
    converted = onnx_fc2conv.convert(model).model
    kernel = next(t for t in converted.graph.initializer if t.name == converted.graph.node[-3].input[1])
    w = numpy_helper.to_array(kernel).copy()
    w[0] += 0.05  # one filter of the last Conv
    kernel.CopyFrom(numpy_helper.from_array(w, kernel.name))
    report = onnx_fc2conv.verify(model, converted)
    assert not report.passed and report.checker == "passed"
    assert [c.check for c in report.failures] == ["same size", "same size", "larger size", "larger size"]


def _size_pinning_reshape(target_from_shape: bool) -> onnx.ModelProto:
    """Conv -> Reshape to the map's own shape (a constant, or Shape of the map) -> GlobalAveragePool."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 6, 5])
    feat = backbone(g, x, 3, C)  # [1, C, 5, 4]
    if target_from_shape:
        target = g.op("Shape", [feat])
    else:
        target = g.const("target", np.array([1, C, 5, 4], np.int64))
    same = g.op("Reshape", [feat, target], name="pin")
    g.output(g.op("GlobalAveragePool", [same]))
    return g.build()


def test_original_that_cannot_run_at_larger_sizes_is_not_compared_there() -> None:
    original = _size_pinning_reshape(target_from_shape=False)
    converted = as_converted(_size_pinning_reshape(target_from_shape=True))
    report = onnx_fc2conv.verify(original, converted)
    assert report.passed, report
    assert [c.check for c in report.comparisons] == ["same size", "same size"]
    skipped = [n for n in report.notes if "is not compared" in n]
    assert len(skipped) == 2
    assert skipped[0].startswith("the original model cannot run: Reshape node 'pin': ")
    assert skipped[0].endswith(
        "; the converted model at [2, 3, 9, 7] is not compared (without FC heads the original is the only reference)"
    )


def _resized(by_scales: bool) -> onnx.ModelProto:
    """Conv -> Resize x2 (to fixed sizes, or by scales): the output is the upsampled map."""
    g = GraphBuilder(opset=13)
    x = g.input("input", [1, 3, 6, 5])
    feat = backbone(g, x, 3, C)  # [1, C, 5, 4]
    if by_scales:
        scales = g.const("scales", np.array([1, 1, 2, 2], np.float32))
        up = g.op("Resize", [feat, "", scales], mode="nearest")
    else:
        up = g.op("Resize", [feat, "", "", g.const("sizes", np.array([1, C, 10, 8], np.int64))], mode="nearest")
    g.output(up)
    return g.build()


def test_original_that_pins_an_output_to_its_exported_shape_is_not_compared() -> None:
    original = _resized(by_scales=False)
    converted = as_converted(_resized(by_scales=True))
    assert ops(converted).count("Resize") == 1
    report = onnx_fc2conv.verify(original, converted)
    assert report.passed, report
    assert [c.check for c in report.comparisons] == ["same size", "same size"]
    assert (
        "the original pins output 'output' to its exported shape [4, 10, 8] at larger inputs; "
        "the converted model's [4, 16, 12] is not compared"
    ) in report.notes


def _uint8_image(weight_delta: float = 0.0) -> onnx.ModelProto:
    """input uint8 [1, 3, 6, 5] -> Cast -> Conv 2x2 (no bias) -> GlobalAveragePool."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 6, 5], elem=onnx.TensorProto.UINT8)
    w = np.random.default_rng(0).standard_normal((C, 3, 2, 2)).astype(np.float32)
    w[0, 0, 0, 0] += weight_delta
    conv = g.op("Conv", [g.op("Cast", [x], to=onnx.TensorProto.FLOAT), g.const("w", w)], kernel_shape=[2, 2])
    g.output(g.op("GlobalAveragePool", [conv]), elem=onnx.TensorProto.FLOAT)
    return g.build()


def test_integer_input_is_fed_random_values_in_its_range() -> None:
    """Zeros would hide a changed weight of a bias-free Conv: values over 0..255 do not."""
    original = _uint8_image()
    assert onnx_fc2conv.verify(original, as_converted(original)).passed
    report = onnx_fc2conv.verify(original, as_converted(_uint8_image(weight_delta=0.01)))
    assert not report.passed
    assert [c.check for c in report.failures] == ["same size", "same size", "larger size", "larger size"]
