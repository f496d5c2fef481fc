"""A refused head over a backbone that cannot grow anyway: the refusal leads with what pins the size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, gemm

import onnx_fc2conv
from onnx_fc2conv.errors import NotConvertibleError

C = 4


def _tokens_model(split: bool) -> onnx.ModelProto:
    """[1, 3, 9, 9] -> Conv/Relu [1, 4, 8, 8] -> tokens [1, 4, 64] -> (Split [32, 32] and Add, an
    op over a fixed token count) -> Flatten -> Softmax -> Gemm. The Softmax over the whole flattened
    vector is no convolution: the head is refused either way."""
    g = GraphBuilder(opset=18)
    x = g.input("input", [1, 3, 9, 9])
    t = g.op("Reshape", [backbone(g, x, 3, C), g.const("tokens", np.array([1, C, -1], np.int64))])
    if split:
        halves = g.op("Split", [t, g.const("halves", np.array([32, 32], np.int64))], n_out=2, axis=2, name="split")
        t = g.op("Add", list(halves))
    flat = g.op("Softmax", [g.op("Flatten", [t])], axis=1)
    g.output(gemm(g, flat, C * (32 if split else 64), 3))
    return g.build()


def test_a_refusal_leads_with_the_node_that_pins_the_size() -> None:
    with pytest.raises(NotConvertibleError) as caught:
        onnx_fc2conv.convert(_tokens_model(split=True))
    assert str(caught.value) == (
        "no FC head can be rewritten exactly: Split 'split' keeps the model from running at other sizes, "
        "whatever its head (at 73x73: Mismatch between the sum of 'split' (64) and the split dimension of the "
        "input (5184))"
    )
    backbone, head = caught.value.reasons
    assert backbone.startswith("backbone: Split 'split' keeps the model") and "Softmax" in head
    skipped = onnx_fc2conv.inspect(_tokens_model(split=True)).skipped  # the FC candidates only
    assert [s.code.value for s in skipped] == ["not-flattened"]


def test_a_backbone_that_grows_leaves_the_head_reason_alone() -> None:
    with pytest.raises(NotConvertibleError) as caught:
        onnx_fc2conv.convert(_tokens_model(split=False))
    assert str(caught.value).startswith("no FC head can be rewritten exactly: ") and "Softmax" in str(caught.value)
    assert len(caught.value.reasons) == 1


def test_a_pin_a_backbone_fix_removes_does_not_lead() -> None:
    """A Resize to constant sizes (an FPN's upsampling) pins the size as exported, but becomes scales
    as a backbone fix: the refusal is the head's own."""
    g = GraphBuilder(opset=18)
    x = g.input("input", [1, 3, 9, 9])
    fine = backbone(g, x, 3, C)
    coarse = g.op("MaxPool", [fine], kernel_shape=[2, 2], strides=[2, 2])
    sizes = g.const("sizes", np.array([1, C, 8, 8], np.int64))
    up = g.op("Resize", [coarse, "", "", sizes], mode="nearest")
    flat = g.op("Softmax", [g.op("Flatten", [g.op("Add", [fine, up])])], axis=1)
    g.output(gemm(g, flat, C * 64, 3))
    with pytest.raises(NotConvertibleError) as caught:
        onnx_fc2conv.convert(g.build())
    assert "Softmax" in str(caught.value) and len(caught.value.reasons) == 1
