"""Dense mode through pointwise layers between the global pool and the FC layers (dense_prefix.py).

The models built here have an unpadded 2 x 2 backbone: a cell of the dense map sees a 2 x 2 crop
of the input, so the map is checked against the *original* model run on every such crop (where the
pool sees one location: the head at that location), sharing no code with the verifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import assert_close, assert_sliding, big_input, ops, relaxed, run
from click.testing import CliRunner
from json_contract import parse
from rule_support import text_model

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, NotConvertibleError
from onnx_fc2conv.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"
C, K, M = 4, 6, 5  # map channels, channels after the 1 x 1 Conv, classes
BACKBONE = ["Conv", "Relu"]


def _model(chain: str, *, pool: str = "p = GlobalAveragePool (r)", width: int = K, **weights) -> onnx.ModelProto:
    """input [1, 3, 6, 5] -> Conv 2x2 -> Relu -> pool -> `chain` (ends in `h`, [1, width]) -> Gemm."""
    graph = f"""
    g (float[1, 3, 6, 5] input) => (float[1, {M}] output) {{
        c = Conv <kernel_shape = [2, 2]> (input, cw, cb)
        r = Relu (c)
        {pool}
        {chain}
        output = Gemm <transB = 1> (h, fw, fb)
    }}"""
    return text_model(graph, cw=(C, 3, 2, 2), cb=(C,), fw=(M, width), fb=(M,), **weights)


def _bn(channels: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(channels), rng.standard_normal(channels), rng.standard_normal(channels)]
    var = rng.uniform(0.5, 2.0, channels)
    return {k: v.astype(np.float32) for k, v in zip(["bs", "bb", "bm", "bv"], [*values, var], strict=True)}


def _dense(model: onnx.ModelProto) -> onnx_fc2conv.ConversionResult:
    result = onnx_fc2conv.convert(model, ConvertOptions(dense=True))
    assert result.verification is not None and result.verification.passed, result.verification
    larger = {tuple(c.input_shape) for c in result.verification.comparisons if c.check == "larger size"}
    assert len(larger) >= 2 and all(s[0] == 2 for s in larger)  # batch 2, two larger sizes
    return result


def _assert_head_at_every_location(model: onnx.ModelProto, result: onnx_fc2conv.ConversionResult) -> None:
    x = big_input((2, 3, 9, 8))
    dense_map = assert_sliding(relaxed(model, axes=(0, 2, 3)), result.model, x, (2, 2))["output"]
    assert dense_map.shape == (2, M, 8, 7)


# -- golden exports ------------------------------------------------------------------------------------


def test_golden_pool_conv_activation_flatten_fc_moves_in_front_of_the_pool() -> None:
    """timm MobileNetV3 / GhostNet / LCNet: GlobalAveragePool -> 1x1 Conv -> HardSwish -> Flatten -> Gemm."""
    path = MODELS / "ts_pool_conv_head.onnx"
    result = _dense(onnx.load(path))
    assert ops(result.model) == ["Conv", "HardSwish", "Conv", "HardSwish", "Conv", "HardSwish", "Conv"]
    head = result.heads[0]
    assert head.dense and not head.linear
    assert head.description == "GlobalAveragePool -> Conv -> HardSwish -> Flatten -> Gemm"
    assert result.notices == [
        "head /classifier/Gemm: Conv, HardSwish moved in front of the GlobalAveragePool with the FC layers; "
        "the map is the nonlinear head at every location"
    ]
    assert {c.check for c in result.verification.comparisons} == {"larger size"}
    assert any("the map is the head at every location" in n for n in result.verification.notes)
    # independently: the original's map, then the head in numpy at every location
    original = onnx.load(path)
    weights = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in original.graph.initializer}
    feature = "/features/features.1/features.1.2/HardSwish_output_0"
    original.graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
    x = big_input((2, 3, 45, 38))
    fmap = run(relaxed(original, axes=(0, 2, 3)), {"input": x})[feature].astype(np.float64)
    hidden = np.einsum("nchw,kc->nkhw", fmap, weights["conv_head.weight"][:, :, 0, 0])
    hidden = hidden + weights["conv_head.bias"][None, :, None, None]
    hidden = hidden * np.clip(hidden + 3, 0, 6) / 6
    expected = np.einsum("nkhw,mk->nmhw", hidden, weights["classifier.weight"])
    expected = expected + weights["classifier.bias"][None, :, None, None]
    assert_close(run(result.model, {"input": x})["output"], expected, rtol=1e-4, atol=1e-4)


def test_golden_keras_conv_classifier_without_fc_layers_gives_a_map() -> None:
    """Keras MobileNet v1: GlobalAveragePool -> Reshape -> 1x1 Conv -> Reshape [1, 10] -> Softmax."""
    result = _dense(onnx.load(MODELS / "keras_mobilenet_v1_head.onnx"))
    assert ops(result.model) == ["Transpose", "Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv", "Softmax"]
    head = result.heads[0]
    assert head.dense and not head.linear  # the Softmax
    assert head.description == "GlobalAveragePool -> Reshape -> Conv"
    assert [layer.kernel_shape for layer in head.layers] == [(10, 16, 1, 1)]
    softmax = next(n for n in result.model.graph.node if n.op_type == "Softmax")
    assert [a.i for a in softmax.attribute if a.name == "axis"] == [1]
    scores = run(result.model, {"input": big_input((2, 40, 37, 3))})["output"]
    assert scores.shape == (2, 10, 17, 16)
    assert_close(scores.sum(axis=1), np.ones((2, 17, 16), np.float32))
    without = onnx_fc2conv.convert(str(MODELS / "keras_mobilenet_v1_head.onnx"))
    assert "GlobalAveragePool" in ops(without.model) and not without.heads  # exact mode: as before


def test_golden_dla_conv_classifier_is_linear_and_its_mean_is_checked() -> None:
    """timm DLA through dynamo: ReduceMean -> 1x1 Conv -> `Reshape [1, -1]` (the original head bakes
    batch 1 without failing at a larger batch: its reference runs image by image)."""
    result = _dense(onnx.load(MODELS / "dynamo_dla_head.onnx"))
    assert ops(result.model) == ["Conv", "Relu", "Conv", "Relu", "Conv"]
    assert result.heads[0].dense and result.heads[0].linear
    assert {c.check for c in result.verification.comparisons} == {"dense mean", "larger size"}


def test_golden_pooled_layernorm_runs_channel_last_on_the_map() -> None:
    """ConvNeXt-style `LayerNorm(x.mean([-2, -1]))` before the Linear: normalized over the channels."""
    result = _dense(onnx.load(MODELS / "ts_pooled_layernorm_head.onnx"))
    assert ops(result.model)[-4:] == ["Transpose", "LayerNormalization", "Transpose", "Conv"]
    assert "ReduceMean" not in ops(result.model)
    assert result.heads[0].dense and not result.heads[0].linear


# -- built in code -------------------------------------------------------------------------------------


def test_a_linear_chain_stays_linear_and_its_mean_is_the_logits() -> None:
    chain = """
        k = Conv <kernel_shape = [1, 1]> (p, kw, kb)
        b = BatchNormalization (k, bs, bb, bm, bv)
        d = Dropout (b)
        f = Flatten (d)
        h = Div (f, two)
    """
    model = _model(chain, kw=(K, C, 1, 1), kb=(K,), two=np.array(2.0, np.float32), **_bn(K))
    result = _dense(model)
    assert ops(result.model) == [*BACKBONE, "Conv", "BatchNormalization", "Dropout", "Div", "Conv"]
    assert result.heads[0].linear
    assert {c.check for c in result.verification.comparisons} == {"dense mean", "larger size"}
    assert result.notices == []
    _assert_head_at_every_location(model, result)
    x = big_input((2, 3, 9, 8))
    logits = run(relaxed(model, axes=(0, 2, 3)), {"input": x})["output"]
    assert_close(run(result.model, {"input": x})["output"].mean(axis=(2, 3)), logits, atol=1e-4)


def test_every_kind_of_pointwise_layer_moves_and_the_map_is_the_head_at_every_location() -> None:
    """Grouped 1x1 Conv, BN, activation, LayerNorm over axis 1 of [N, K, 1, 1], a per-channel
    constant on the map and one on the flattened vector, Identity."""
    chain = """
        d = Dropout (p)
        k = Conv <kernel_shape = [1, 1], group = 2> (d, kw, kb)
        b = BatchNormalization (k, bs, bb, bm, bv)
        a = HardSwish (b)
        n = LayerNormalization <axis = 1> (a, ls, lb)
        s = Add (n, shift)
        f = Flatten (s)
        m = Mul (f, scale)
        h = Identity (m)
    """
    weights = {"kw": (K, C // 2, 1, 1), "kb": (K,), "ls": (K, 1, 1), "lb": (K, 1, 1), "shift": (1, K, 1, 1)}
    model = _model(chain, scale=(K,), **weights, **_bn(K))
    result = _dense(model)
    assert ops(result.model) == [
        *BACKBONE, "Dropout", "Conv", "BatchNormalization", "HardSwish",
        "Transpose", "LayerNormalization", "Transpose", "Add", "Mul", "Identity", "Conv",
    ]  # fmt: skip
    assert not result.heads[0].linear
    moved = "Dropout, Conv, BatchNormalization, HardSwish, LayerNormalization, Add, Mul, Identity"
    assert result.notices == [
        f"head {result.heads[0].name}: {moved} moved in front of the GlobalAveragePool with the FC layers; "
        "the map is the nonlinear head at every location"
    ]
    _assert_head_at_every_location(model, result)


def test_a_keepdims_0_reduce_with_a_per_channel_prelu() -> None:
    chain = """
        n = LayerNormalization <axis = -1> (p, ls, lb)
        h = PRelu (n, slope)
    """
    pool = "p = ReduceMean <axes = [2, 3], keepdims = 0> (r)"
    model = _model(chain, pool=pool, width=C, ls=(C,), lb=(C,), slope=(C,))
    result = _dense(model)
    assert ops(result.model) == [*BACKBONE, "Transpose", "LayerNormalization", "Transpose", "PRelu", "Conv"]
    assert result.heads[0].description == "ReduceMean -> LayerNormalization -> PRelu -> Gemm"
    _assert_head_at_every_location(model, result)


def test_a_channels_last_layernorm_between_transposes_runs_as_it_is() -> None:
    """timm's LayerNorm2d (ConvNeXt) through TorchScript: Transpose -> LayerNorm(axis=-1) -> Transpose."""
    chain = """
        t = Transpose <perm = [0, 2, 3, 1]> (p)
        n = LayerNormalization <axis = -1> (t, ls, lb)
        m = Mul (n, scale)
        b = Transpose <perm = [0, 3, 1, 2]> (m)
        h = Flatten (b)
    """
    model = _model(chain, width=C, ls=(C,), lb=(C,), scale=(1, 1, 1, C))
    result = _dense(model)
    assert ops(result.model) == [*BACKBONE, "Transpose", "LayerNormalization", "Mul", "Transpose", "Conv"]
    _assert_head_at_every_location(model, result)


