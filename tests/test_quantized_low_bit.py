"""QDQ heads with int4/uint4 (opset 21, two values a byte) and float8 (opset 19) weights: the kernel
holds the same values, unpacked, rearranged and packed again, and verifies in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, convert, image_model, ops
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnx_fc2conv

# (numpy type, ONNX type, first opset whose DequantizeLinear reads it)
TYPES = {
    "int4": (ml_dtypes.int4, TensorProto.INT4, 21),
    "uint4": (ml_dtypes.uint4, TensorProto.UINT4, 21),
    "float8e4m3fn": (ml_dtypes.float8_e4m3fn, TensorProto.FLOAT8E4M3FN, 19),
    "float8e5m2": (ml_dtypes.float8_e5m2, TensorProto.FLOAT8E5M2, 19),
}
M = 5


def _values(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = TYPES[kind][0]
    rng = np.random.default_rng(1)
    if kind == "int4":
        return rng.integers(-8, 8, shape).astype(dtype)
    if kind == "uint4":
        return rng.integers(0, 16, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _head(kind: str, per_channel: bool, matmul: bool, stored: dict):
    """`Gemm(x, DQ(W [M, K], axis 0), b)` or `MatMul(x, DQ(W [K, M], axis 1)) + b`."""

    def head(g: GraphBuilder, flat: str, k: int) -> str:
        values = _values(kind, (k, M) if matmul else (M, k))
        scale = np.linspace(0.01, 0.05, M, dtype=np.float32) if per_channel else np.array(0.03, np.float32)
        inputs = [g.const("w_q", values, exact_name=True), g.const("w_s", scale, exact_name=True)]
        if kind != "float8e5m2":  # DequantizeLinear takes no zero point of this type
            zero = np.full(scale.shape, 1 if kind == "uint4" else 0).astype(TYPES[kind][0])
            inputs.append(g.const("w_z", zero, exact_name=True))
        stored["values"] = values
        weight = g.op("DequantizeLinear", inputs, axis=1 if matmul else 0)
        bias = g.const("b", g.rand((M,)))
        if matmul:
            return g.op("Add", [g.op("MatMul", [flat, weight]), bias])
        return g.op("Gemm", [flat, weight, bias], transB=1)

    return head


def _dequantized(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """onnx's reference implementation of one DequantizeLinear of `model` (unpacking included)."""
    inits = {t.name: t for t in model.graph.initializer}
    graph = helper.make_graph(
        [node], "dq", [], [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        [inits[name] for name in node.input],
    )  # fmt: skip
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])).run(None, {})[0]


@pytest.mark.parametrize("kind", list(TYPES))
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("matmul", [False, True])
def test_low_bit_weight_is_rearranged_and_verifies(kind: str, per_channel: bool, matmul: bool) -> None:
    stored: dict[str, np.ndarray] = {}
    # spatial (4, 4) and 3 channels: K = 27, and 27 x 5 values, an odd count, leave a half-filled last byte
    original = image_model(_head(kind, per_channel, matmul, stored), spatial=(4, 4), c=3, batch=1, opset=TYPES[kind][2])
    result = convert(original, sizes=((8, 7), (7, 9)))
    assert ops(result.model) == ["Conv", "Relu", "DequantizeLinear", "Conv"]
    (dq,) = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear"]
    written = next(t for t in result.model.graph.initializer if t.name == dq.input[0])
    assert written.data_type == TYPES[kind][1] and list(written.dims) == [M, 3, 3, 3]
    values = numpy_helper.to_array(written)
    expected = stored["values"].T if matmul else stored["values"]
    np.testing.assert_array_equal(values.reshape(M, -1).astype(np.float32), expected.astype(np.float32))
    assert next((a.i for a in dq.attribute if a.name == "axis"), 1) == 0 or not per_channel
    # onnx's reference dequantizes the written kernel to the original weight, rearranged
    before = _dequantized(original, next(n for n in original.graph.node if n.op_type == "DequantizeLinear"))
    after = _dequantized(result.model, dq)
    np.testing.assert_array_equal(after.reshape(M, -1), before.T if matmul else before)
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2


