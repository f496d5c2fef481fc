"""rules/flatten_reshape: a Reshape to `[N, C*prod(S)]`, with a constant, computed or attribute target."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_sliding, backbone, big_input, convert, gemm, ops
from onnx import TensorProto, helper, numpy_helper
from rule_support import refused, skipped, text_model

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, M = 4, 5
K = C * 4 * 3


def _reshape_model(kind: str, batch: int | str) -> onnx.ModelProto:
    g = GraphBuilder(opset=14)
    x = g.input("input", [batch, 3, 5, 4])
    feat = backbone(g, x, 3, C)
    if kind == "shape_computed":
        shape = g.op("Shape", [feat])
        n = g.op("Gather", [shape, g.const("zero", np.array(0, np.int64))], axis=0)
        n = g.op("Unsqueeze", [n, g.const("axes", np.array([0], np.int64))])
        target = g.op("Concat", [n, g.const("minus1", np.array([-1], np.int64))], axis=0)
        flat = g.op("Reshape", [feat, target])
    else:
        target, allowzero = {
            "minus1_k": ([-1, K], 0),
            "zero_minus1": ([0, -1], 0),
            "n_k_allowzero": ([batch if isinstance(batch, int) else 1, K], 1),
            "one_k": ([1, K], 0),
        }[kind]
        attrs = {"allowzero": 1} if allowzero else {}
        flat = g.op("Reshape", [feat, g.const("target", np.array(target, np.int64))], **attrs)
    g.output(gemm(g, flat, K, M))
    return g.build()


@pytest.mark.parametrize(
    ("kind", "batch"),
    [
        ("minus1_k", "N"),
        ("zero_minus1", "N"),
        ("n_k_allowzero", 1),
        ("n_k_allowzero", 2),
        ("one_k", 1),
        ("shape_computed", "N"),
        ("shape_computed", 1),
    ],
)
def test_reshape_flatten(kind: str, batch: int | str) -> None:
    model = _reshape_model(kind, batch)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
    assert result.heads[0].kind == "reshape"
    assert result.heads[0].description == "Reshape -> Gemm"
    n = batch if isinstance(batch, int) else 2
    assert_sliding(model, result.model, big_input((n, 3, 7, 6)), window=(5, 4))


def test_reshape_with_its_target_as_an_attribute_is_a_flatten() -> None:
    """Before opset 5 Reshape took `shape` as an attribute (old model-zoo exports)."""
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("Reshape", ["c"], ["f"], shape=[1, -1]),
            helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
        ],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [
            numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "cw"),
            numpy_helper.from_array(rng.standard_normal((5, 32)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 4)])
    found = onnx_fc2conv.inspect(model)
    assert [h.description for h in found.heads] == ["Reshape -> Gemm"] and found.skipped == []
    converted = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(verify=False)).model
    assert [n.op_type for n in converted.graph.node] == ["Conv", "Conv"]
    kernel = next(t for t in converted.graph.initializer if t.name == "w")
    assert list(kernel.dims) == [5, 2, 4, 4]


def test_non_flatten_reshape() -> None:
    """Reshape [-1, K/2] folds half the features into the batch: not a flatten."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[2, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            rs = Reshape (conv, target)
            fc = Gemm <transB = 1> (rs, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        target=np.array([-1, 24], np.int64),
        w=(M, 24),
        b=(M,),
    )
    err = refused(model)
    assert err.reasons == ["fc: Reshape 'rs' before Gemm 'fc' is not a flatten to [N, C*H*W]"]
    reason = "Reshape 'rs' before Gemm 'fc' is not a flatten to [N, C*H*W]"
    assert skipped(model) == [("fc", Code.RESHAPE_NOT_FLATTEN, reason)]
