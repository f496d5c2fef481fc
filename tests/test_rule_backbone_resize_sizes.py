"""rules/backbone_resize_sizes: a Resize to fixed `sizes` that are a whole multiple of its input
becomes a Resize by `scales`; other fixed sizes are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, backbone, big_input, convert, gemm, ops, run
from click.testing import CliRunner
from rule_support import backbone_refusals, refused

from onnx_fc2conv.cli import main
from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def _resize_model(sizes: list[int]) -> onnx.ModelProto:
    g = GraphBuilder(opset=13)
    feat = backbone(g, g.input("input", [1, 3, 5, 4]), 3, C)  # [1, 4, 4, 3]
    up = g.op("Resize", [feat, "", "", g.const("sizes", np.array(sizes, np.int64))], name="resize", mode="nearest")
    flat = g.op("Flatten", [up], axis=1)
    g.output(gemm(g, flat, C * sizes[2] * sizes[3], M))
    return g.build()


def test_resize_integer_sizes_become_scales() -> None:
    model = _resize_model([1, 4, 8, 6])
    result = convert(model)
    assert [(f.node, f.op) for f in result.backbone_fixes] == [("resize", "Resize")]
    resize = next(n for n in result.model.graph.node if n.op_type == "Resize")
    assert len(resize.input) == 3 and resize.input[2]
    assert "larger size" in {c.check for c in result.verification.comparisons}
    assert ops(result.model) == ["Conv", "Relu", "Resize", "Conv"]


def test_resize_by_scales_follows_a_larger_input() -> None:
    """Nearest x2: one input pixel moves the upsampled map by two, so the map at (2i, 2j) is the
    original model on the crop at (i, j)."""
    model = _resize_model([1, 4, 8, 6])
    out = convert(model).model
    x = big_input((1, 3, 7, 6))
    got = run(out, {"input": x})["output"]
    assert got.shape == (1, M, 5, 5)
    for i in range(3):
        for j in range(3):
            crop = np.ascontiguousarray(x[:, :, i : i + 5, j : j + 4])
            assert_close(got[:, :, 2 * i, 2 * j], run(model, {"input": crop})["output"])


def test_resize_non_integer_sizes_refused() -> None:
    model = _resize_model([1, 4, 7, 5])
    err = refused(model)
    reason = (
        "Resize 'resize' resizes to fixed sizes [1, 4, 7, 5] that are not a whole multiple of its input "
        "[1, 4, 4, 3]; the model cannot run at other sizes"
    )
    assert err.reasons == [reason]
    assert backbone_refusals(model) == [("resize", Code.FIXED_RESIZE, reason)]


def test_backbone_refusal_via_cli_exits_3(tmp_path) -> None:
    src, dst = tmp_path / "resize.onnx", tmp_path / "out.onnx"
    onnx.save(_resize_model([1, 4, 7, 5]), str(src))
    res = CliRunner().invoke(main, ["convert", str(src), str(dst)])
    assert res.exit_code == 3
    assert "Resize 'resize'" in res.stderr and "Traceback" not in res.stderr
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resize.onnx"]


def _gate_model(size: tuple[int, int], computed: bool) -> onnx.ModelProto:
    """GhostNetV2's attention gate: `x * sigmoid(interpolate(avg_pool2d(x, 2), size=x.shape[-2:]))`,
    its sizes folded to the exported map (`computed`: batch and channels taken from Shape, the
    spatial dims a constant, as TorchScript writes it). Same seeded weights at every `size`."""
    g = GraphBuilder(opset=13)
    x = backbone(g, g.input("input", [1, 3, *size]), 3, C)
    feat = (size[0] - 1, size[1] - 1)  # the map x
    gate = g.op("Sigmoid", [g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    if computed:
        lead = g.op("Slice", [g.op("Shape", [gate]), g.const("start", np.array([0])), g.const("end", np.array([2]))])
        sizes = g.op("Concat", [lead, g.const("hw", np.array(feat, np.int64))], axis=0)
    else:
        sizes = g.const("sizes", np.array([1, C, *feat], np.int64))
    up = g.op("Resize", [gate, "", "", sizes], name="resize", mode="nearest", nearest_mode="floor")
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("Mul", [x, up])])], axis=1)
    g.output(gemm(g, pooled, C, M), shape=[1, M])
    return g.build()


@pytest.mark.parametrize("computed", [False, True])
def test_resize_to_a_multiplied_operand_follows_its_shape(computed: bool) -> None:
    """A ratio of 2 would run only where the map is even; the operand's shape runs everywhere and
    equals the model built at that size (odd sizes: the pooled gate is one smaller than half)."""
    result = convert(_gate_model((7, 5), computed))  # a 6 x 4 map
    assert [(f.node, f.op) for f in result.backbone_fixes] == [("resize", "Resize")]
    assert "now Shape(" in result.backbone_fixes[0].change
    assert result.valid_sizes.step == (1, 1)
    assert ops(result.model)[:6] == ["Conv", "Relu", "AveragePool", "Sigmoid", "Shape", "Resize"]
    for size in ((8, 6), (10, 9)):
        x = big_input((2, 3, *size))
        expected = np.concatenate([run(_gate_model(size, computed), {"input": x[i : i + 1]})["output"] for i in (0, 1)])
        assert_close(run(result.model, {"input": x})["output"].reshape(2, M), expected)
