"""Refusals name the node and the reason; size-baking backbone nodes are fixed or refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import (
    GraphBuilder,
    assert_sliding,
    backbone,
    big_input,
    convert,
    dims,
    gemm,
    ops,
    run,
)
from click.testing import CliRunner

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, NotConvertibleError
from onnx_fc2conv.cli import main

C, M = 4, 5


def _refusal(model: onnx.ModelProto) -> NotConvertibleError:
    with pytest.raises(NotConvertibleError) as info:
        onnx_fc2conv.convert(model, ConvertOptions())
    assert info.value.exit_code == 3
    return info.value


def _image(g: GraphBuilder, batch=1, spatial=(5, 4)) -> str:
    x = g.input("input", [batch, 3, *spatial])
    return backbone(g, x, 3, C)


# ------------------------------------------------------------------------------------------------
# Heads that are not flattened feature maps


def _class_token_model() -> onnx.ModelProto:
    """A ViT-style head: tokens [N, T, D] -> Gather(token 0) -> Gemm."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 8])
    tokens = g.op("Transpose", [x], perm=[0, 2, 1])  # [1, 8, 3]: 8 tokens of width 3
    cls = g.op("Gather", [tokens, g.const("idx", np.array(0, np.int64))], axis=1, name="take_cls")
    g.output(gemm(g, cls, 3, M, name="head"))
    return g.build()


def test_class_token_head() -> None:
    err = _refusal(_class_token_model())
    assert err.reasons == [
        "head: Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    ]
    assert str(err) == (
        "no FC head can be rewritten exactly: "
        "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    )
    inspected = onnx_fc2conv.inspect(_class_token_model())
    assert inspected.heads == [] and inspected.candidates == 1
    assert [(s.node, s.reason) for s in inspected.skipped] == [
        ("head", "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map")
    ]


def test_non_constant_gemm_weight() -> None:
    g = GraphBuilder()
    flat = g.op("Flatten", [_image(g)], axis=1)
    w = g.input("weight", [M, 48])
    g.output(g.op("Gemm", [flat, w], name="fc", transB=1))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Gemm 'fc': weight 'weight' is not a constant"]


def test_matmul_weight_on_the_left() -> None:
    g = GraphBuilder()
    flat = g.op("Flatten", [_image(g)], axis=1)  # [1, 48]
    g.output(g.op("MatMul", [g.const("w", g.rand((M, 1))), flat], name="mm"))
    err = _refusal(g.build())
    assert err.reasons == ["mm: MatMul 'mm': the weight is the left operand (x @ W expected)"]


def test_bias_with_batch_rows() -> None:
    g = GraphBuilder()
    flat = g.op("Flatten", [_image(g, batch=2)], axis=1)
    y = g.op("Gemm", [flat, g.const("w", g.rand((M, 48))), g.const("b", g.rand((2, M)))], name="fc", transB=1)
    g.output(y)
    err = _refusal(g.build())
    assert err.reasons == ["fc: Gemm 'fc': bias shape [2, 5] is not per-feature ([5] or [1, 5]) or scalar"]


def test_non_flatten_reshape() -> None:
    """Reshape [-1, K/2] folds half the features into the batch: not a flatten."""
    g = GraphBuilder()
    half = g.op("Reshape", [_image(g), g.const("t", np.array([-1, 24], np.int64))], name="rs")
    g.output(gemm(g, half, 24, M, name="fc"))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Reshape 'rs' before Gemm 'fc' is not a flatten to [N, C*H*W]"]


def test_flatten_at_other_axis() -> None:
    g = GraphBuilder()
    flat = g.op("Flatten", [_image(g)], axis=2, name="fl")  # [4, 12]
    g.output(gemm(g, flat, 12, M, name="fc"))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Flatten 'fl' flattens at axis 2, not 1"]


def test_unsupported_op_after_fc() -> None:
    g = GraphBuilder()
    flat = g.op("Flatten", [_image(g)], axis=1)
    y = gemm(g, flat, 48, M, name="fc")
    ln = g.op("LayerNormalization", [y, g.const("s", g.rand((M,))), g.const("b", g.rand((M,)))], name="ln")
    g.output(ln)
    err = _refusal(g.build())
    assert err.reasons == ["fc: LayerNormalization 'ln' after the FC layers is not supported"]


def test_head_mixing_with_backbone_tensor() -> None:
    g = GraphBuilder()
    feat = _image(g)
    y = gemm(g, g.op("Flatten", [feat], axis=1), 48, C, name="fc")
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [feat])], axis=1, name="side")  # [1, C]
    g.output(g.op("Add", [y, pooled], name="mix"))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Add 'mix' combines the head with non-constant tensor 'side_out'"]


