"""The FC chain walker (heads.py): what is a head, all-or-nothing per head, several heads, none at all."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, backbone, big_input, dims, gemm, ops, run
from rule_support import assert_refused_head, fc_head_model, refused, skipped, text_model

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def _class_token_model() -> onnx.ModelProto:
    """A ViT-style head: tokens [N, T, D] -> Gather(token 0) -> Gemm."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 8])
    tokens = g.op("Transpose", [x], perm=[0, 2, 1])  # [1, 8, 3]: 8 tokens of width 3
    cls = g.op("Gather", [tokens, g.const("idx", np.array(0, np.int64))], axis=1, name="take_cls")
    g.output(gemm(g, cls, 3, M, name="head"))
    return g.build()


def test_class_token_head() -> None:
    err = refused(_class_token_model())
    assert err.reasons == [
        "head: Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    ]
    assert str(err) == (
        "no FC head can be rewritten exactly: "
        "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    )
    inspected = onnx_fc2conv.inspect(_class_token_model())
    assert inspected.heads == [] and inspected.candidates == 1
    assert [(s.node, s.code, s.reason) for s in inspected.skipped] == [
        (
            "head",
            Code.NOT_FLATTENED,
            "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map",
        )
    ]


def test_unsupported_op_after_fc() -> None:
    model = fc_head_model("ln = LayerNormalization (fc, s, t)", "float[1, 5] ln", s=(M,), t=(M,))
    err = refused(model)
    assert err.reasons == ["fc: LayerNormalization 'ln' after the FC layers is not supported"]
    assert skipped(model) == [
        ("fc", Code.UNSUPPORTED_OP, "LayerNormalization 'ln' after the FC layers is not supported")
    ]


def test_flattened_tensor_used_elsewhere_is_refused() -> None:
    model = fc_head_model("", "float[1, 5] fc, float[1, 48] flat")
    reason = "the flattened tensor 'flat' before Gemm 'fc' is also used elsewhere"
    assert_refused_head(model, Code.SHARED_FLATTEN, reason)


def test_one_bad_head_refuses_the_whole_model() -> None:
    """Two heads, one convertible: nothing is half-converted, the bad one is named."""
    g = GraphBuilder()
    feat = backbone(g, g.input("input", [1, 3, 5, 4]), 3, C)
    g.output(gemm(g, g.op("Flatten", [feat], axis=1), 48, M, name="good"), "out1")
    y = gemm(g, g.op("Flatten", [feat], axis=1), 48, M, name="bad")
    g.output(g.op("LayerNormalization", [y, g.const("s", g.rand((M,)))], name="ln"), "out2")
    model = g.build()
    err = refused(model)
    assert str(err).startswith("1 of 2 FC heads cannot be rewritten exactly: ")
    assert err.reasons == ["bad: LayerNormalization 'ln' after the FC layers is not supported"]
    assert skipped(model) == [
        ("bad", Code.UNSUPPORTED_OP, "LayerNormalization 'ln' after the FC layers is not supported")
    ]
    assert [h.name for h in onnx_fc2conv.inspect(model).heads] == ["good"]


def test_two_heads_on_one_flatten_become_two_convs() -> None:
    """Multi-task heads: class scores and a box regression read the same flattened map."""
    model = text_model(
        """
        g (float[1, 2, 7, 6] x) => (float[1, 5] probs, float[1, 4] boxes) {
            c = Conv <kernel_shape = [3, 3]> (x, cw)
            r = Relu (c)
            f = Flatten (r)
            logits = Gemm <transB = 1> (f, w1, b1)
            probs = Softmax <axis = 1> (logits)
            box0 = MatMul (f, w2)
            boxes = Add (box0, b2)
        }
        """,
        seed=21,
        cw=(3, 2, 3, 3),
        w1=(5, 60),
        b1=(5,),
        w2=(60, 4),
        b2=(4,),
    )
    result = onnx_fc2conv.convert(model)
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Relu", "Conv", "Softmax", "Conv"]
    assert [h.outputs for h in result.heads] == [("probs",), ("boxes",)]
    assert {c.output for c in result.verification.comparisons if c.check == "larger size"} == {"probs", "boxes"}
    assert result.verification.passed


def test_model_without_fc_is_relaxed_with_notice() -> None:
    g = GraphBuilder()
    x = g.input("input", [1, 3, 6, 5])
    feat = backbone(g, x, 3, C)
    g.output(g.op("GlobalAveragePool", [feat]))
    model = g.build()
    result = onnx_fc2conv.convert(model)
    out = result.model
    assert result.rewrites == []
    assert result.notices == ["no FC layer found: the model is already fully convolutional; only its input was relaxed"]
    assert ops(out) == ops(model)
    assert dims(out.graph.input[0]) == ["batch", 3, "height", "width"]
    onnx.checker.check_model(out, full_check=True)
    x_big = big_input((2, 3, 9, 7))
    y = run(out, {"input": x_big})["output"]
    assert y.shape == (2, C, 1, 1)
