"""rules/flatten_channel_last: a reduce over the spatial axes of a channel-last map reached through
per-location layers (tf2onnx's Tensordot for a Keras Dense on the map) is a global pool; a
Reshape-FC-Reshape that does not map each location alone is refused, naming its Reshape."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, ops, relaxed, run
from rule_support import refused, skipped

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, K, M = 4, 6, 5  # the map's channels, the Dense's units, classes


def _dense_on_map(fc: str = "MatMul", merge_to: int = -1, restore: list[int] | None = None) -> onnx.ModelProto:
    """`[N, 3, 5, 6]` -> Conv -> `[N, C, 4, 5]` -> Transpose to channel-last -> Reshape 'merge'
    `[-1, merge_to or C]` -> `fc` 'dot' -> Reshape 'restore' (to `restore`, else to the leading dims
    of the channel-last map from its Shape, and K) -> Add bias -> Relu -> ReduceMean over axes 1, 2 ->
    Gemm 'fc'."""
    g = GraphBuilder()
    last = g.op("Transpose", [backbone(g, g.input("input", ["N", 3, 5, 6]), 3, C)], perm=[0, 2, 3, 1])
    width = C if merge_to == -1 else merge_to
    if merge_to == -1:  # [-1, C] from Shape, as tf2onnx writes it
        channels = g.op(
            "Slice", [g.op("Shape", [last]), *(g.const(n, np.array([v], np.int64)) for n, v in [("c0", 3), ("c1", 4)])]
        )
        rows_target = g.op("Concat", [g.const("minus_one", np.array([-1], np.int64)), channels], axis=0)
    else:
        rows_target = g.const("rows", np.array([-1, width], np.int64))
    rows = g.op("Reshape", [last, rows_target], name="merge")
    if fc == "MatMul":
        dot = g.op("MatMul", [rows, g.const("w_dot", g.rand((width, K)))], name="dot")
    else:
        dot = g.op("Gemm", [rows, g.const("w_dot", g.rand((K, width))), g.const("b_dot", g.rand((K,)))], transB=1)
    if restore is None:
        leading = g.op(
            "Slice", [g.op("Shape", [last]), *(g.const(n, np.array([v], np.int64)) for n, v in [("s", 0), ("e", 3)])]
        )
        target = g.op("Concat", [leading, g.const("k", np.array([K], np.int64))], axis=0)
    else:
        target = g.const("back", np.array(restore, np.int64))
    mapped = g.op("Reshape", [dot, target], name="restore")
    act = g.op("Relu", [g.op("Add", [mapped, g.const("bias", g.rand((K,)))])], name="act")
    pooled = g.op("ReduceMean", [act], axes=[1, 2], keepdims=0, name="pool")
    g.output(gemm(g, pooled, K, M, name="fc"))
    return g.build()


@pytest.mark.parametrize("fc", ["MatMul", "Gemm"])
def test_a_reduce_behind_a_tensordot_is_the_global_pool(fc: str) -> None:
    """The Tensordot stays in the backbone; the reduce reads its output transposed back to
    channel-first and the classifier is a 1 x 1 Conv behind it, equal to the original at any size."""
    model = _dense_on_map(fc)
    result = onnx_fc2conv.convert(model)  # verified; the Tensordot's FC stays, so not builders.convert
    assert result.verification.passed
    out = result.model
    assert ops(out)[-4:] == ["Relu", "Transpose", "ReduceMean", "Conv"]
    assert (
        result.heads[0].description == f"Transpose -> Reshape -> {fc} -> Reshape -> Add -> Relu -> ReduceMean -> Gemm"
    )
    assert skipped(model) == []  # the Tensordot's FC is no head candidate
    for shape in [(2, 3, 5, 6), (2, 3, 9, 7)]:
        x = big_input(shape)
        expected = run(relaxed(model), {"input": x})["output"]
        got = run(out, {"input": x})["output"]
        assert_close(got.reshape(expected.shape), expected)


def test_dense_mode_runs_the_classifier_on_the_tensordot_map() -> None:
    """--dense: the classifier reads the Tensordot's output at every location (channel-first), the pool goes."""
    model = _dense_on_map()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(dense=True))
    assert result.verification.passed and {c.check for c in result.verification.comparisons} >= {
        "dense mean",
        "larger size",
    }
    out = result.model
    assert ops(out)[-3:] == ["Relu", "Transpose", "Conv"]
    x = big_input((2, 3, 9, 7))
    relaxed_model = relaxed(model)
    relaxed_model.graph.output.append(onnx.helper.make_tensor_value_info("act_out", onnx.TensorProto.FLOAT, None))
    features = run(relaxed_model, {"input": x})["act_out"]  # [N, 8, 6, K], channel-last
    weights = {t.name.rsplit("_", 1)[0]: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    w, b = weights["fc_w"], weights["fc_b"]
    expected = np.einsum("nhwk,mk->nmhw", features, w) + b[None, :, None, None]
    assert_close(run(out, {"input": x})["output"], expected.astype(np.float32))


def test_a_reshape_that_merges_channels_into_the_rows_is_refused() -> None:
    """`Reshape [-1, 2C]` puts two locations in one row: the FC mixes them, no global pool follows."""
    model = _dense_on_map(merge_to=2 * C, restore=[-1, 2, 5, K])
    reasons = {node: (code, reason) for node, code, reason in skipped(model)}
    code, reason = reasons["fc"]
    assert code is Code.TENSORDOT_LAYOUT
    assert reason.startswith("Reshape 'merge' reshapes the channel-last [")
    assert reason.endswith(
        f"not one row of its {C} channels per location: ReduceMean 'pool' before Gemm 'fc' is no global pool"
    )
    assert reasons["dot"][0] is Code.RESHAPE_NOT_FLATTEN  # the FC of no Tensordot stays a candidate
    assert refused(model).exit_code == 3


def test_a_reshape_back_to_another_layout_is_refused() -> None:
    """`Reshape [-1, W, H, K]` on a `[N, H, W, C]` map: the rows are not put back where they were."""
    model = _dense_on_map(restore=[-1, 5, 4, K])
    reasons = {node: (code, reason) for node, code, reason in skipped(model)}
    assert reasons["fc"] == (
        Code.TENSORDOT_LAYOUT,
        "Reshape 'restore' reshapes the rows of MatMul 'dot' to ['N', 5, 4, 6], not back to the locations "
        "['N', 4, 5] of Reshape 'merge': ReduceMean 'pool' before Gemm 'fc' is no global pool",
    )
    assert refused(model).exit_code == 3


def test_a_constant_rows_target_on_a_symbolic_batch_fits_every_size() -> None:
    """`Reshape [-1, C]` as a constant on `[N, H, W, C]`: the -1 takes batch and spatial dims alike,
    whatever N is; it bakes nothing."""
    model = _dense_on_map(merge_to=C)
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed and not result.backbone_fixes
    assert {c.check for c in result.verification.comparisons} >= {"same size", "larger size"}