def test_per_feature_constant_of_wrong_width() -> None:
    g = GraphBuilder()
    y = gemm(g, g.op("Flatten", [_image(g)], axis=1), 48, M, name="fc")
    g.output(g.op("Mul", [y, g.const("c", g.rand((3, M)), exact_name=True)], name="scale"))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Mul 'scale': constant 'c' of shape [3, 5] is neither per-feature nor scalar"]


def test_softmax_over_the_batch_axis() -> None:
    g = GraphBuilder(opset=13)
    y = gemm(g, g.op("Flatten", [_image(g)], axis=1), 48, M, name="fc")
    g.output(g.op("Softmax", [y], axis=0, name="sm"))
    err = _refusal(g.build())
    assert err.reasons == ["fc: Softmax 'sm' works on axis 0, not the class axis"]


def test_one_bad_head_refuses_the_whole_model() -> None:
    """Two heads, one convertible: nothing is half-converted, the bad one is named."""
    g = GraphBuilder()
    feat = _image(g)
    g.output(gemm(g, g.op("Flatten", [feat], axis=1), 48, M, name="good"), "out1")
    y = gemm(g, g.op("Flatten", [feat], axis=1), 48, M, name="bad")
    g.output(g.op("LayerNormalization", [y, g.const("s", g.rand((M,)))], name="ln"), "out2")
    err = _refusal(g.build())
    assert str(err).startswith("1 of 2 FC heads can be rewritten exactly: ")
    assert err.reasons == ["bad: LayerNormalization 'ln' after the FC layers is not supported"]


# ------------------------------------------------------------------------------------------------
# No FC layer at all


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


# ------------------------------------------------------------------------------------------------
# Backbone nodes that bake the spatial size


def _shuffle_model() -> onnx.ModelProto:
    g = GraphBuilder()
    feat = _image(g)  # [1, 4, 4, 3]
    groups = g.op("Reshape", [feat, g.const("t5", np.array([1, 2, 2, 4, 3], np.int64))], name="shuffle_split")
    swapped = g.op("Transpose", [groups], perm=[0, 2, 1, 3, 4])
    merged = g.op("Reshape", [swapped, g.const("t4", np.array([1, 4, 4, 3], np.int64))], name="shuffle_merge")
    mixed = backbone(g, merged, C, C)  # [1, 4, 3, 2]
    flat = g.op("Flatten", [mixed], axis=1)
    g.output(gemm(g, flat, C * 3 * 2, M))
    return g.build()


def test_channel_shuffle_reshape_made_size_agnostic() -> None:
    model = _shuffle_model()
    result = convert(model)
    assert {f.node for f in result.backbone_fixes} == {"shuffle_split", "shuffle_merge"}
    out = result.model
    assert ops(out).count("Shape") == 2 and ops(out)[-1] == "Conv"
    assert {c.check for c in result.verification.comparisons} == {"same size", "larger size"}
    assert_sliding(model, out, big_input((1, 3, 8, 7)), window=(5, 4))


