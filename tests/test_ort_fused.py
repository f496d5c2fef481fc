"""ort_fused: onnxruntime's FusedConv and FusedGemm (its offline optimizer's output at
ORT_ENABLE_EXTENDED) written back as the standard ops they fuse, so the head is found and rewritten."""

from __future__ import annotations

import pytest
from builders import GraphBuilder, assert_sliding, big_input, convert, ops
from onnx import helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, NotConvertibleError

C, M, HIDDEN = 4, 5, 6
WINDOW = (5, 4)


def _fused_model(conv_act: tuple[str, list[float]], gemm_act: tuple[str, dict[str, float]], *, opset: int, z: bool):
    """input -> FusedConv(kernel 2, optional sum Z) -> Flatten -> FusedGemm -> Gemm, as onnxruntime saves it
    (no value_info: onnx's inference does not know the com.microsoft ops)."""
    g = GraphBuilder(opset=opset)
    x = g.input("input", ["N", 3, *WINDOW])
    w, b = g.const("conv_w", g.rand((C, 3, 2, 2))), g.const("conv_b", g.rand((C,)))
    conv_inputs = [x, w, b]
    if z:  # a second conv's output added before the activation (Conv + Add + Relu fused)
        w2 = g.const("conv2_w", g.rand((C, 3, 2, 2)))
        conv_inputs.append(g.op("Conv", [x, w2], kernel_shape=[2, 2]))
    act, params = conv_act
    extra = {"activation_params": params} if params else {}
    feat = g.op("FusedConv", conv_inputs, kernel_shape=[2, 2], activation=act, **extra)
    g.nodes[-1].domain = "com.microsoft"
    flat = g.op("Flatten", [feat], axis=1)
    k = C * (WINDOW[0] - 1) * (WINDOW[1] - 1)
    act, attrs = gemm_act
    fc_w, fc_b = g.const("fc1_w", g.rand((HIDDEN, k))), g.const("fc1_b", g.rand((HIDDEN,)))
    hidden = g.op("FusedGemm", [flat, fc_w, fc_b], transB=1, activation=act, **attrs)
    g.nodes[-1].domain = "com.microsoft"
    out = g.op("Gemm", [hidden, g.const("fc2_w", g.rand((M, HIDDEN))), g.const("fc2_b", g.rand((M,)))], transB=1)
    g.output(out, shape=["N", M])
    model = g.build(check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


@pytest.mark.parametrize(
    ("conv_act", "conv_ops"),
    [
        (("Relu", []), ["Relu"]),
        (("LeakyRelu", [0.1]), ["LeakyRelu"]),
        (("HardSigmoid", [0.3, 0.4]), ["HardSigmoid"]),
        (("Clip", [-0.2, 0.5]), ["Clip"]),
        (("Sigmoid", []), ["Sigmoid"]),
    ],
)
@pytest.mark.parametrize(
    ("gemm_act", "gemm_op"),
    [(("Relu", {}), "Relu"), (("LeakyRelu", {"activation_alpha": 0.2}), "LeakyRelu"), (("Tanh", {}), "Tanh")],
)
@pytest.mark.parametrize("opset", [9, 13])
def test_fused_ops_become_standard_ops(conv_act, conv_ops, gemm_act, gemm_op, opset: int) -> None:
    model = _fused_model(conv_act, gemm_act, opset=opset, z=False)
    result = convert(model)
    assert ops(result.model) == ["Conv", *conv_ops, "Conv", gemm_op, "Conv"]
    assert all(n.domain in ("", "ai.onnx") for n in result.model.graph.node)
    assert "onnxruntime's fused ops written as the standard ops they fuse: 1 FusedConv, 1 FusedGemm" in result.notices
    attrs = {a.name: helper.get_attribute_value(a) for a in result.model.graph.node[1].attribute}
    if conv_act[0] in ("LeakyRelu", "HardSigmoid") or (conv_act[0] == "Clip" and opset < 11):
        names = {"LeakyRelu": ["alpha"], "HardSigmoid": ["alpha", "beta"], "Clip": ["min", "max"]}[conv_act[0]]
        assert [attrs[n] for n in names] == pytest.approx(conv_act[1])
    assert_sliding(model, result.model, big_input((2, 3, 8, 7)), WINDOW)


def test_fused_conv_with_a_sum() -> None:
    """FusedConv's fourth input Z is added before the activation: Conv -> Add -> Relu."""
    model = _fused_model(("Relu", []), ("Relu", {}), opset=13, z=True)
    result = convert(model)
    assert ops(result.model) == ["Conv", "Conv", "Add", "Relu", "Conv", "Relu", "Conv"]
    assert_sliding(model, result.model, big_input((2, 3, 8, 7)), WINDOW)


def test_fused_activation_without_a_standard_op_is_refused() -> None:
    """ScaledTanh (an experimental op onnxruntime still fuses) has no standard op: refused, node named."""
    scaled_tanh = ("ScaledTanh", {"activation_alpha": 1.0, "activation_beta": 1.0})
    model = _fused_model(("Relu", []), scaled_tanh, opset=13, z=False)
    with pytest.raises(NotConvertibleError) as info:
        onnx_fc2conv.convert(model, ConvertOptions(verify=False))
    assert info.value.exit_code == 3
    fused_gemm = next(n.name for n in model.graph.node if n.op_type == "FusedGemm")
    assert str(info.value) == (
        f"FusedGemm '{fused_gemm}' fuses activation 'ScaledTanh', which is no standard op at opset 13"
    )


def test_models_without_fused_ops_are_unchanged() -> None:
    from onnx_fc2conv.ort_fused import unfuse

    model = _fused_model(("Relu", []), ("Relu", {}), opset=13, z=False)
    for node in model.graph.node:
        if node.domain == "com.microsoft":
            node.domain, node.op_type = "", "Conv" if node.op_type == "FusedConv" else "Gemm"
            del node.attribute[:]
    before = model.SerializeToString()
    assert unfuse(model, 13) == []
    assert model.SerializeToString() == before
