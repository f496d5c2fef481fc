"""Bad inputs through the CLI: the documented exit code, one readable line on stderr, nothing written.

Every case is a function that builds its input under `tmp_path` and returns the argument to give
the CLI (plus extra `convert` arguments). The CLI runs in-process with click's runner (stderr kept
apart from stdout); a few cases run again in a real subprocess to prove that no traceback and no
onnxruntime log line reaches the terminal.

Behaviour decided here for models onnxruntime cannot run (opset 99, a custom-domain op):
- `convert` (which verifies) exits 2 with one line saying onnxruntime cannot load the model and
  naming the op. This holds even when the head cannot be analysed (onnx cannot infer shapes through
  a custom op): when a verified conversion is refused, the runtime is asked first, because a model
  the runtime cannot load is the more basic problem.
- `convert --no-verify`: a custom op on a side branch does not stop the rewrite (exit 0; the op
  is left untouched, the head becomes convolutions). A custom op between the backbone and the head
  hides the feature-map shape from onnx's shape inference: exit 3, naming the tensor whose shape is
  unknown.
- an opset the installed onnx does not know (99) is refused when the model is read (exit 2, for
  every command): neither shape inference nor the checker can vouch for such a graph.
- `inspect` needs no runtime: it reports the custom-op models (exit 0, the blocked head listed
  with its reason) and refuses opset 99 (exit 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from corpus import leftovers, save, save_external, small_model, snapshot
from onnx import helper, numpy_helper

from onnx_fc2conv.cli import main


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def run_cli(*args: str) -> Outcome:
    result = _runner().invoke(main, list(args), catch_exceptions=True)
    return Outcome(result.exit_code, result.stdout, result.stderr, result.exception)


def assert_one_line_error(out: Outcome, code: int, *fragments: str) -> str:
    """Exit `code`, exactly one line on stderr starting with the tool's prefix, no traceback."""
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert out.code == code, (out.code, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("onnx-fc2conv: error: "), line
    assert "Traceback" not in out.stderr + out.stdout
    assert "rerun with --debug" not in line, f"an unforeseen exception escaped: {line}"
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """`make(folder)` writes the bad input into `folder` and returns the path given to the CLI."""

    make: Callable[[Path], Path]
    code: int  # convert's exit code
    message: tuple[str, ...]  # fragments the one stderr line must contain
    inspect_code: int | None = None  # None: same as `code`
    no_verify_code: int | None = None  # None: same as `code`
    no_verify_message: tuple[str, ...] | None = None  # None: same as `message`


def _valid(folder: Path, name: str = "model.onnx") -> Path:
    return save(small_model(), folder / name)


def zero_bytes(folder: Path) -> Path:
    p = folder / "empty.onnx"
    p.write_bytes(b"")
    return p


def truncated(folder: Path) -> Path:
    data = small_model().SerializeToString()
    p = folder / "truncated.onnx"
    p.write_bytes(data[: len(data) // 2])
    return p


def random_bytes(folder: Path) -> Path:
    p = folder / "random.onnx"
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def text_file(folder: Path) -> Path:
    p = folder / "notes.onnx"
    p.write_text("this is not a model\n")
    return p


def tensor_proto(folder: Path) -> Path:
    p = folder / "tensor.onnx"
    p.write_bytes(numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w").SerializeToString())
    return p


def graph_proto(folder: Path) -> Path:
    p = folder / "graph.onnx"
    p.write_bytes(small_model().graph.SerializeToString())
    return p


def empty_graph(folder: Path) -> Path:
    m = small_model()
    m.graph.ClearField("node")
    m.graph.ClearField("initializer")
    return save(m, folder / "empty_graph.onnx")


def no_graph(folder: Path) -> Path:
    m = small_model()
    m.ClearField("graph")
    return save(m, folder / "no_graph.onnx")


def missing_ir_version(folder: Path) -> Path:
    m = small_model()
    m.ClearField("ir_version")
    return save(m, folder / "no_ir.onnx")


def _weight(m: onnx.ModelProto) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name.startswith("W_"))


def raw_data_short(folder: Path) -> Path:
    m = small_model()
    w = _weight(m)
    w.raw_data = w.raw_data[:-4]
    return save(m, folder / "short_raw.onnx")


def float_data_short(folder: Path) -> Path:
    m = small_model()
    w = _weight(m)
    values = numpy_helper.to_array(w).ravel()[:-1]
    w.ClearField("raw_data")
    w.float_data.extend(values.tolist())
    return save(m, folder / "short_float_data.onnx")


def tensor_without_data(folder: Path) -> Path:
    m = small_model()
    w = _weight(m)
    w.ClearField("raw_data")
    return save(m, folder / "no_data.onnx")


def opset_99(folder: Path) -> Path:
    m = small_model()
    m.opset_import[0].version = 99
    return save(m, folder / "opset99.onnx")


def _custom_op_model() -> onnx.ModelProto:
    """A custom-domain op (com.example.Swish2) after the backbone Relu, before the Flatten."""
    m = small_model()
    flatten = next(n for n in m.graph.node if n.op_type == "Flatten")
    custom = helper.make_node("Swish2", [flatten.input[0]], ["custom_out"], name="custom", domain="com.example")
    flatten.input[0] = "custom_out"
    index = list(m.graph.node).index(flatten)
    m.graph.node.insert(index, custom)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return m


def custom_op(folder: Path) -> Path:
    return save(_custom_op_model(), folder / "custom_op.onnx")


def custom_op_side_branch(folder: Path, feature_map: bool = False) -> Path:
    """A custom op on a side branch, its result a second graph output.

    Default: GlobalAveragePool -> Flatten -> Swish2, an `aux` output [1, C] (its size does not
    depend on the input's). `feature_map=True`: Swish2 straight on the feature map, `aux` [1, C, H, W].
    """
    m = small_model()
    flatten = next(n for n in m.graph.node if n.op_type == "Flatten")
    feature = flatten.input[0]
    if feature_map:
        nodes = [helper.make_node("Swish2", [feature], ["aux"], name="custom", domain="com.example")]
        shape = [1, 4, 3, 3]
    else:
        nodes = [
            helper.make_node("GlobalAveragePool", [feature], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["gap_flat"], name="gap_flatten", axis=1),
            helper.make_node("Swish2", ["gap_flat"], ["aux"], name="custom", domain="com.example"),
        ]
        shape = [1, 4]
    m.graph.node.extend(nodes)
    m.graph.output.append(helper.make_tensor_value_info("aux", onnx.TensorProto.FLOAT, shape))
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return save(m, folder / "custom_side.onnx")


def _external(folder: Path, location: str, name: str = "ext.onnx") -> Path:
    """A model whose weight tensors are external, repointed at `location` (the offsets are kept)."""
    p = folder / name
    if not p.exists():
        save_external(small_model(), p)
        (folder / (name + ".data")).unlink()
    m = onnx.load(str(p), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    return save(m, p)


def missing_external_file(folder: Path) -> Path:
    p = save_external(small_model(), folder / "ext.onnx")
    (folder / "ext.onnx.data").unlink()
    return p


def external_too_short(folder: Path) -> Path:
    p = save_external(small_model(), folder / "ext.onnx")
    data = folder / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    return p


def external_bad_offset(folder: Path) -> Path:
    p = save_external(small_model(), folder / "ext.onnx")
    m = onnx.load(str(p), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = "zero"
    return save(m, p)


def external_parent(folder: Path) -> Path:
    """`inner/ext.onnx` names `../x.bin`, a real data file one folder up (onnx refuses to write it)."""
    save_external(small_model(), folder / "ext.onnx", location="x.bin")
    inner = folder / "inner"
    inner.mkdir()
    (folder / "ext.onnx").rename(inner / "ext.onnx")
    return _external(inner, "../x.bin")


def external_absolute(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    target = outside / "x.bin"
    save_external(small_model(), outside / "donor.onnx", location="x.bin")
    return _external(folder, str(target.resolve()))


def external_symlink(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    save_external(small_model(), outside / "donor.onnx", location="x.bin")
    model_dir = folder / "model"
    model_dir.mkdir()
    os.symlink(outside / "x.bin", model_dir / "x.bin")
    return _external(model_dir, "x.bin")


def external_symlinked_folder(folder: Path) -> Path:
    """The data file sits in a sub-folder that is a symlink to a folder outside."""
    outside = folder / "outside"
    outside.mkdir()
    save_external(small_model(), outside / "donor.onnx", location="x.bin")
    model_dir = folder / "model"
    model_dir.mkdir()
    os.symlink(outside, model_dir / "weights")
    return _external(model_dir, "weights/x.bin")


def external_is_folder(folder: Path) -> Path:
    (folder / "weights").mkdir()
    return _external(folder, "weights")


def directory_input(folder: Path) -> Path:
    d = folder / "a_folder.onnx"
    d.mkdir()
    return d


def nonexistent(folder: Path) -> Path:
    return folder / "does_not_exist.onnx"


def unreadable(folder: Path) -> Path:
    p = _valid(folder, "locked.onnx")
    p.chmod(0)
    return p


CASES: dict[str, Case] = {
    "zero-byte file": Case(zero_bytes, 2, ("empty.onnx", "empty file")),
    "truncated model": Case(truncated, 2, ("truncated.onnx", "not a readable ONNX model")),
    "random bytes": Case(random_bytes, 2, ("random.onnx", "not a readable ONNX model")),
    "text file": Case(text_file, 2, ("notes.onnx", "not")),
    "serialized TensorProto": Case(tensor_proto, 2, ("tensor.onnx", "not a readable ONNX model")),
    "serialized GraphProto": Case(graph_proto, 2, ("graph.onnx", "not an ONNX model")),
    "empty graph": Case(empty_graph, 2, ("empty_graph.onnx", "graph is empty")),
    "no graph": Case(no_graph, 2, ("no_graph.onnx", "not an ONNX model (no graph)")),
    "missing ir_version": Case(missing_ir_version, 2, ("no_ir.onnx", "no ir_version")),
    "raw_data size != dims": Case(raw_data_short, 2, ("'W_", "bytes", "dims [5, 36]")),
    "float_data count != dims": Case(float_data_short, 2, ("'W_", "179 values", "dims [5, 36]")),
    "tensor without data": Case(tensor_without_data, 2, ("'W_", "has no data", "dims [5, 36]")),
    "opset 99": Case(opset_99, 2, ("opset99.onnx", "opset 99")),
    "custom-domain op before the head": Case(
        custom_op,
        2,
        ("onnxruntime cannot load", "Swish2"),
        inspect_code=0,
        no_verify_code=3,
        no_verify_message=("the shape of its input 'custom_out' is unknown",),
    ),
    "custom-domain op on a side branch": Case(
        custom_op_side_branch, 2, ("onnxruntime cannot load", "Swish2"), inspect_code=0
    ),  # --no-verify: test_custom_op_side_output_no_verify
    "missing external data file": Case(missing_external_file, 2, ("ext.onnx.data", "is missing", "tensor '")),
    "external data shorter than declared": Case(
        external_too_short,
        2,
        ("'conv_w_1'", "'ext.onnx.data' is shorter (100 bytes) than declared (offset 0, length 192)"),
    ),
    "external data with a bad offset": Case(external_bad_offset, 2, ("offset", "'zero'", "tensor '")),
    "external data ../x.bin": Case(external_parent, 2, ("'../x.bin'", "leaves the model's folder")),
    "external data absolute path": Case(external_absolute, 2, ("x.bin", "leaves the model's folder")),
    "external data symlink to outside": Case(external_symlink, 2, ("'x.bin'", "leaves the model's folder")),
    "external data under a symlinked folder": Case(
        external_symlinked_folder, 2, ("'weights/x.bin'", "leaves the model's folder")
    ),
    "external data location is a folder": Case(external_is_folder, 2, ("'weights'", "not a file")),
    "directory as input": Case(directory_input, 2, ("a_folder.onnx", "is a directory")),
    "nonexistent input": Case(nonexistent, 2, ("does_not_exist.onnx", "no such file")),
}
if hasattr(os, "geteuid") and os.geteuid() != 0:  # root reads files whatever their mode
    CASES["unreadable file"] = Case(unreadable, 2, ("locked.onnx", "permission denied"))


@pytest.fixture
def case_dirs(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    return src, out


@pytest.mark.parametrize("name", list(CASES))
def test_convert_refuses(name: str, case_dirs: tuple[Path, Path]) -> None:
    src, out = case_dirs
    case = CASES[name]
    model = case.make(src)
    before = snapshot(src)
    result = run_cli("convert", str(model), str(out / "converted.onnx"))
    assert_one_line_error(result, case.code, *case.message)
    assert result.stdout == ""
    assert list(out.iterdir()) == [], "nothing may be written on failure"
    assert snapshot(src) == before, "the input folder must not change"


@pytest.mark.parametrize("name", [n for n in CASES if n != "custom-domain op on a side branch"])
def test_convert_no_verify(name: str, case_dirs: tuple[Path, Path]) -> None:
    src, out = case_dirs
    case = CASES[name]
    model = case.make(src)
    before = snapshot(src)
    target = out / "converted.onnx"
    result = run_cli("convert", "--no-verify", str(model), str(target))
    code = case.code if case.no_verify_code is None else case.no_verify_code
    if code == 0:
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert target.is_file() and leftovers(out) == []
    else:
        message = case.message if case.no_verify_message is None else case.no_verify_message
        assert_one_line_error(result, code, *message)
        assert list(out.iterdir()) == []
    assert snapshot(src) == before


@pytest.mark.parametrize("name", list(CASES))
def test_inspect(name: str, case_dirs: tuple[Path, Path]) -> None:
    src, _ = case_dirs
    case = CASES[name]
    model = case.make(src)
    before = snapshot(src)
    result = run_cli("inspect", str(model))
    code = case.code if case.inspect_code is None else case.inspect_code
    if code == 0:
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert_one_line_error(result, code, *[m for m in case.message if "onnxruntime" not in m])
    assert snapshot(src) == before


@pytest.mark.parametrize(
    "name", ["truncated model", "opset 99", "custom-domain op before the head", "external data ../x.bin"]
)
def test_real_process_prints_one_line(name: str, case_dirs: tuple[Path, Path]) -> None:
    """The real console: no traceback, no onnxruntime log line, just the error line."""
    src, out = case_dirs
    case = CASES[name]
    model = case.make(src)
    proc = subprocess.run(
        [sys.executable, "-m", "onnx_fc2conv", "convert", str(model), str(out / "c.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == case.code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fc2conv: error: "), proc.stderr
    assert proc.stdout == ""
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("feature_map", [False, True], ids=["pooled", "feature map"])
def test_custom_op_side_output_no_verify(case_dirs: tuple[Path, Path], feature_map: bool) -> None:
    """The rewrite does not need the custom op: `--no-verify` converts, the op is kept as it is."""
    src, out = case_dirs
    model = custom_op_side_branch(src, feature_map=feature_map)
    result = run_cli("convert", "--no-verify", str(model), str(out / "c.onnx"))
    assert result.code == 0, result.stderr
    converted = onnx.load(str(out / "c.onnx"))
    assert [n.op_type for n in converted.graph.node if n.domain == "com.example"] == ["Swish2"]
    # the custom op's output keeps its rank; its dims, which may now depend on the size, are unknown
    side = next(o for o in converted.graph.output if o.name != converted.graph.output[0].name)
    assert all(not d.HasField("dim_value") for d in side.type.tensor_type.shape.dim)


# --------------------------------------------------------------------------- output paths


def test_output_folder_missing(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    result = run_cli("convert", str(model), str(tmp_path / "nowhere" / "c.onnx"))
    assert_one_line_error(result, 2, "nowhere", "output folder does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_output_is_a_directory(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    (tmp_path / "out.onnx").mkdir()
    result = run_cli("convert", str(model), str(tmp_path / "out.onnx"))
    assert_one_line_error(result, 2, "out.onnx", "is a directory")
    assert list((tmp_path / "out.onnx").iterdir()) == []


def test_output_equal_to_input(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli("convert", str(model), str(model))
    assert_one_line_error(result, 2, "model.onnx", "the output is the input", "--in-place")
    assert snapshot(tmp_path) == before


def test_output_equal_to_input_spelled_differently(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    result = run_cli("convert", str(model), str(tmp_path / "sub" / ".." / "model.onnx"))
    assert_one_line_error(result, 2, "the output is the input")
    assert snapshot(tmp_path) == before


def test_output_symlink_to_input(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    before = snapshot(tmp_path)
    result = run_cli("convert", str(model), str(link))
    assert_one_line_error(result, 2, "link.onnx", "the output is the input")
    assert snapshot(tmp_path) == before
    result = run_cli("convert", str(link), str(model))
    assert_one_line_error(result, 2, "the output is the input")
    assert snapshot(tmp_path) == before


def test_output_hardlink_to_input(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    os.link(model, tmp_path / "hard.onnx")
    before = snapshot(tmp_path)
    result = run_cli("convert", str(model), str(tmp_path / "hard.onnx"))
    assert_one_line_error(result, 2, "the output is the input")
    assert snapshot(tmp_path) == before


def test_output_data_file_is_the_inputs(tmp_path: Path) -> None:
    """`b.onnx` with external data goes to `b.onnx.data`: refuse when that is the input's data file."""
    src = save_external(small_model(), tmp_path / "a.onnx", location="b.onnx.data")
    before = snapshot(tmp_path)
    result = run_cli("convert", "--external-data-mb", "0", str(src), str(tmp_path / "b.onnx"))
    assert_one_line_error(result, 2, "b.onnx.data", "input's external data")
    assert snapshot(tmp_path) == before


def test_in_place_through_symlink_replaces_the_target(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    result = run_cli("convert", "--in-place", str(model), str(link))
    assert result.code == 0, result.stderr
    assert link.is_symlink(), "the link must stay a link"
    converted = onnx.load(str(model))
    assert any(n.op_type == "Conv" for n in converted.graph.node[-2:])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--size", "0x3"], "'0x3' is not a size"),
        (["--size", "ax3"], "'ax3' is not a size"),
        (["--external-data-mb", "-1"], "-1"),
        (["--atol", "abc"], "abc"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], fragment: str) -> None:
    model = _valid(tmp_path)
    (tmp_path / "out").mkdir()
    result = run_cli("convert", *args, str(model), str(tmp_path / "out" / "c.onnx"))
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_verify_bad_input(tmp_path: Path) -> None:
    good = _valid(tmp_path)
    bad = truncated(tmp_path)
    assert_one_line_error(run_cli("verify", str(good), str(bad)), 2, "truncated.onnx")
    assert_one_line_error(run_cli("verify", str(bad), str(good)), 2, "truncated.onnx")
    assert_one_line_error(run_cli("verify", str(good), str(tmp_path / "nope.onnx")), 2, "no such file")


def test_not_convertible_exit_3(tmp_path: Path) -> None:
    """A Gemm with transA=1 is an FC layer that is not a flatten head: exit 3, the reason, nothing written."""
    m = small_model()
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    flatten_out = gemm.input[0]
    tr = helper.make_node("Transpose", [flatten_out], ["t_out"], name="tr", perm=[1, 0])
    gemm.input[0] = "t_out"
    gemm.attribute.append(helper.make_attribute("transA", 1))
    m.graph.node.insert(list(m.graph.node).index(gemm), tr)
    model = save(m, tmp_path / "transa.onnx")
    (tmp_path / "out").mkdir()
    result = run_cli("convert", str(model), str(tmp_path / "out" / "c.onnx"))
    assert result.code == 3, result.stderr
    assert result.stderr.startswith("onnx-fc2conv: error: ")
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------- unforeseen failures


def test_os_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx_fc2conv.api as api

    def boom(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.onnx"))

    monkeypatch.setattr(api, "convert_file", boom)
    result = run_cli("convert", str(_valid(tmp_path)), str(tmp_path / "x.onnx"))
    assert_one_line_error(result, 2, "x.onnx: Permission denied")


def test_unforeseen_exception_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug still gives one line (naming the exception) and exit 2; --debug shows the traceback."""
    import onnx_fc2conv.api as api

    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("something unforeseen\nsecond line")

    monkeypatch.setattr(api, "convert_file", boom)
    model = _valid(tmp_path)
    result = run_cli("convert", str(model), str(tmp_path / "x.onnx"))
    assert result.code == 2
    assert result.stderr == "onnx-fc2conv: error: ValueError: something unforeseen second line (rerun with --debug)\n"
    debug = run_cli("convert", "--debug", str(model), str(tmp_path / "x.onnx"))
    assert isinstance(debug.exception, ValueError)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_output_folder_not_writable(tmp_path: Path) -> None:
    model = _valid(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line_error(run_cli("convert", str(model), str(locked / "c.onnx")), 2, "not writable")
    finally:
        locked.chmod(0o700)
