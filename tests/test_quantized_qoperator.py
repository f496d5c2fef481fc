"""QOperator FC layers: QLinearMatMul becomes QLinearConv and MatMulInteger becomes ConvInteger on the
same integers, rearranged; what onnxruntime cannot run exactly is refused with its reason."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, convert, dims, initializer, ops, run, session
from click.testing import CliRunner
from onnx import TensorProto, helper

import onnx_fc2conv
from onnx_fc2conv.cli import main

X_SCALE, Y_SCALE = np.array(0.05, np.float32), np.array(0.05, np.float32)
SPATIAL = (5, 4)  # the backbone's map is [4, 4, 3]: K = 48


def _weights(g: GraphBuilder, k: int, m: int, per_channel: bool, zero: int | list[int] = 0):
    rng = np.random.default_rng(g.seed)
    g.seed += 1
    ints = rng.integers(-127, 128, (k, m)).astype(np.int8)
    scale = (rng.uniform(0.005, 0.02, m) if per_channel else np.array(0.01)).astype(np.float32)
    zeros = np.asarray(zero[:m] if isinstance(zero, list) else zero, np.int8)  # per column: the first m
    zeros = np.broadcast_to(zeros, scale.shape).astype(np.int8)
    return ints, scale, zeros


def _quantize(g: GraphBuilder, x: str, scale: np.ndarray, zero: np.ndarray) -> tuple[str, str, str]:
    s, z = g.const("s", scale), g.const("z", zero)
    return g.op("QuantizeLinear", [x, s, z]), s, z


def _qlinear_head(per_channel: bool, quantized_bias: bool, zero: int | list[int] = 0, stored: dict | None = None):
    """`Flatten -> QuantizeLinear -> QLinearMatMul -> DQ -> Add(b) -> Relu -> QuantizeLinear -> QLinearMatMul
    [-> QLinearAdd(b_q)] -> DequantizeLinear`, as onnxruntime's QOperator format writes a MatMul head."""

    def head(g: GraphBuilder, flat: str, k: int) -> str:
        x, s, z = _quantize(g, flat, X_SCALE, np.array(0, np.uint8))
        ints, w_s, w_z = _weights(g, k, 6, per_channel, zero)
        if stored is not None:
            stored["first"] = ints
        y_s, y_z = g.const("y_s", Y_SCALE), g.const("y_z", np.array(128, np.uint8))
        y = g.op("QLinearMatMul", [x, s, z, g.const("w_q", ints), g.const("w_s", w_s), g.const("w_z", w_z), y_s, y_z])
        y = g.op("DequantizeLinear", [y, y_s, y_z])
        y = g.op("Relu", [g.op("Add", [y, g.const("b", g.rand((6,)))])])
        x, s, z = _quantize(g, y, X_SCALE, np.array(0, np.uint8))
        ints, w_s, w_z = _weights(g, 6, 5, per_channel, zero)
        y_s, y_z = g.const("y_s", np.array(0.02, np.float32)), g.const("y_z", np.array(128, np.uint8))
        y = g.op("QLinearMatMul", [x, s, z, g.const("w_q", ints), g.const("w_s", w_s), g.const("w_z", w_z), y_s, y_z])
        if quantized_bias:
            b = g.const("b_q", np.random.default_rng(7).integers(0, 255, 5).astype(np.uint8))
            b_s, b_z = g.const("b_s", np.array(0.01, np.float32)), g.const("b_z", np.array(128, np.uint8))
            out_s, out_z = g.const("o_s", np.array(0.03, np.float32)), g.const("o_z", np.array(120, np.uint8))
            y = g.op("QLinearAdd", [y, y_s, y_z, b, b_s, b_z, out_s, out_z], domain="com.microsoft")
            y_s, y_z = out_s, out_z
        return g.op("DequantizeLinear", [y, y_s, y_z])

    return head


def _model(head) -> onnx.ModelProto:
    """`input [1, 3, 5, 4] -> Conv/Relu -> Flatten -> head` (image_model, with com.microsoft's opset)."""
    g = GraphBuilder()
    flat = g.op("Flatten", [backbone(g, g.input("input", [1, 3, *SPATIAL]), 3, 4)], axis=1)
    g.output(head(g, flat, 48), shape=[1, 5])
    model = g.build(check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model, full_check=True)
    return model


