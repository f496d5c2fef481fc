"""The opt-in batched head: each head Conv also gets a Gemm route, taken for a batch at the original size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import gemm, image_model, ops, run
from click.testing import CliRunner

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions
from onnx_fc2conv.cli import main

SIZE = (5, 4)  # image_model's input; its head window is 4 x 3


def _two_layer_head(g, x, k):  # type: ignore[no-untyped-def]
    return gemm(g, g.op("Relu", [gemm(g, x, k, 7)]), 7, 5)


def _model(opset: int = 17) -> onnx.ModelProto:
    return image_model(_two_layer_head, spatial=SIZE, opset=opset)


def _image(batch: int, size: tuple[int, int], seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)


def _with_route_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose outputs also give each route's Gemm batch (the `Where` node's output)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    routes = [n.output[0] for n in out.graph.node if n.op_type == "Where"]
    out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(r) for r in routes)
    return out, routes


def test_batched_head_is_verified_and_routes_by_batch_and_size() -> None:
    model = _model()
    result = onnx_fc2conv.convert(model, ConvertOptions(batch_head=True))
    assert result.verification is not None and result.verification.passed
    assert ops(result.model).count("Gemm") == 2 and ops(result.model).count("Conv") == 3  # backbone + 2 layers
    assert any(n.startswith("batched head: 2 head layer(s)") for n in result.notices)
    default = onnx_fc2conv.convert(model, ConvertOptions(verify=False)).model
    probe, routes = _with_route_outputs(result.model)
    for batch, size, gemm_rows in [(1, SIZE, 0), (3, SIZE, 3), (8, SIZE, 8), (1, (9, 7), 0), (3, (9, 7), 0)]:
        x = _image(batch, size)
        got = run(probe, {"input": x})
        assert [int(got[r][0]) for r in routes] == [gemm_rows] * 2, (batch, size)
        expected = run(default, {"input": x})["output"]
        assert got["output"].shape == expected.shape
        np.testing.assert_allclose(got["output"], expected, rtol=1e-5, atol=1e-5)


def test_verification_exercises_the_gemm_route() -> None:
    """A route whose Gemm drops the bias differs only at batch > 1, original size: verification fails there."""
    model = _model()
    routed = onnx_fc2conv.convert(model, ConvertOptions(batch_head=True, verify=False)).model
    for node in routed.graph.node:
        if node.op_type == "Gemm":
            del node.input[2:]
    report = onnx_fc2conv.verify(model, routed)
    assert not report.passed
    assert {(c.check, c.input_shape[0]) for c in report.failures} == {("same size", 2)}


def test_default_is_unchanged() -> None:
    result = onnx_fc2conv.convert(_model(), ConvertOptions(verify=False))
    assert "Gemm" not in ops(result.model)
    assert not any("batched head" in n for n in result.notices)


def test_old_opset_keeps_the_conv_form_with_a_notice() -> None:
    result = onnx_fc2conv.convert(_model(opset=10), ConvertOptions(batch_head=True))
    assert "Gemm" not in ops(result.model)
    assert "batched head needs opset >= 11 (the model has 10); not applied" in result.notices


def test_cli_flag(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_model(), str(src))
    res = CliRunner().invoke(main, ["convert", "--batch-head", str(src), str(dst)])
    assert res.exit_code == 0, res.output
    assert "batched head: 2 head layer(s)" in res.output
    assert ops(onnx.load(str(dst))).count("Gemm") == 2


@pytest.mark.parametrize("batch", [2, 5])
def test_larger_batch_at_larger_size_takes_the_conv_route(batch: int) -> None:
    routed = onnx_fc2conv.convert(_model(), ConvertOptions(batch_head=True, verify=False)).model
    probe, routes = _with_route_outputs(routed)
    got = run(probe, {"input": _image(batch, (6, 4))})  # one more row: a 2 x 1 map
    assert [int(got[r][0]) for r in routes] == [0, 0]
    assert got["output"].shape == (batch, 5, 2, 1)
