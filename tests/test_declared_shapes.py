"""Verification holds the converted model's declared output shapes to what it returns."""

from __future__ import annotations

from pathlib import Path

import onnx
from builders import two_map_model

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, VerificationError
from onnx_fc2conv.graph import set_value_info_dims

MODELS = Path(__file__).resolve().parent.parent / "models"


def _converted(dims: list) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    original = onnx.load(str(MODELS / "ts_vgg_small.onnx"))
    converted = onnx_fc2conv.convert(original, ConvertOptions(verify=False)).model
    set_value_info_dims(converted.graph.output[0], dims)
    return original, converted


def test_a_wrong_declared_rank_fails_verification_naming_the_output() -> None:
    original, converted = _converted(["batch", "classes"])
    report = onnx_fc2conv.verify(original, converted)
    assert not report.passed
    failures = [c for c in report.comparisons if not c.passed]
    assert {c.check for c in failures} == {"declared shape"}
    assert failures[0].output == converted.graph.output[0].name
    assert failures[0].note.startswith("declared shape [batch, classes], returns [1, 10, 1, 1]")


def test_a_declared_symbol_the_input_binds_differently_fails() -> None:
    # 'height' is the input's own symbol: an output dim declared 'height' must equal the input height
    original, converted = _converted(["batch", 10, "height", "out_width"])
    report = onnx_fc2conv.verify(original, converted)
    notes = {c.note for c in report.comparisons if c.check == "declared shape"}
    assert any(n.startswith("declared shape [batch, 10, height, out_width], returns [2, 10, ") for n in notes)


def test_one_symbol_on_two_outputs_of_different_sizes_fails() -> None:
    # 'fine' and 'coarse' are maps of different sizes: declaring both [batch, 5, out_height, out_width]
    # claims they are one size, which the first larger run disproves on the second
    original = two_map_model()
    converted = onnx_fc2conv.convert(original, ConvertOptions(verify=False)).model
    shared = ["batch", 5, "out_height", "out_width"]
    for out in converted.graph.output[:2]:
        set_value_info_dims(out, shared)
    report = onnx_fc2conv.verify(original, converted)
    declared = "declared shape [batch, 5, out_height, out_width]"
    failures = [(c.check, c.output, c.input_shape, c.note) for c in report.comparisons if not c.passed]
    assert failures == [
        (
            "declared shape",
            "coarse",
            (2, 3, 12, 11),
            f"{declared}, returns [2, 5, 3, 3]: 'out_height' is 5 in another output",
        ),
        (
            "declared shape",
            "coarse",
            (2, 3, 11, 15),
            f"{declared}, returns [2, 5, 3, 5]: 'out_height' is 4 in another output",
        ),
    ]


def test_an_output_without_a_reference_holds_to_its_declaration_at_larger_sizes() -> None:
    original = two_map_model()
    converted = onnx_fc2conv.convert(original, ConvertOptions(verify=False)).model
    set_value_info_dims(converted.graph.output[2], ["batch", 2, "height", 8])  # 'side' is h x h
    report = onnx_fc2conv.verify(original, converted)
    failures = [(c.check, c.output, c.input_shape[2:]) for c in report.comparisons if not c.passed]
    assert failures == [("declared shape", "side", (12, 11)), ("declared shape", "side", (11, 15))]


def test_a_correct_declaration_passes() -> None:
    original, converted = _converted(["batch", 10, "out_height", "out_width"])
    assert onnx_fc2conv.verify(original, converted).passed


def test_convert_refuses_to_write_a_model_whose_declaration_is_wrong(monkeypatch, tmp_path) -> None:
    import onnx_fc2conv.api as api

    def one_by_one(model: onnx.ModelProto, *_: object) -> None:  # claims a 1x1 map at every size
        set_value_info_dims(model.graph.output[0], ["batch", 10, 1, 1])

    monkeypatch.setattr(api, "name_outputs", one_by_one)
    out = tmp_path / "out.onnx"
    try:
        onnx_fc2conv.convert_file(str(MODELS / "ts_vgg_small.onnx"), str(out))
    except VerificationError as exc:
        assert "(declared shape, input [2, 3, " in str(exc)
        assert "declared shape [batch, 10, 1, 1], returns [2, 10, " in str(exc)
    else:
        raise AssertionError("a wrong declaration was written")
    assert not out.exists()