def _assert_windows_within_one_unit(original: onnx.ModelProto, converted: onnx.ModelProto, unit: float) -> None:
    """Independent of the package's verifier: every window of a larger input, through the original."""
    x = np.random.default_rng(11).standard_normal((1, 3, 8, 7)).astype(np.float32)
    actual = run(converted, {"input": x})["output"]
    orig = session(original)
    assert actual.shape == (1, 5, 4, 4)
    for i, j in itertools.product(range(4), range(4)):
        (expected,) = orig.run(None, {"input": np.ascontiguousarray(x[:, :, i : i + 5, j : j + 4])})
        assert np.abs(actual[0, :, i, j] - expected[0]).max() <= unit * 1.001
    assert len(np.unique(actual)) > 10  # not saturated: the comparison says something


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("quantized_bias", [False, True])
def test_qlinear_matmul_becomes_qlinear_conv_on_the_same_integers(per_channel: bool, quantized_bias: bool) -> None:
    stored: dict[str, np.ndarray] = {}
    original = _model(_qlinear_head(per_channel, quantized_bias, stored=stored))
    result = convert(original, sizes=((9, 7), (8, 10)))
    tail = ["QLinearConv", "QLinearAdd", "DequantizeLinear"] if quantized_bias else ["QLinearConv", "DequantizeLinear"]
    assert ops(result.model) == [
        "Conv", "Relu", "QuantizeLinear", "QLinearConv", "DequantizeLinear", "Add", "Relu", "QuantizeLinear", *tail
    ]  # fmt: skip
    first = next(n for n in result.model.graph.node if n.op_type == "QLinearConv")
    kernel = initializer(result.model, first.input[3])
    assert kernel.dtype == np.int8 and kernel.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(kernel.reshape(6, -1), stored["first"].T)  # [K, M] columns, as integers
    assert initializer(result.model, first.input[4]).shape == ((6,) if per_channel else ())
    checks = {(c.check, c.input_shape[0], c.input_shape[2:]) for c in result.verification.comparisons}
    assert {("same size", 1, (5, 4)), ("same size", 2, (5, 4)), ("larger size", 2, (9, 7))} <= checks
    assert ("larger size", 2, (8, 10)) in checks
    assert any("is quantized: compared within one unit" in n for n in result.verification.notes)
    _assert_windows_within_one_unit(original, result.model, 0.03 if quantized_bias else 0.02)


def test_qlinear_matmul_with_per_column_zero_points_keeps_them() -> None:
    result = convert(_model(_qlinear_head(True, False, zero=[0, 3, -2, 5, 1, -4])), sizes=((9, 7),))
    first = next(n for n in result.model.graph.node if n.op_type == "QLinearConv")
    np.testing.assert_array_equal(initializer(result.model, first.input[5]), [0, 3, -2, 5, 1, -4])


def _integer_head(per_channel: bool, zero: int | list[int] = 0, stored: dict | None = None):
    """`Flatten -> QuantizeLinear -> MatMulInteger(x_q, W_q, x_z, w_z) -> Cast -> Mul(x_s * w_s) -> Add(b)
    -> Relu -> Gemm`: static integer-product quantization with the scale applied after."""

    def head(g: GraphBuilder, flat: str, k: int) -> str:
        x_zero = np.array(3, np.uint8)
        x, _, z = _quantize(g, flat, X_SCALE, x_zero)
        ints, w_s, w_z = _weights(g, k, 6, per_channel, zero)
        if stored is not None:
            stored["w"] = ints
        y = g.op("MatMulInteger", [x, g.const("w_q", ints), z, g.const("w_z", w_z)])
        y = g.op("Mul", [g.op("Cast", [y], to=TensorProto.FLOAT), g.const("s", (w_s * X_SCALE).astype(np.float32))])
        y = g.op("Relu", [g.op("Add", [y, g.const("b", g.rand((6,)))])])
        return g.op("Gemm", [y, g.const("w2", g.rand((5, 6)))], transB=1)

    return head


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("zero", [0, 4])
def test_matmul_integer_becomes_conv_integer_on_the_same_integers(per_channel: bool, zero: int) -> None:
    stored: dict[str, np.ndarray] = {}
    original = _model(_integer_head(per_channel, zero, stored))
    result = convert(original, sizes=((9, 7), (8, 10)))
    assert ops(result.model) == ["Conv", "Relu", "QuantizeLinear", "ConvInteger", "Cast", "Mul", "Add", "Relu", "Conv"]
    node = next(n for n in result.model.graph.node if n.op_type == "ConvInteger")
    kernel = initializer(result.model, node.input[1])
    assert kernel.dtype == np.int8 and kernel.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(kernel.reshape(6, -1), stored["w"].T)
    w_zero = initializer(result.model, node.input[3])
    assert w_zero.size == 1 and int(w_zero.reshape(())) == zero  # per column but all equal: one value
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2
    # the int32 product is exact and the float arithmetic after it unchanged: equal within float order
    assert max(c.max_abs for c in result.verification.comparisons) <= 1e-5


def test_matmul_integer_with_differing_column_zero_points_is_refused() -> None:
    found = onnx_fc2conv.inspect(_model(_integer_head(True, zero=[0, 1, 2, 3, 4, 5])))
    assert [(s.code.value, s.reason) for s in found.skipped] == [
        (
            "quantized-operator",
            "MatMulInteger 'matmulinteger_11': its weight zero points differ per column, "
            "and onnxruntime's ConvInteger takes one",
        )
    ]