# -- refusals of dense mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "weights", "width", "why"),
    [
        (
            "k = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (p, kw)",
            {"kw": (K, C, 3, 3)},
            K,
            "Conv 'k' between the pool and the FC layers is not pointwise: its 3x3 kernel reads neighbouring locations",
        ),
        (
            "k = Conv <kernel_shape = [1, 1], pads = [1, 1, 1, 1]> (p, kw)",
            {"kw": (K, C, 1, 1)},
            K * 9,  # the pad grows the pooled 1 x 1 to 3 x 3
            "Conv 'k' between the pool and the FC layers is not pointwise: "
            "it has a stride or a pad, which change the spatial extent",
        ),
        (
            "k1 = Reshape (p, flat)\n        k = Reshape (k1, back)",  # timm ConvNeXt through dynamo
            {"flat": np.array([-1]), "back": np.array([1, C, 1, 1])},
            C,
            "Reshape 'k1' between the pool and the FC layers is not pointwise: "
            "it reshapes [1, 4, 1, 1] to [4], not only unit dims",
        ),
        (
            "k1 = Transpose <perm = [0, 2, 3, 1]> (p)\n        k = Relu (k1)",
            {},
            C,
            "Flatten 'h' between the pool and the FC layers is not pointwise: "
            "Flatten on channels-last data is not a layer dense mode moves",
        ),
        (
            "k1 = Transpose <perm = [0, 2, 3, 1]> (p)\n        k = BatchNormalization (k1, bs, bb, bm, bv)",
            _bn(1),
            C,
            "BatchNormalization 'k' between the pool and the FC layers is not pointwise: "
            "BatchNormalization on channels-last data is not a layer dense mode moves",
        ),
        (
            "k = LayerNormalization <axis = -1> (p, ls, lb)",
            {"ls": (1,), "lb": (1,)},
            C,
            "LayerNormalization 'k' between the pool and the FC layers is not pointwise: "
            "it normalizes over axes [3], not the channels only",
        ),
        (
            "k = InstanceNormalization (p, ls, lb)",
            {"ls": (C,), "lb": (C,)},
            C,
            "InstanceNormalization 'k' between the pool and the FC layers is not pointwise: "
            "InstanceNormalization reads the spatial extent",
        ),
    ],
)
def test_a_layer_that_is_not_pointwise_keeps_the_head_behind_the_pool(
    chain: str, weights: dict, width: int, why: str
) -> None:
    model = _model(f"{chain}\n        h = Flatten (k)", width=width, **weights)
    result = onnx_fc2conv.convert(model, ConvertOptions(dense=True))
    assert result.verification.passed
    assert result.notices[-1] == f"head {result.heads[0].name}: dense mode does not apply ({why}); rewritten as usual"
    assert len(result.notices) == (2 if "flat" in weights else 1)  # and the batch kept at 1 when folded
    assert not result.heads[0].dense
    exact = onnx_fc2conv.convert(model)
    assert ops(result.model) == ops(exact.model)
    assert ops(exact.model)[:3] == [*BACKBONE, "GlobalAveragePool"] and ops(exact.model)[-1] == "Conv"


