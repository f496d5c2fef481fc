"""Valid sizes: any size from a minimum, or only the exported size plus multiples of the stride."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, parser

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, UsageError

RNG = np.random.default_rng(11)


def _model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _two_branch() -> onnx.ModelProto:
    """A high-resolution branch and a low one upsampled and added back (HRNet's fusion)."""
    return _model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 16, 16] x) => (float[1, 5] y) {
          a = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x, w1)
          hi = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(a, w2)
          lo1 = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(hi, w3)
          up = Resize<mode = "nearest">(lo1, roi, scales)
          s = Add(hi, up)
          f = Flatten(s)
          y = Gemm<transB = 1>(f, fc, fb)
        }""",
        w1=RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
        w2=RNG.standard_normal((4, 4, 3, 3)).astype(np.float32),
        w3=RNG.standard_normal((4, 4, 3, 3)).astype(np.float32),
        roi=np.zeros(0, np.float32),
        scales=np.array([1, 1, 2, 2], np.float32),
        fc=RNG.standard_normal((5, 4 * 4 * 4)).astype(np.float32),
        fb=RNG.standard_normal(5).astype(np.float32),
    )


def _plain() -> onnx.ModelProto:
    return _model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 12, 10] x) => (float[1, 5] y) {
          a = Conv<kernel_shape = [3, 3], strides = [2, 2]>(x, w1)
          f = Flatten(a)
          y = Gemm<transB = 1>(f, fc)
        }""",
        w1=RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((5, 4 * 5 * 4)).astype(np.float32),
    )


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("onnx_fc2conv.")}


def test_a_two_branch_backbone_runs_at_the_exported_size_plus_multiples_of_its_stride() -> None:
    result = onnx_fc2conv.convert(_two_branch())
    valid = result.valid_sizes
    assert (valid.minimum, valid.step) == ((16, 16), (8, 8))
    assert not valid.accepts((17, 16)) and valid.accepts((24, 32))
    larger = [c.input_shape for c in result.verification.comparisons if c.check == "larger size"]
    assert larger and all(valid.accepts(tuple(shape[2:])) for shape in larger)
    assert _metadata(result.model)["onnx_fc2conv.valid_sizes"] == "16+8k x 16+8k"


def test_a_plain_backbone_runs_at_any_size_from_its_minimum() -> None:
    result = onnx_fc2conv.convert(_plain())
    assert (result.valid_sizes.minimum, result.valid_sizes.step) == ((11, 9), (1, 1))
    meta = _metadata(result.model)
    assert meta["onnx_fc2conv.valid_sizes"] == "11+ x 9+"
    assert meta["onnx_fc2conv.min_size"] == "11x9"
    assert meta["onnx_fc2conv.output_stride"] == "2x2"
    assert meta["onnx_fc2conv.receptive_field"] == "11x9"  # 3 + (5 - 1) * 2, 3 + (4 - 1) * 2


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((17, 16), "--size 17x16 is not a size this model runs at; valid sizes: 16+8k x 16+8k"),
        ((8, 8), "--size 8x8 is not a size this model runs at; valid sizes: 16+8k x 16+8k"),
        ((24,), "--size 24 has 1 dims; the input has 2 spatial dims"),
    ],
)
def test_a_size_the_model_does_not_run_at_is_a_usage_error(size: tuple[int, ...], message: str) -> None:
    with pytest.raises(UsageError) as err:
        onnx_fc2conv.convert(_two_branch(), ConvertOptions(sizes=(size,)))
    assert str(err.value) == message


def test_the_json_report_gives_the_valid_sizes(tmp_path) -> None:
    from click.testing import CliRunner
    from json_contract import parse

    from onnx_fc2conv.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(_two_branch(), str(src))
    result = CliRunner().invoke(main, ["convert", "--json", str(src), str(tmp_path / "c.onnx")])
    assert result.exit_code == 0
    doc = parse(result.stdout)  # validated against the committed schema
    assert doc["valid_sizes"] == {
        "describe": "16+8k x 16+8k",
        "minimum": [16, 16],
        "step": [8, 8],
        "exported": [16, 16],
    }