@pytest.mark.parametrize(
    ("head", "shown"),
    [
        (_qlinear_head(True, False), ["int8 per-channel, scales [6]", "int8 per-channel, scales [5]"]),
        (_qlinear_head(False, True), ["int8 per-tensor, scales []", "int8 per-tensor, scales []"]),
        (_integer_head(True, 2), ["int8 integer product, zero point [6], scaled after", ""]),
    ],
)
def test_inspect_shows_the_quantization_of_integer_layers(head, shown: list[str]) -> None:
    from onnx_fc2conv.report import head_dict

    (found,) = onnx_fc2conv.inspect(_model(head)).heads
    assert [layer["quantization"] for layer in head_dict(found)["layers"]] == [s or None for s in shown]


def test_cli_converts_and_verifies_a_qlinear_matmul_head(tmp_path) -> None:
    source, target = tmp_path / "q.onnx", tmp_path / "q_fc.onnx"
    onnx.save(_model(_qlinear_head(True, True)), str(source))
    result = CliRunner().invoke(main, ["convert", str(source), str(target), "--size", "9x7", "--size", "8x10"])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASSED  larger size") == 2
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(target)).graph.node}


MODELS = Path(__file__).resolve().parent.parent / "models"
GOLDEN_MATMUL = ["ort_qop_mm_pt_keras_mnist.onnx", "ort_qop_mm_pc_keras_mnist.onnx", "ort_qop_all_keras_mnist.onnx"]


@pytest.mark.parametrize("name", GOLDEN_MATMUL)
def test_golden_qlinear_matmul_behind_a_channel_last_flatten(name: str) -> None:
    """onnxruntime's QOperator MatMul head on Keras' NHWC flatten: the int8 `[K, M]` weight, K in
    (h, w, c) order, becomes the `[M, C, H, W]` kernel by transposes of the integers only."""
    original = onnx.load(str(MODELS / name))
    result = convert(original)
    written = ops(result.model)
    assert "QLinearMatMul" not in written and "Reshape" not in written
    assert written.count("Transpose") == 1  # the input's NHWC -> NCHW; the flatten's went into the kernel
    first, second = [n for n in result.model.graph.node if n.op_type == "QLinearConv"][-2:]
    stored = initializer(original, "sequential/dense/MatMul/ReadVariableOp:0_quantized")  # [K, M]
    kernel = initializer(result.model, first.input[3])
    m, c, h, w = kernel.shape
    assert kernel.dtype == np.int8 == stored.dtype and (c, h * w * c) == (stored.shape[0] // (h * w), stored.shape[0])
    np.testing.assert_array_equal(kernel, stored.T.reshape(m, h, w, c).transpose(0, 3, 1, 2))
    assert initializer(result.model, second.input[3]).shape[2:] == (1, 1)
    if "_pt_" not in name:  # the quantized bias moved to [M, 1, 1], its integers unchanged
        add = next(n for n in result.model.graph.node if n.op_type == "QLinearAdd")
        bias = initializer(result.model, add.input[3])
        np.testing.assert_array_equal(bias.reshape(-1), initializer(original, add.input[3].removesuffix("_conv")))
        assert bias.shape == (m, 1, 1) and initializer(result.model, first.input[4]).shape == (m,)
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2
    assert dims(result.model.graph.output[0])[2:] == ["out_height", "out_width"]
    # the smallest input is the float model's: a window op's empty map is found behind QLinearAdd too
    assert result.valid_sizes is not None and result.valid_sizes.minimum == (26, 26)


@pytest.mark.parametrize(
    ("name", "source"),
    [("ort_qop_mm_pc_keras_mnist.onnx", "keras_mnist_dynbatch.onnx"), ("ort_qop_vgg_small.onnx", "ts_vgg_small.onnx")],
)
def test_qlinear_conv_heads_have_the_window_geometry_of_the_float_model(name: str, source: str) -> None:
    quantized = onnx_fc2conv.window_geometry(str(MODELS / name))["output"]
    expected = onnx_fc2conv.window_geometry(str(MODELS / source))["output"]
    assert not isinstance(quantized, str), quantized
    assert quantized.as_dict() == expected.as_dict()


@pytest.mark.parametrize(
    ("head", "shown"),
    [
        (_qlinear_head(True, True), ["int8 per-channel, scales [6]", "int8 per-channel, scales [5]"]),
        (_integer_head(False, 3), ["int8 integer product, zero point [], scaled after", ""]),
    ],
)
def test_the_conversion_report_shows_the_quantization_of_integer_layers(head, shown: list[str]) -> None:
    from onnx_fc2conv.report import conversion_payload, head_lines

    result = onnx_fc2conv.convert(_model(head), onnx_fc2conv.ConvertOptions(verify=False))
    layers = conversion_payload(result)["heads"][0]["layers"]
    assert [layer["quantization"] for layer in layers] == [s or None for s in shown]
    rewrite = result.rewrites[0]
    lines = head_lines(1, rewrite.head, rewrite.layers)
    assert all(f"({text})" in "\n".join(lines) for text in shown if text)
