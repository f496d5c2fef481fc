"""rules/backbone_shape_constant: an Expand or ConstantOfShape to a constant shape with spatial dims
above 1 pins the input size and is refused; one that keeps the spatial dims at 1 is left alone."""

from __future__ import annotations

import numpy as np
from builders import GraphBuilder, assert_sliding, backbone, big_input, convert, gemm, ops
from rule_support import backbone_refusals, refused, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def test_expand_over_channels_only_is_left_alone() -> None:
    """A per-pixel gate [1, 1, H, W] expanded to the channels: [1, C, 1, 1] follows any size."""
    g = GraphBuilder()
    feat = backbone(g, g.input("input", ["N", 3, 5, 4]), 3, C)  # [N, 4, 4, 3]
    gate = g.op("ReduceMax", [feat], axes=[1], keepdims=1)
    wide = g.op("Expand", [gate, g.const("shape", np.array([1, C, 1, 1], np.int64))], name="ex")
    mixed = g.op("Mul", [feat, wide])
    g.output(gemm(g, g.op("Flatten", [mixed], axis=1), 48, M))
    model = g.build()
    result = convert(model)
    assert result.backbone_fixes == []
    assert ops(result.model) == ["Conv", "Relu", "ReduceMax", "Expand", "Mul", "Conv"]
    assert_sliding(model, result.model, big_input((2, 3, 7, 8)), window=(5, 4))


def test_expand_to_fixed_spatial_shape_refused() -> None:
    """Expanded to the exported map size and read as it is (an Expand against an operand of its
    shape follows that operand instead: rules/backbone_own_shape)."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            gate = GlobalAveragePool (conv)
            ex = Expand (gate, shape)
            mixed = Relu (ex)
            flat = Flatten <axis = 1> (mixed)
            fc = Gemm <transB = 1> (flat, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        shape=np.array([1, 4, 4, 3], np.int64),
        w=(M, 48),
        b=(M,),
    )
    err = refused(model)
    reason = "Expand 'ex' expands to the fixed shape [1, 4, 4, 3]; the model cannot run at other sizes"
    assert err.reasons == [reason]
    assert backbone_refusals(model) == [("ex", Code.FIXED_EXPAND, reason)]


def test_constant_of_shape_to_fixed_spatial_shape_refused() -> None:
    """A constant map of the exported size added to the features."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            ones = ConstantOfShape <value = float[1] {1.0}> (shape)
            mixed = Add (conv, ones)
            flat = Flatten <axis = 1> (mixed)
            fc = Gemm <transB = 1> (flat, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        shape=np.array([1, 4, 4, 3], np.int64),
        w=(M, 48),
        b=(M,),
    )
    reason = "ConstantOfShape 'ones' expands to the fixed shape [1, 4, 4, 3]; the model cannot run at other sizes"
    err = refused(model)
    assert err.reasons == [reason]
    assert backbone_refusals(model) == [("ones", Code.FIXED_EXPAND, reason)]
