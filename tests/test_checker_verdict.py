"""The checker's verdict is about the file as written: no "passed" for a model that
`onnx.checker.check_model(full_check=True)` rejects.

The checker in the tool runs on a light copy (large weights declared as inputs, see container.py).
What that copy hides (IR versions before 4, tensors holding their values in two fields, duplicate
names and metadata keys) is refused when a model is loaded, with the reason, and checked again on
the converted model before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from corpus import save, small_model
from json_contract import parse
from onnx import helper

from onnx_fc2conv import CheckerError, ModelLoadError, convert
from onnx_fc2conv.cli import main
from onnx_fc2conv.files import save_model


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _weight(m: onnx.ModelProto) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name.startswith("W_"))


def _declare_initializers(m: onnx.ModelProto) -> None:
    for t in m.graph.initializer:
        m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def ir2(m: onnx.ModelProto) -> None:
    _declare_initializers(m)
    m.ir_version = 2


def ir3_initializer_not_an_input(m: onnx.ModelProto) -> None:
    m.ir_version = 3


def raw_and_float(m: onnx.ModelProto) -> None:
    _weight(m).float_data.append(1.0)


def float_and_double(m: onnx.ModelProto) -> None:
    w = _weight(m)
    values = onnx.numpy_helper.to_array(w).ravel().tolist()
    w.ClearField("raw_data")
    w.float_data.extend(values)
    w.double_data.append(1.0)


def duplicate_initializer(m: onnx.ModelProto) -> None:
    m.graph.initializer.append(_weight(m))


def duplicate_metadata(m: onnx.ModelProto) -> None:
    for value in ("a", "b"):
        entry = m.metadata_props.add()
        entry.key, entry.value = "author", value


REJECTED: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "IR 2": (ir2, "IR version 2 cannot carry opset imports (IR 3 introduced them)"),
    "IR 3, initializer not an input": (
        ir3_initializer_not_an_input,
        "IR version 3 needs every initializer among the graph inputs; 'conv_w_1' is not",
    ),
    "raw_data and float_data": (raw_and_float, "tensor 'W_9' holds its values twice, in raw_data and float_data"),
    "float_data and double_data": (
        float_and_double,
        "tensor 'W_9' holds its values twice, in float_data and double_data",
    ),
    "duplicate initializer": (duplicate_initializer, "initializer 'W_9' is defined twice"),
    "duplicate metadata key": (duplicate_metadata, "metadata key 'author' appears twice"),
}


def _rejected_model(name: str) -> onnx.ModelProto:
    m = small_model(opset=9)
    REJECTED[name][0](m)
    with pytest.raises(Exception):  # noqa: B017 - the premise: onnx's own checker rejects it
        onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("name", list(REJECTED))
def test_refused_at_load_with_the_reason(name: str, tmp_path: Path) -> None:
    src = save(_rejected_model(name), tmp_path / "m.onnx")
    reason = REJECTED[name][1]
    expected = f"onnx-fc2conv: error: {src}: {reason} (the ONNX checker rejects this model)\n"
    for args in (["convert", src, tmp_path / "c.onnx"], ["convert", "--no-verify", src, tmp_path / "c.onnx"]):
        res = run(*args)
        assert res.exit_code == 2 and res.stderr == expected and "passed" not in res.stdout
    assert run("inspect", src).stderr == expected
    assert not (tmp_path / "c.onnx").exists()
    res = run("convert", "--json", src, tmp_path / "c.onnx")
    assert parse(res.stdout)["error"] == expected.removeprefix("onnx-fc2conv: error: ").strip()
    with pytest.raises(ModelLoadError, match="the ONNX checker rejects this model"):
        convert(_rejected_model(name))


@pytest.mark.parametrize("name", list(REJECTED))
def test_verify_refuses_a_converted_file_the_checker_rejects(name: str, tmp_path: Path) -> None:
    """`verify ORIGINAL CONVERTED` never says "onnx checker: passed" about such a converted file."""
    src = save(small_model(opset=9), tmp_path / "m.onnx")
    good = tmp_path / "good.onnx"
    assert run("convert", src, good).exit_code == 0
    bad = onnx.load(str(good))
    REJECTED[name][0](bad)
    save(bad, tmp_path / "bad.onnx")
    res = run("verify", src, tmp_path / "bad.onnx")
    assert res.exit_code == 2, res.output
    assert "passed" not in res.stdout
    assert "the ONNX checker rejects this model" in res.stderr


def test_ir3_model_converts_to_a_file_the_checker_accepts(tmp_path: Path) -> None:
    m = small_model(opset=9)
    _declare_initializers(m)
    m.ir_version = 3
    onnx.checker.check_model(m, full_check=True)
    src = save(m, tmp_path / "m.onnx")
    out = tmp_path / "c.onnx"
    res = run("convert", src, out)
    assert res.exit_code == 0, res.stderr
    assert "  onnx checker: passed" in res.stdout.splitlines()
    onnx.checker.check_model(str(out), full_check=True)


def test_save_checks_the_model_as_written(tmp_path: Path) -> None:
    """A converted model the checker would reject (here: IR 3, a new initializer not among the
    inputs) is not written: CheckerError (exit 1), no file."""
    m = small_model(opset=9)
    _declare_initializers(m)
    m.ir_version = 3
    m.graph.initializer.append(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(_weight(m)), "fresh"))
    with pytest.raises(CheckerError, match="'fresh' is not") as caught:
        save_model(m, tmp_path / "c.onnx")
    assert caught.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []
