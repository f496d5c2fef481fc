"""Quantized heads: QDQ heads become Convs on the same integers; other forms are refused by code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, convert, dims, image_model, initializer, ops
from onnx import TensorProto

import onnx_fc2conv
from onnx_fc2conv.errors import NotConvertibleError

MODELS = Path(__file__).resolve().parent.parent / "models"
GOLDEN_QDQ = ["ort_qdq_pt_vgg_small.onnx", "ort_qdq_pc_vgg_small.onnx"]
GOLDEN_QDQ_POOLED = ["ort_qdq_pt_resnet_gap.onnx", "ort_qdq_pc_resnet_gap.onnx"]


def _pair(g: GraphBuilder, x: str, scale: np.ndarray, zero: np.ndarray, axis: int = 1) -> str:
    q = g.op("QuantizeLinear", [x, g.const("s", scale), g.const("z", zero)], axis=axis)
    return g.op("DequantizeLinear", [q, g.const("s", scale), g.const("z", zero)], axis=axis)


def _qdq_gemm(g: GraphBuilder, x: str, k: int, m: int, x_scale: float, *, per_channel: bool = True) -> str:
    """`Gemm(x, DQ(W int8 [m, k]), DQ(b int32 [m]))`, transB=1, as onnxruntime writes it (the bias
    scale is the input's times the weight's, so that onnxruntime fuses it into QGemm exactly)."""
    rng = np.random.default_rng(g.seed)
    g.seed += 1
    ints = rng.integers(-127, 128, (m, k)).astype(np.int8)
    scale = (rng.uniform(0.002, 0.02, m) if per_channel else np.array(0.01)).astype(np.float32)
    zero = np.zeros(scale.shape, np.int8)
    w = g.op("DequantizeLinear", [g.const("w_q", ints), g.const("w_s", scale), g.const("w_z", zero)], axis=0)
    bias_scale = np.broadcast_to(scale * np.float32(x_scale), (m,)).astype(np.float32)
    b_ints = g.const("b_q", rng.integers(-500, 500, m).astype(np.int32))
    b = g.op("DequantizeLinear", [b_ints, g.const("b_s", bias_scale), g.const("b_z", np.zeros(m, np.int32))], axis=0)
    return g.op("Gemm", [x, w, b], transB=1)


ACT_SCALE = np.array(0.05, np.float32)


def _qdq_head(per_channel: bool = True, act_scale: np.ndarray = ACT_SCALE, tail_axis_scale: bool = False):
    def head(g: GraphBuilder, flat: str, k: int) -> str:
        x = _pair(g, flat, act_scale, np.zeros(act_scale.shape, np.uint8))
        y = g.op("Relu", [_qdq_gemm(g, x, k, 6, float(act_scale.reshape(-1)[0]), per_channel=per_channel)])
        y = _pair(g, y, np.array(0.02, np.float32), np.array(0, np.uint8))
        y = _qdq_gemm(g, y, 6, 5, 0.02, per_channel=per_channel)
        out_scale = np.full(5, 0.03, np.float32) if tail_axis_scale else np.array(0.03, np.float32)
        return _pair(g, y, out_scale, np.full(out_scale.shape, 128, np.uint8), axis=-1)

    return head


@pytest.mark.parametrize("per_channel", [True, False])
def test_qdq_head_becomes_convs_behind_the_same_dequantize(per_channel: bool) -> None:
    model = image_model(_qdq_head(per_channel), spatial=(5, 4), batch=1)
    result = convert(model, sizes=((9, 7), (8, 10)))
    # the activation pair moved onto the map; each kernel and bias behind its own DequantizeLinear
    assert ops(result.model) == [
        "Conv", "Relu", "QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv",
        "Relu", "QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv",
        "QuantizeLinear", "DequantizeLinear",
    ]  # fmt: skip
    assert {tuple(c.input_shape[2:]) for c in result.verification.comparisons if c.check == "larger size"} == {
        (9, 7),
        (8, 10),
    }


def _written_weights(model: onnx.ModelProto) -> list[tuple[np.ndarray, str, str, int]]:
    """(integers, scale name, zero point name, axis) of every DequantizeLinear feeding a Conv kernel."""
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in producers:
            dq = producers[node.input[1]]
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            zero = dq.input[2] if len(dq.input) > 2 else ""
            found.append((initializer(model, dq.input[0]), dq.input[1], zero, axis))
    return found


@pytest.mark.parametrize("name", GOLDEN_QDQ)
def test_golden_qdq_writes_the_same_int8_values_rearranged(name: str) -> None:
    original = onnx.load(str(MODELS / name))
    result = convert(original)
    written = _written_weights(result.model)
    head = [w for w in written if w[0].ndim == 4 and w[0].shape[2:] != (3, 3)]
    assert [w[0].shape for w in head] == [(64, 16, 4, 4), (64, 64, 1, 1), (10, 64, 1, 1)]
    for ints, scale, zero, axis in head:
        stem = scale.removesuffix("_scale")
        before = initializer(original, f"{stem}_quantized")
        assert ints.dtype == np.int8 == before.dtype
        np.testing.assert_array_equal(ints.reshape(before.shape), before)  # [M, K] rows, only reshaped
        assert zero == f"{stem}_zero_point"
        assert initializer(result.model, scale).size == 1 or axis == 0


@pytest.mark.parametrize("name", GOLDEN_QDQ + GOLDEN_QDQ_POOLED)
def test_golden_qdq_verifies_at_batch_2_and_two_larger_sizes(name: str) -> None:
    result = convert(onnx.load(str(MODELS / name)))
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) >= 2
    assert any("is quantized: compared within one unit" in n for n in result.verification.notes)


@pytest.mark.parametrize(
    ("name", "code", "node"),
    [
        ("ort_dyn_vgg_small.onnx", "dynamic-quantization", "DynamicQuantizeLinear '/classifier/classifier.4/Relu"),
        ("ort_dyn_resnet_gap.onnx", "dynamic-quantization", "DynamicQuantizeLinear '/Flatten_output_0_Quantize"),
        ("ort_dyn_vgg_small.onnx", "dynamic-quantization", "MatMulInteger '/classifier/classifier.6/Gemm_MatMul_quant"),
    ],
)
def test_dynamic_and_operator_quantization_are_refused_naming_the_node(name: str, code: str, node: str) -> None:
    found = onnx_fc2conv.inspect(str(MODELS / name))
    assert code in {s.code.value for s in found.skipped}
    with pytest.raises(NotConvertibleError) as caught:
        onnx_fc2conv.convert(str(MODELS / name))
    assert any(node in reason for reason in caught.value.reasons)
    if code == "dynamic-quantization":  # it leads the message
        assert str(caught.value).startswith("no FC head can be rewritten exactly: DynamicQuantizeLinear '")


def test_golden_qoperator_qgemm_becomes_qlinearconv_on_the_same_integers() -> None:
    original = onnx.load(str(MODELS / "ort_qop_vgg_small.onnx"))
    result = convert(original)
    head = [n for n in result.model.graph.node if n.op_type == "QLinearConv"][-3:]
    assert not any(n.op_type == "QGemm" for n in result.model.graph.node)
    names = [n.input[3].removesuffix("_conv") for n in head]  # reshaped in place or copied
    assert names == [f"classifier.{i}.weight_quantized" for i in (0, 3, 6)]
    for node, name in zip(head, names, strict=True):  # same operands in QLinearConv's order
        kernel = initializer(result.model, node.input[3])
        before = initializer(original, name)
        assert kernel.dtype == np.int8 and kernel.ndim == 4
        np.testing.assert_array_equal(kernel.reshape(before.shape), before)
        stem = name.removesuffix("_quantized")
        assert list(node.input[4:6]) == [f"{stem}_scale", f"{stem}_zero_point"]
        assert node.input[8] == f"{stem.removesuffix('.weight')}.bias_quantized"
    assert any("is quantized" in n for n in result.verification.notes)
    # onnxruntime's symbolic inference does not know QLinearConv; onnx's own gives the class count
    assert dims(result.model.graph.output[0]) == ["batch", 10, "out_height", "out_width"]


def test_qgemm_with_a_float_output_is_refused() -> None:
    model = onnx.load(str(MODELS / "ort_qop_vgg_small.onnx"))
    last = next(n for n in model.graph.node if n.op_type == "QGemm" and n.output[0] == "output_quantized")
    del last.input[7:]  # no output scale: QGemm dequantizes to float
    found = onnx_fc2conv.inspect(model)
    assert [(s.code.value, s.reason) for s in found.skipped] == [
        ("quantized-operator", "QGemm '/classifier/classifier.6/Gemm_quant' has a float output: no QLinearConv form")
    ]


def _refusal(model: onnx.ModelProto) -> tuple[str, str]:
    found = onnx_fc2conv.inspect(model)
    assert len(found.skipped) == 1, found.skipped
    return found.skipped[0].code.value, found.skipped[0].reason


def test_per_channel_quantization_of_the_flattened_vector_is_refused() -> None:
    model = image_model(_qdq_head(act_scale=np.full(48, 0.05, np.float32)), spatial=(5, 4), batch=1)
    code, reason = _refusal(model)
    assert code == "qdq-per-channel"
    assert "quantizes the flattened vector per channel" in reason


def test_weight_quantized_per_input_feature_is_refused() -> None:
    def head(g: GraphBuilder, flat: str, k: int) -> str:
        rng = np.random.default_rng(0)
        ints = g.const("w_q", rng.integers(-127, 128, (5, k)).astype(np.int8))
        w = g.op("DequantizeLinear", [ints, g.const("s", np.full(k, 0.01, np.float32))], axis=1)
        return g.op("Gemm", [flat, w], transB=1)

    code, reason = _refusal(image_model(head, spatial=(5, 4), batch=1))
    assert code == "quant-axis"
    assert "quantized along axis 1, not per output feature" in reason


def test_dynamic_quantize_linear_in_a_built_graph_is_named() -> None:
    def head(g: GraphBuilder, flat: str, k: int) -> str:
        q, s, z = g.op("DynamicQuantizeLinear", [flat], n_out=3, name="dyn")
        return g.op("DequantizeLinear", [q, s, z])

    model = image_model(head, spatial=(5, 4), batch=1)
    with pytest.raises(NotConvertibleError, match="DynamicQuantizeLinear 'dyn' computes its scale from the whole"):
        onnx_fc2conv.convert(model)


def test_uint8_output_of_quantize_linear_is_compared_within_one_unit() -> None:
    def head(g: GraphBuilder, flat: str, k: int) -> str:
        y = _qdq_gemm(g, _pair(g, flat, np.array(0.05, np.float32), np.array(0, np.uint8)), k, 5, 0.05)
        return g.op(
            "QuantizeLinear", [y, g.const("s", np.array(0.03, np.float32)), g.const("z", np.array(128, np.uint8))]
        )

    model = image_model(head, spatial=(5, 4), batch=1, out_elem=TensorProto.UINT8)
    result = convert(model, sizes=((9, 7),))
    assert all(c.allowed == 1.0 for c in result.verification.comparisons)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("ort_qdq_pc_vgg_small.onnx", ["int8 per-channel, scales [64]"] * 2 + ["int8 per-channel, scales [10]"]),
        ("ort_qdq_pt_vgg_small.onnx", ["int8 per-tensor, scales []"] * 3),
        ("ort_qop_vgg_small.onnx", ["int8 per-tensor, scales []"] * 3),
    ],
)
def test_inspect_shows_the_quantization_of_each_layer(name: str, shown: list[str]) -> None:
    from onnx_fc2conv.report import head_dict, head_lines

    head = onnx_fc2conv.inspect(str(MODELS / name)).heads[0]
    assert [layer["quantization"] for layer in head_dict(head)["layers"]] == shown
    assert all(f"({text})" in line for text, line in zip(shown, head_lines(1, head)[3:6], strict=True))


@pytest.mark.parametrize("per_channel", [True, False])
def test_qdq_matmul_weight_is_transposed_as_integers(per_channel: bool) -> None:
    """`MatMul(x, DQ(W [K, M], axis 1)) + b`: the kernel is `W.T` as int8, its axis moved to 0."""
    stored: dict[str, np.ndarray] = {}

    def head(g: GraphBuilder, flat: str, k: int) -> str:
        rng = np.random.default_rng(3)
        stored["w"] = rng.integers(-127, 128, (k, 5)).astype(np.int8)
        scale = (rng.uniform(0.002, 0.02, 5) if per_channel else np.array(0.01)).astype(np.float32)
        w = g.op("DequantizeLinear", [g.const("w_q", stored["w"]), g.const("w_s", scale)], axis=1)
        x = _pair(g, flat, ACT_SCALE, np.array(0, np.uint8))
        y = g.op("Add", [g.op("MatMul", [x, w]), g.const("b", rng.standard_normal(5).astype(np.float32))])
        return _pair(g, y, np.array(0.03, np.float32), np.array(128, np.uint8))

    result = convert(image_model(head, spatial=(5, 4), batch=1), sizes=((9, 7),))
    ((ints, _, _, axis),) = [w for w in _written_weights(result.model) if w[0].shape[0] == 5]
    assert ints.shape == (5, 4, 4, 3) and ints.dtype == np.int8
    np.testing.assert_array_equal(ints.reshape(5, -1), stored["w"].T)
    assert axis == (0 if per_channel else 1)


def test_the_conversion_report_shows_the_quantization_after_the_rewrite() -> None:
    from onnx_fc2conv.report import conversion_payload

    result = onnx_fc2conv.convert(str(MODELS / "ort_qop_vgg_small.onnx"), onnx_fc2conv.ConvertOptions(verify=False))
    layers = conversion_payload(result)["heads"][0]["layers"]
    assert [layer["quantization"] for layer in layers] == ["int8 per-tensor, scales []"] * 3