@pytest.mark.parametrize(
    ("kind", "layout", "rearranged"),
    [
        ("int4", "gemm", ["Reshape"]),  # [M, K], blocks along K (axis 1)
        ("int8", "matmul", ["Transpose", "Reshape"]),  # [K, M], blocks along K (axis 0)
        ("uint4", "nhwc", ["Reshape", "Transpose"]),  # rows in (h, w, c) order
    ],
)
def test_block_wise_weight_is_dequantized_as_stored_then_rearranged(kind: str, layout: str, rearranged) -> None:
    """The blocks run along the input features, which the kernel splits into channel and window axes:
    the DequantizeLinear stays on the stored integers and its float output is rearranged."""
    g = GraphBuilder(opset=21)
    feature = backbone(g, g.input("input", [1, 3, 5, 4]), 3, 4)  # [4, 4, 3]: K = 48
    if layout == "nhwc":
        feature = g.op("Transpose", [feature], perm=[0, 2, 3, 1])
    flat = g.op("Flatten", [feature], axis=1)
    values = _values("int4" if kind == "int8" else kind, (48, M) if layout == "matmul" else (M, 48))
    values = values.astype(np.int8) if kind == "int8" else values
    axis = 0 if layout == "matmul" else 1
    scale = np.linspace(0.01, 0.05, 4 * M, dtype=np.float32).reshape((4, M) if axis == 0 else (M, 4))
    inputs = [g.const("w_q", values, exact_name=True), g.const("w_s", scale, exact_name=True)]
    weight = g.op("DequantizeLinear", inputs, axis=axis, block_size=12)
    y = g.op("MatMul", [flat, weight]) if layout == "matmul" else g.op("Gemm", [flat, weight], transB=1)
    g.output(y, shape=[1, M])
    original = g.build()
    result = convert(original, sizes=((8, 7), (7, 9)))
    assert ops(result.model) == ["Conv", "Relu", "DequantizeLinear", *rearranged, "Conv"]  # NHWC: Transpose absorbed
    (dq,) = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq.input[0] == "w_q" and next(a.i for a in dq.attribute if a.name == "block_size") == 12
    before, after = (next(t for t in m.graph.initializer if t.name == "w_q") for m in (original, result.model))
    assert after.SerializeToString() == before.SerializeToString()  # the integers are not even moved
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2
    found = onnx_fc2conv.inspect(original).heads[0].layers[0].quantization
    assert found == f"{kind} block-wise (12), scales {list(scale.shape)}"


def test_inspect_names_the_low_bit_type() -> None:
    from onnx_fc2conv.report import head_dict

    model = image_model(_head("int4", True, False, {}), spatial=(4, 4), c=3, batch=1, opset=21)
    (head,) = onnx_fc2conv.inspect(model).heads
    assert [layer["quantization"] for layer in head_dict(head)["layers"]] == ["int4 per-channel, scales [5]"]


def test_golden_int4_qdq_writes_the_same_int4_values_and_verifies() -> None:
    """onnxruntime's own int4 QDQ (models/ort_qdq_int4_pc_vgg_small.onnx): every head kernel holds the
    original's int4 values, only reshaped ([M, K] rows, transB=1), and verifies at two larger sizes."""
    models = Path(__file__).resolve().parent.parent / "models"
    original = onnx.load(str(models / "ort_qdq_int4_pc_vgg_small.onnx"))
    result = convert(original)
    stored = {t.name: t for t in original.graph.initializer}
    written = {t.name: t for t in result.model.graph.initializer}
    head = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_conv")]
    assert len(head) == 3
    for dq in head:
        kernel, before = written[dq.input[0]], stored[dq.input[0].removesuffix("_conv")]
        assert kernel.data_type == before.data_type == TensorProto.INT4 and len(kernel.dims) == 4
        np.testing.assert_array_equal(
            numpy_helper.to_array(kernel).reshape(tuple(before.dims)), numpy_helper.to_array(before)
        )
        assert next(a.i for a in dq.attribute if a.name == "axis") == 0
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    assert len({c.input_shape for c in result.verification.comparisons if c.check == "larger size"}) == 2
