"""Dense mode: the 1 x 1 head runs before the global pool and the pool is dropped."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_fc2conv import ConvertOptions, convert, inspect
from onnx_fc2conv.verify import VerifyOptions
from onnx_fc2conv.verify import verify as verify_models

C, M = 4, 3


def _pool_head_model(pool: str, nonlinear: bool, keepdims: int = 1) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [N, 2, 9, 7] -> Conv 3x3 -> Relu -> (global pool) -> (Flatten) -> Gemm [-> Relu -> Gemm]."""
    rng = np.random.default_rng(3)
    w = {
        "cw": rng.standard_normal((C, 2, 3, 3)).astype(np.float32),
        "fw": rng.standard_normal((M, C)).astype(np.float32),
        "fb": rng.standard_normal(M).astype(np.float32),
        "gw": rng.standard_normal((M, M)).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3]), helper.make_node("Relu", ["c"], ["r"])]
    if pool == "GlobalAveragePool":
        nodes += [helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"])]
    else:
        nodes += [
            helper.make_node("ReduceMean", ["r"], ["f" if keepdims == 0 else "p"], axes=[2, 3], keepdims=keepdims)
        ]
        if keepdims:
            nodes.append(helper.make_node("Flatten", ["p"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", "fw", "fb"], ["h" if nonlinear else "y"], transB=1))
    if nonlinear:
        nodes += [helper.make_node("Relu", ["h"], ["hr"]), helper.make_node("Gemm", ["hr", "gw"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes,
        "pool_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", M])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def _features(x: np.ndarray, cw: np.ndarray) -> np.ndarray:
    """Reference backbone in numpy: valid 3x3 conv + ReLU."""
    n, _, h, w = x.shape
    out = np.zeros((n, cw.shape[0], h - 2, w - 2), np.float64)
    for i in range(h - 2):
        for j in range(w - 2):
            out[:, :, i, j] = np.einsum("nchw,kchw->nk", x[:, :, i : i + 3, j : j + 3], cw)
    return np.maximum(out, 0)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run at any size: a global-pool model accepts it once the input dims are not pinned."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for i, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        dim.dim_param = f"d{i}"
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize(("pool", "keepdims"), [("GlobalAveragePool", 1), ("ReduceMean", 1), ("ReduceMean", 0)])
def test_linear_head_gives_the_class_activation_map(pool: str, keepdims: int) -> None:
    model, w = _pool_head_model(pool, nonlinear=False, keepdims=keepdims)
    result = convert(model, ConvertOptions(dense=True))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["Conv", "Relu", "Conv"], ops
    assert result.heads[0].dense and result.heads[0].linear
    assert {c.check for c in result.verification.comparisons} == {"dense mean", "larger size"}
    x = np.random.default_rng(5).standard_normal((2, 2, 13, 11)).astype(np.float32)
    cam = _run(result.model, x)
    feats = _features(x.astype(np.float64), w["cw"].astype(np.float64))
    expected = np.einsum("nchw,mc->nmhw", feats, w["fw"]) + w["fb"][None, :, None, None]
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-4)
    # averaging the map gives back the original logits
    np.testing.assert_allclose(cam.mean(axis=(2, 3)), _run(model, x), rtol=1e-4, atol=1e-5)


def test_nonlinear_head_is_the_head_at_every_location_and_says_so() -> None:
    model, w = _pool_head_model("GlobalAveragePool", nonlinear=True)
    result = convert(model, ConvertOptions(dense=True))
    assert not result.heads[0].linear
    assert any("not equal to the original" in n for n in result.verification.notes)
    assert {c.check for c in result.verification.comparisons} == {"larger size"}
    x = np.random.default_rng(6).standard_normal((1, 2, 10, 12)).astype(np.float32)
    dense_map = _run(result.model, x)
    feats = _features(x.astype(np.float64), w["cw"].astype(np.float64))
    hidden = np.maximum(np.einsum("nchw,mc->nmhw", feats, w["fw"]) + w["fb"][None, :, None, None], 0)
    expected = np.einsum("nchw,mc->nmhw", hidden, w["gw"])
    np.testing.assert_allclose(dense_map, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(dense_map.mean(axis=(2, 3)), _run(model, x), atol=1e-3)


def test_without_dense_the_pooled_head_stays_1x1() -> None:
    model, _ = _pool_head_model("GlobalAveragePool", nonlinear=True)
    result = convert(model, ConvertOptions())
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Conv", "Relu", "Conv"]
    x = np.random.default_rng(7).standard_normal((1, 2, 20, 17)).astype(np.float32)
    assert _run(result.model, x).shape == (1, M, 1, 1)


def test_dense_verification_catches_a_wrong_weight() -> None:
    model, _ = _pool_head_model("GlobalAveragePool", nonlinear=False)
    result = convert(model, ConvertOptions(dense=True))
    conv = result.model
    kernel = next(t for t in conv.graph.initializer if t.name == "fw")
    values = numpy_helper.to_array(kernel).copy()
    values[0, 0, 0, 0] += 0.5
    kernel.CopyFrom(numpy_helper.from_array(values, "fw"))
    report = verify_models(model, conv, result.heads, VerifyOptions())
    assert not report.passed
    assert {c.check for c in report.failures} == {"dense mean", "larger size"}


def test_inspect_shows_the_dense_pattern() -> None:
    model, _ = _pool_head_model("ReduceMean", nonlinear=False, keepdims=0)
    found = inspect(model, ConvertOptions(dense=True))
    assert found.heads[0].description == "ReduceMean -> ReduceMean -> Gemm"
    assert found.heads[0].feature == "r"


def test_an_input_that_already_accepts_any_size_is_checked_at_a_usual_size() -> None:
    model, _ = _pool_head_model("GlobalAveragePool", nonlinear=True)
    for i, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if i >= 2:
            dim.dim_param = "hw"[i - 2]
    result = convert(model, ConvertOptions())
    report = result.verification
    assert report.passed
    assert any(c.check == "same size" and c.input_shape == (1, 2, 224, 224) for c in report.comparisons)
    assert any("accepts any size" in note for note in report.notes)
