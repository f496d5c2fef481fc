"""A flattened head behind an input with a symbolic height and width (torch's dynamic_axes on H and W,
a dynamo Dim): refused in one line that names the option, converted exactly with exported_size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import assert_sliding, big_input, convert, dims, ops, run
from click.testing import CliRunner
from rule_support import WINDOW, C, M, assert_refused_head, text_model

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, UsageError
from onnx_fc2conv.cli import main
from onnx_fc2conv.rules.base import Code

# [N, 3, H, W] -> 2x2 Conv -> the flatten: the map is [C, H - 1, W - 1], and K = 48 fits 5x4, 4x5, 3x7, 7x3, ...
_HEAD = """
    g (float[N, 3, H, W] input) => (float[N, 5] fc) {{
        conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
        {flatten}
        fc = Gemm <transB = 1> (flat, w, b)
    }}
"""
FLATTEN = "flat = Flatten <axis = 1> (conv)"
# dynamo's `view(x.size(0), -1)` when H and W are symbolic: the batch is read from the graph input
VIEW = """
        batch = Shape <start = 0, end = 1> (input)
        target = Concat <axis = 0> (batch, minus_one)
        flat = Reshape (conv, target)
"""


def symbolic_model(flatten: str = FLATTEN) -> onnx.ModelProto:
    return text_model(
        _HEAD.format(flatten=flatten),
        conv_w=(C, 3, 2, 2),
        w=(M, 48),
        b=(M,),
        minus_one=np.array([-1], np.int64),
    )


def pinned(model: onnx.ModelProto, size: tuple[int, int]) -> onnx.ModelProto:
    """The original as exported at `size`: its spatial dims fixed (the oracle for the windows)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for axis, value in zip((2, 3), size, strict=True):
        out.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = value
    return out


def test_symbolic_map_before_a_flatten_is_refused_naming_the_option() -> None:
    reason = (
        "Flatten 'flat' before Gemm 'fc': its input 'conv' has the symbolic size "
        "['H - 1', 'W - 1'] and Gemm 'fc' fits one: name the input size the model was exported at "
        "(--exported-size HxW)"
    )
    assert_refused_head(symbolic_model(), Code.SYMBOLIC_SIZE, reason)


@pytest.mark.parametrize("flatten", [FLATTEN, VIEW], ids=["flatten", "view-reads-input-batch"])
def test_exported_size_converts_exactly(flatten: str) -> None:
    model = symbolic_model(flatten)
    result = convert(model, exported_size=WINDOW)
    assert ops(result.model) == ["Conv", "Conv"]
    assert result.notices[0] == "symbolic spatial dims read at the exported size 5x4: input 'input' ('H', 'W')"
    assert dims(result.model.graph.input[0]) == ["N", 3, "height", "width"]
    assert {c.check for c in result.verification.comparisons} >= {"same size", "larger size"}
    x = big_input((2, 3, 9, 7))
    assert_sliding(pinned(model, WINDOW), result.model, x, WINDOW)
    small = big_input((2, 3, *WINDOW), seed=4)
    expected = run(model, {"input": small})["fc"]
    np.testing.assert_allclose(run(result.model, {"input": small})["fc"].reshape(2, M), expected, rtol=1e-5, atol=1e-6)


def test_the_size_decides_the_kernel() -> None:
    """K = 48 fits 5x4 and 4x5 alike: each size gives its own exact kernel, verified at that size."""
    result = convert(symbolic_model(), exported_size=(4, 5), verify=True)
    kernel = next(t for t in result.model.graph.initializer if t.name == "w")
    assert list(kernel.dims) == [M, C, 3, 4]


def test_convert_leaves_the_callers_model_symbolic() -> None:
    model = symbolic_model()
    onnx_fc2conv.convert(model, ConvertOptions(exported_size=WINDOW))
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]


def test_fixed_input_at_that_size_is_left_as_it_is() -> None:
    model = pinned(symbolic_model(), WINDOW)
    result = convert(model, exported_size=WINDOW)
    assert not any("exported size" in n for n in result.notices)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((5, 5), "--exported-size 5x5: input 'input' has a fixed 4 on axis 3"),
        ((5, 4, 3), "--exported-size 5x4x3 has 3 dims; input 'input' has 2 spatial dims"),
    ],
)
def test_sizes_the_input_contradicts_are_usage_errors(size: tuple[int, ...], message: str) -> None:
    with pytest.raises(UsageError) as info:
        onnx_fc2conv.convert(pinned(symbolic_model(), WINDOW), ConvertOptions(exported_size=size))
    assert str(info.value) == message


def test_exported_size_must_be_a_size() -> None:
    with pytest.raises(UsageError, match="exported_size: sizes must be a sequence of sizes"):
        ConvertOptions(exported_size=(5, 0))


def test_cli_refuses_then_converts_and_verifies_with_the_option(tmp_path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "c.onnx"
    onnx.save(symbolic_model(VIEW), src)
    runner = CliRunner()
    refused = runner.invoke(main, ["convert", "-q", str(src), str(out)])
    assert refused.exit_code == 3
    assert "--exported-size HxW" in refused.output and not out.exists()
    done = runner.invoke(main, ["convert", "-q", str(src), str(out), "--exported-size", "5x4"])
    assert done.exit_code == 0, done.output
    checked = runner.invoke(main, ["verify", "-q", str(src), str(out), "--exported-size", "5x4"])
    assert checked.exit_code == 0, checked.output
    assert "result: PASSED" in checked.output
    shown = runner.invoke(main, ["inspect", str(src), "--exported-size", "5x4"])
    assert shown.exit_code == 0 and "feature map 'conv' [4, 4, 3], window 4x3" in shown.output
