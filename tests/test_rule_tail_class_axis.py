"""rules/tail_class_axis: Softmax-family and index ops over the class axis work on axis 1 of the map."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import (
    GraphBuilder,
    assert_close,
    assert_sliding,
    backbone,
    big_input,
    convert,
    dims,
    gemm,
    image_model,
    ops,
)
from rule_support import assert_class_axis_normalised, assert_refused_head, fc_head_model, refused, skipped

from onnx_fc2conv.rules.base import Code

C, M = 4, 5
WINDOW = (5, 4)


@pytest.mark.parametrize(
    ("op", "opset", "axis"),
    [
        ("Softmax", 13, None),
        ("Softmax", 13, 1),
        ("Softmax", 17, -1),
        ("LogSoftmax", 17, None),
        ("LogSoftmax", 13, 1),
        ("Hardmax", 13, None),
    ],
)
def test_class_axis_normalisation(op: str, opset: int, axis: int | None) -> None:
    assert_class_axis_normalised(op, opset, axis, [op])


@pytest.mark.parametrize(
    ("op", "attrs", "opset"),
    [
        ("ArgMax", {"axis": 1, "keepdims": 0}, 13),
        ("ArgMax", {"axis": 1, "keepdims": 1}, 13),
        ("ArgMax", {"axis": -1, "keepdims": 0}, 17),
        ("ArgMin", {"axis": -1, "keepdims": 1}, 11),
    ],
)
def test_argmax_over_classes(op: str, attrs: dict, opset: int) -> None:
    model = image_model(
        lambda g, x, k: g.op(op, [gemm(g, x, k, M)], **attrs), opset=opset, out_elem=onnx.TensorProto.INT64
    )
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", op]
    assert next(a.i for a in out.graph.node[-1].attribute if a.name == "axis") == 1
    y = assert_sliding(model, out, big_input((2, 3, 7, 8)), window=WINDOW)["output"]
    assert y.shape == ((2, 1, 3, 5) if attrs["keepdims"] else (2, 3, 5))


@pytest.mark.parametrize("axis", [None, -1, 1])
def test_topk_over_classes(axis: int | None) -> None:
    g = GraphBuilder(opset=13)
    x = g.input("input", ["N", 3, 5, 4])
    flat = g.op("Flatten", [backbone(g, x, 3, 4)], axis=1)
    y = gemm(g, flat, 48, M)
    attrs = {} if axis is None else {"axis": axis}
    values, indices = g.op("TopK", [y, g.const("k", np.array([2], np.int64))], n_out=2, **attrs)
    g.output(values, "values")
    g.output(indices, "indices", elem=onnx.TensorProto.INT64)
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "TopK"]
    got = assert_sliding(model, out, big_input((2, 3, 6, 7)), window=WINDOW)
    assert got["values"].shape == (2, 2, 2, 4) and got["indices"].shape == (2, 2, 2, 4)
    assert [o.name for o in out.graph.output] == ["values", "indices"]


def test_logits_and_probabilities_both_outputs() -> None:
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    flat = g.op("Flatten", [backbone(g, x, 3, 4)], axis=1)
    logits = g.rename_output(gemm(g, flat, 48, M), "logits")
    g.outputs.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    g.output(g.op("Softmax", [logits], axis=-1), "probs")
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Softmax"]
    assert result.heads[0].outputs == ("logits", "probs")
    assert [dims(o) for o in out.graph.output] == [["N", M, "out_height", "out_width"]] * 2
    got = assert_sliding(model, out, big_input((2, 3, 7, 6)), window=WINDOW)
    assert_close(got["probs"].sum(axis=1), np.ones((2, 3, 3), np.float32))


def test_softmax_over_the_batch_axis() -> None:
    model = fc_head_model("sm = Softmax <axis = 0> (fc)", "float[1, 5] sm", opset=13)
    err = refused(model)
    assert err.reasons == ["fc: Softmax 'sm' works on axis 0, not the class axis"]
    assert skipped(model) == [("fc", Code.CLASS_AXIS, "Softmax 'sm' works on axis 0, not the class axis")]


def test_index_read_by_further_nodes_is_refused() -> None:
    """What reads the class index cannot be proven to work on a map of indices."""
    model = fc_head_model("best = ArgMax <axis = 1, keepdims = 0> (fc)\nlabel = Cast <to = 1> (best)", "float[1] label")
    reason = "the output of ArgMax 'best' is used by further nodes"
    assert_refused_head(model, Code.INDEX_USED, reason)