@pytest.mark.parametrize("shared", ["pooled", "a"])
def test_a_moved_layer_used_elsewhere_keeps_the_head_behind_the_pool(shared: str) -> None:
    """The pool itself may have other readers (it stays for them); a layer that moves may not."""
    graph = f"""
    g (float[1, 3, 6, 5] input) => (float[1, {M}] output, float[1, {C}, 1, 1] {shared}) {{
        c = Conv <kernel_shape = [2, 2]> (input, cw, cb)
        r = Relu (c)
        pooled = GlobalAveragePool (r)
        a = Relu (pooled)
        h = Flatten (a)
        output = Gemm <transB = 1> (h, fw, fb)
    }}"""
    model = text_model(graph, cw=(C, 3, 2, 2), cb=(C,), fw=(M, C), fb=(M,))
    result = onnx_fc2conv.convert(model, ConvertOptions(dense=True))
    assert result.verification.passed
    if shared == "pooled":
        assert result.heads[0].dense and result.notices[0].endswith("the map is the nonlinear head at every location")
        x = big_input((1, 3, 9, 8))
        expected = run(relaxed(model), {"input": x})["pooled"]
        assert_close(run(result.model, {"input": x})["pooled"], expected)
    else:
        assert result.notices == [
            f"head {result.heads[0].name}: dense mode does not apply ('a' between the pool and the FC layers "
            "is also used elsewhere); rewritten as usual"
        ]


def test_branches_that_meet_again_move_together() -> None:
    """Keras' hard swish on the pooled vector: `x * (relu6(x + 3) / 6)`, two branches of one tensor."""
    chain = """
        k = Conv <kernel_shape = [1, 1]> (p, kw, kb)
        s = Add (k, three)
        q = Clip (s, zero, six)
        g = Mul (q, sixth)
        a = Mul (k, g)
        h = Flatten (a)
    """
    consts = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}
    model = _model(chain, kw=(K, C, 1, 1), kb=(K,), **{k: np.array(v, np.float32) for k, v in consts.items()})
    result = _dense(model)
    assert ops(result.model) == [*BACKBONE, "Conv", "Add", "Clip", "Mul", "Mul", "Conv"]
    assert not result.heads[0].linear  # x * f(x)
    _assert_head_at_every_location(model, result)


def test_a_head_on_the_pooled_vector_that_is_not_pointwise_is_refused_in_dense_mode_only() -> None:
    pool = "p = ReduceMean <axes = [2, 3], keepdims = 0> (r)"
    model = _model("h = Softmax <axis = 1> (p)", pool=pool, width=C)
    assert onnx_fc2conv.convert(model).verification.passed  # exact mode: it stays on the pooled vector
    with pytest.raises(NotConvertibleError) as info:
        onnx_fc2conv.convert(model, ConvertOptions(dense=True))
    assert info.value.exit_code == 3
    assert (
        "dense mode: Softmax 'h' between the pool and the FC layers is not pointwise: "
        "Softmax is not a layer dense mode moves" in str(info.value)
    )


def test_cli_dense_json_names_the_moved_layers(tmp_path: Path) -> None:
    out = tmp_path / "dense.onnx"
    args = ["convert", str(MODELS / "keras_mobilenet_v1_head.onnx"), str(out), "--dense", "--json"]
    run_cli = CliRunner().invoke(main, args)
    assert run_cli.exit_code == 0, run_cli.output
    doc = parse(run_cli.stdout)
    head = doc["heads"][0]
    assert (head["pattern"], head["dense"], head["linear"]) == ("GlobalAveragePool -> Reshape -> Conv", True, False)
    assert [layer["op"] for layer in head["layers"]] == ["Conv"]
    assert onnx.load(out).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10
