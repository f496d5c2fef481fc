"""`verify ORIGINAL CONVERTED` says when the second model is not a conversion of the first (exit 2)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from onnx_fc2conv.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"


def _verify(first: str, second: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", str(MODELS / first), str(MODELS / second)])
    return result.exit_code, result.stderr


def test_an_unconverted_model_is_a_usage_error() -> None:
    code, err = _verify("ts_vgg_small.onnx", "ts_vgg_small.onnx")
    assert (code, err) == (
        2,
        "onnx-fc2conv: error: the second model has the original's fixed input shape ('input' [1, 3, 64, 64]): "
        "convert it first\n",
    )


def test_two_unrelated_models_are_a_usage_error() -> None:
    code, err = _verify("ts_vgg_small.onnx", "question_mlp.onnx")
    assert code == 2
    assert err == (
        "onnx-fc2conv: error: the models' inputs differ ('input' [1, 3, 64, 64] and 'input' ['batch', 3]): "
        "the second is not a conversion of the first\n"
    )


def test_a_static_size_model_points_to_its_dynamic_conversion(tmp_path: Path) -> None:
    static = tmp_path / "static.onnx"
    written = CliRunner().invoke(
        main, ["convert", "-q", str(MODELS / "ts_vgg_small.onnx"), str(static), "--input-size", "96x96"]
    )
    assert written.exit_code == 0
    result = CliRunner().invoke(main, ["verify", str(MODELS / "ts_vgg_small.onnx"), str(static)])
    assert result.exit_code == 2
    assert "written with static shapes (--input-size)" in result.stderr