def test_reshape_baking_size_is_refused() -> None:
    g = GraphBuilder()
    feat = _image(g)  # [1, 4, 4, 3]
    flat_hw = g.op("Reshape", [feat, g.const("t", np.array([1, 4, 12], np.int64))], name="bake")
    sm = g.op("Softmax", [flat_hw], axis=-1)
    back = g.op("Reshape", [sm, g.const("t2", np.array([1, 4, 4, 3], np.int64))], name="unbake")
    g.output(gemm(g, g.op("Flatten", [back], axis=1), 48, M))
    err = _refusal(g.build())
    assert err.reasons[0] == (
        "Reshape 'bake' bakes the spatial size into its target shape [1, 4, 12]; the model cannot run at other sizes"
    )
    assert str(err) == err.reasons[0]


def _resize_model(sizes: list[int]) -> onnx.ModelProto:
    g = GraphBuilder(opset=13)
    feat = _image(g)  # [1, 4, 4, 3]
    up = g.op("Resize", [feat, "", "", g.const("sizes", np.array(sizes, np.int64))], name="resize", mode="nearest")
    flat = g.op("Flatten", [up], axis=1)
    g.output(gemm(g, flat, C * sizes[2] * sizes[3], M))
    return g.build()


def test_resize_non_integer_sizes_refused() -> None:
    err = _refusal(_resize_model([1, 4, 7, 5]))
    assert err.reasons == [
        "Resize 'resize' resizes to fixed sizes [1, 4, 7, 5] that are not a whole multiple of its input "
        "[1, 4, 4, 3]; the model cannot run at other sizes"
    ]


def test_resize_integer_sizes_become_scales() -> None:
    model = _resize_model([1, 4, 8, 6])
    result = convert(model)
    assert [(f.node, f.op) for f in result.backbone_fixes] == [("resize", "Resize")]
    resize = next(n for n in result.model.graph.node if n.op_type == "Resize")
    assert len(resize.input) == 3 and resize.input[2]
    assert "larger size" in {c.check for c in result.verification.comparisons}


def test_expand_to_fixed_spatial_shape_refused() -> None:
    g = GraphBuilder()
    feat = _image(g)  # [1, 4, 4, 3]
    gate = g.op("GlobalAveragePool", [feat])
    wide = g.op("Expand", [gate, g.const("shape", np.array([1, 4, 4, 3], np.int64))], name="ex")
    mixed = g.op("Mul", [feat, wide])
    g.output(gemm(g, g.op("Flatten", [mixed], axis=1), 48, M))
    model = g.build()
    err = _refusal(model)
    assert err.reasons == ["Expand 'ex' expands to the fixed shape [1, 4, 4, 3]; the model cannot run at other sizes"]


def test_backbone_refusal_via_cli_exits_3(tmp_path) -> None:
    src, dst = tmp_path / "resize.onnx", tmp_path / "out.onnx"
    onnx.save(_resize_model([1, 4, 7, 5]), str(src))
    res = CliRunner().invoke(main, ["convert", str(src), str(dst)])
    assert res.exit_code == 3
    assert "Resize 'resize'" in res.stderr and "Traceback" not in res.stderr
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resize.onnx"]


def test_nhwc_transpose_used_elsewhere_is_refused() -> None:
    """The channel-last map also feeds another output: it cannot be read channel-first."""
    g = GraphBuilder()
    nhwc = g.op("Transpose", [_image(g)], perm=[0, 2, 3, 1], name="to_nhwc")  # [1, 4, 3, 4]
    flat = g.op("Reshape", [nhwc, g.const("t", np.array([1, 48], np.int64))])
    g.output(gemm(g, flat, 48, M, name="fc"))
    g.output(g.op("Relu", [nhwc]), "side")
    err = _refusal(g.build())
    assert err.reasons == [
        "fc: Transpose 'to_nhwc' before Gemm 'fc' moves the channels last and its output is also used elsewhere: "
        "the kernel layout cannot be proven"
    ]
