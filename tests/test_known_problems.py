"""Known input problems get their own readable line (exit 2), never the catch-all meant for bugs; text
taken from the model is escaped, so that it can neither span lines nor forge a message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from corpus import save, save_external, small_model, snapshot
from onnx import helper

from onnx_fc2conv import ModelLoadError, ModelRunError, convert
from onnx_fc2conv.cli import main


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _patched(folder: Path, model: onnx.ModelProto, old: bytes, new: bytes, name: str = "m.onnx") -> Path:
    """The serialized model with the bytes of one string replaced (same length: lengths stay valid)."""
    assert len(old) == len(new)
    data = model.SerializeToString()
    assert old in data
    path = folder / name
    path.write_bytes(data.replace(old, new))
    return path


def non_utf8_node_name(folder: Path) -> Path:
    m = small_model()
    m.graph.node[0].name = "conv_node"
    return _patched(folder, m, b"conv_node", b"conv\xff\xfenod")


def non_utf8_doc_string(folder: Path) -> Path:
    m = small_model()
    m.doc_string = "made by hand"
    return _patched(folder, m, b"made by hand", b"made \xc3( hand")


def non_utf8_location(folder: Path) -> Path:
    path = save_external(small_model(), folder / "m.onnx", location="weights.bin")
    m = onnx.load(str(path), load_external_data=False)
    return _patched(folder, m, b"weights.bin", b"weights\xff.bi")


def newline_in_location(folder: Path) -> Path:
    path = save_external(small_model(), folder / "m.onnx")
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        next(e for e in t.external_data if e.key == "location").value = "x\nonnx-fc2conv: error: forged"
    return save(m, path)


def cleared_input_dim(folder: Path) -> Path:
    m = small_model()
    m.graph.input[0].type.tensor_type.shape.dim[2].Clear()
    return save(m, folder / "m.onnx")


def negative_input_dim(folder: Path) -> Path:
    m = small_model()
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_value = -4
    return save(m, folder / "m.onnx")


def zero_input_dim(folder: Path) -> Path:
    m = small_model()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0
    return save(m, folder / "m.onnx")


def undefined_data_type(folder: Path) -> Path:
    m = small_model()
    m.graph.initializer[0].data_type = 40
    return save(m, folder / "m.onnx")


def no_input_dims(folder: Path) -> Path:
    m = small_model()
    m.graph.input[0].type.tensor_type.shape.ClearField("dim")
    return save(m, folder / "m.onnx")


def duplicate_initializer(folder: Path) -> Path:
    m = small_model()
    m.graph.initializer.append(m.graph.initializer[0])
    return save(m, folder / "m.onnx")


def runtime_cannot_run(folder: Path) -> Path:
    """group=2 on a Conv whose kernel holds every input channel: onnxruntime fails when it runs."""
    m = small_model()
    m.graph.node[0].attribute.append(helper.make_attribute("group", 2))
    return save(m, folder / "m.onnx")


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "non-UTF-8 node name": (
        non_utf8_node_name,
        "{path}: model.graph.node[0].name is not valid UTF-8 text (ONNX strings are UTF-8)",
    ),
    "non-UTF-8 doc string": (
        non_utf8_doc_string,
        "{path}: model.doc_string is not valid UTF-8 text (ONNX strings are UTF-8)",
    ),
    "non-UTF-8 external data location": (
        non_utf8_location,
        "{path}: model.graph.initializer[0].external_data[0].value is not valid UTF-8 text (ONNX strings are UTF-8)",
    ),
    "newline in an external data location": (
        newline_in_location,
        "{path}: tensor 'conv_w_1': external data file 'x\\nonnx-fc2conv: error: forged' is missing",
    ),
    "cleared input dim": (
        cleared_input_dim,
        "{path}: input 'input' has an unknown dim at axis 2 (neither a size nor a name)",
    ),
    "negative input dim": (negative_input_dim, "{path}: input 'input' has a negative dim (-4) at axis 3"),
    "zero input dim": (zero_input_dim, "{path}: input 'input' has a zero dim at axis 2: it holds no values"),
    "undefined data type": (
        undefined_data_type,
        "{path}: tensor 'conv_w_1' has data type 40, which ONNX does not define",
    ),
    "no input dims": (
        no_input_dims,
        "onnxruntime cannot load the model: Load model from {path} failed:Node (Conv_4) Op (Conv) "
        "[ShapeInferenceError] Input tensor must have at least 3 dimensions",
    ),
    "duplicate initializer": (
        duplicate_initializer,
        "{path}: initializer 'conv_w_1' is defined twice (the ONNX checker rejects this model)",
    ),
    "onnxruntime cannot run the original": (
        runtime_cannot_run,
        "onnxruntime cannot run the original model: FusedConv node 'Conv_4': Input channels C is not equal to "
        "kernel channels * group. C: 2 kernel channels: 2 group: 2",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_exit_2(name: str, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    make, message = CASES[name]
    path = make(src)
    before = snapshot(src)
    res = run("convert", path, out / "c.onnx")
    assert res.exit_code == 2, res.output
    assert res.stderr == f"onnx-fc2conv: error: {message.format(path=path)}\n"
    assert res.stdout == ""
    assert list(out.iterdir()) == []
    assert snapshot(src) == before


def test_api_raises_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelRunError) as caught:
        convert(runtime_cannot_run(tmp_path))
    assert caught.value.exit_code == 2 and isinstance(caught.value, ModelLoadError)
    with pytest.raises(ModelLoadError, match="not valid UTF-8"):
        convert(non_utf8_node_name(tmp_path))
