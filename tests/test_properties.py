"""Property tests: any small Flatten -> FC head converts and verifies; a changed weight is caught.

Random heads: feature map C x H x W (1..8 each) from a conv backbone with a random input size;
1 to 3 FC layers (Gemm with transB/alpha/beta, or MatMul (+ Add)); bias none / [M] / [1, M] /
scalar; Relu, Sigmoid, Tanh, LeakyRelu and per-feature Add/Mul constants between and after them;
opset 11 to 21; fp32 and fp16; a fixed or symbolic batch. `convert` verifies at the original size
and at two larger ones, against the independent reference.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from corpus import Elementwise, FcSpec, ModelSpec, build, save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from onnx_fc2conv import ConvertOptions, convert, verify
from onnx_fc2conv.cli import main

SETTINGS = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ELEMENTWISE = st.one_of(
    st.sampled_from([Elementwise("Relu"), Elementwise("Sigmoid"), Elementwise("Tanh")]),
    st.builds(Elementwise, op=st.just("LeakyRelu"), alpha=st.sampled_from([0.01, 0.2, 1.5])),
    st.builds(Elementwise, op=st.sampled_from(["Add", "Mul"]), const_shape=st.sampled_from(["M", "1M", "scalar"])),
)
# Ops that keep a changed logit visible (no saturation, no clipping at zero) for the mutation property.
VISIBLE = st.one_of(
    st.builds(Elementwise, op=st.just("LeakyRelu"), alpha=st.sampled_from([0.2, 1.5])),
    st.builds(Elementwise, op=st.sampled_from(["Add", "Mul"]), const_shape=st.sampled_from(["M", "1M", "scalar"])),
)


@st.composite
def fc_layer(draw: st.DrawFn, after: st.SearchStrategy[Elementwise] = ELEMENTWISE) -> FcSpec:
    op = draw(st.sampled_from(["Gemm", "MatMul"]))
    gemm = op == "Gemm"
    return FcSpec(
        out_features=draw(st.integers(1, 8)),
        op=op,
        trans_b=draw(st.booleans()) if gemm else False,
        alpha=draw(st.sampled_from([1.0, 0.5, -1.25, 2.0])) if gemm else 1.0,
        beta=draw(st.sampled_from([1.0, 0.0, 0.75, -2.0])) if gemm else 1.0,
        bias=draw(st.sampled_from(["none", "M", "1M", "scalar"])),
        after=tuple(draw(st.lists(after, max_size=2))),
    )


@st.composite
def model_spec(draw: st.DrawFn, last_after: st.SearchStrategy[Elementwise] | None = None) -> ModelSpec:
    layers = draw(st.lists(fc_layer(), min_size=1, max_size=3))
    if last_after is not None:  # the last layer: a bias and only ops that keep a change visible
        last = draw(fc_layer(after=last_after))
        bias = last.bias if last.bias in ("M", "1M") else "M"  # a MatMul's scalar Add stays an Add
        layers[-1] = FcSpec(last.out_features, last.op, last.trans_b, last.alpha, 1.0, bias, last.after)
    return ModelSpec(
        channels=draw(st.integers(1, 8)),
        height=draw(st.integers(1, 8)),
        width=draw(st.integers(1, 8)),
        in_channels=draw(st.integers(1, 3)),
        extra_h=draw(st.integers(0, 2)),
        extra_w=draw(st.integers(0, 2)),
        layers=tuple(layers),
        opset=draw(st.integers(11, 21)),
        dtype=draw(st.sampled_from(["fp32", "fp16"])),
        seed=draw(st.integers(0, 2**16)),
        batch=draw(st.sampled_from([1, "N"])),
    )


def options_for(spec: ModelSpec) -> ConvertOptions:
    """Default tolerances for both dtypes: fp16's scale with the output's magnitude (verify.Tolerance)."""
    del spec
    return ConvertOptions()


def _head_ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@SETTINGS
@given(spec=model_spec())
def test_random_heads_convert_and_verify(spec: ModelSpec) -> None:
    model = build(spec)
    result = convert(model, options_for(spec))  # raises VerificationError when any comparison fails
    report = result.verification
    assert report is not None and report.passed
    checks = {c.check for c in report.comparisons}
    assert checks == {"same size", "larger size"}, report.comparisons
    assert sum(c.check == "larger size" for c in report.comparisons) >= 2
    ops = _head_ops(result.model)
    assert "Gemm" not in ops and "MatMul" not in ops and "Flatten" not in ops, ops
    assert ops.count("Conv") == 1 + len(spec.layers)
    assert result.model.opset_import[0].version >= spec.opset


def _bump_last_bias(model: onnx.ModelProto, delta: float) -> None:
    """Add `delta` to element 0 of the last head Conv's bias (one converted weight)."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    assert len(conv.input) == 3, "the last layer has a bias by construction"
    init = next(t for t in model.graph.initializer if t.name == conv.input[2])
    b = numpy_helper.to_array(init).copy()
    b.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(b, init.name))


@settings(SETTINGS, max_examples=60)
@given(spec=model_spec(last_after=VISIBLE))
def test_changed_weight_fails_verification(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = build(spec)
    converted = convert(model, options_for(spec)).model
    _bump_last_bias(converted, 50.0)
    report = verify(model, converted, options_for(spec))
    assert not report.passed
    failed = {c.check for c in report.failures}
    assert failed == {"same size", "larger size"}, report.comparisons

    folder = tmp_path_factory.mktemp("mutation")
    original_path = save(model, folder / "original.onnx")
    converted_path = save(converted, folder / "converted.onnx")
    atol = str(options_for(spec).tolerance.atol)
    result = CliRunner().invoke(main, ["verify", "--atol", atol, str(original_path), str(converted_path)])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output


def test_property_examples_are_varied() -> None:
    """The strategy reaches every knob (guards against a strategy that silently narrows)."""
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(spec=model_spec())
    def collect(spec: ModelSpec) -> None:
        seen.add(f"opset{spec.opset}")
        seen.add(spec.dtype)
        seen.add(f"layers{len(spec.layers)}")
        for layer in spec.layers:
            seen.update({layer.op, f"bias-{layer.bias}", f"transB{int(layer.trans_b)}"})
            seen.update(f"op-{a.op}" for a in layer.after)

    collect()
    expected = {f"opset{o}" for o in range(11, 22)} | {"fp32", "fp16", "layers1", "layers2", "layers3"}
    expected |= {"Gemm", "MatMul", "bias-none", "bias-M", "bias-1M", "bias-scalar", "transB0", "transB1"}
    expected |= {f"op-{o}" for o in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Add", "Mul")}
    assert expected <= seen, expected - seen


def test_cli_convert_of_a_random_head(tmp_path: Path) -> None:
    """One property example end to end through the CLI (the file path, not the API)."""
    spec = ModelSpec(
        channels=3,
        height=2,
        width=4,
        layers=(FcSpec(6, "MatMul", bias="1M", after=(Elementwise("Tanh"),)), FcSpec(2, trans_b=False, alpha=0.5)),
        opset=13,
        dtype="fp16",
    )
    src = save(build(spec), tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "c.onnx")])
    assert result.exit_code == 0, result.output
