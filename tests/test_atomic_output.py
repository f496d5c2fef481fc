"""The input is never touched, the output appears whole or not at all, no temporary file is left.

`save_model` writes into a temporary folder inside the output folder, moves the data file into
place first and the model last (`os.replace`). Failures are simulated at every step: in the
conversion (not convertible), in the verification (a perturbed weight), in `onnx.save_model`
(disk full after a partial write), in the checker, in the final move of the model (the previous
data file must come back) and by an interrupt.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from corpus import FcSpec, ModelSpec, build, leftovers, save, save_external, small_model, snapshot
from onnx import numpy_helper

import onnx_fc2conv.api as api
from onnx_fc2conv import ConvertOptions, UsageError, VerificationError, convert_file, verify
from onnx_fc2conv.cli import main


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def cli(*args: str) -> Result:
    return _runner().invoke(main, list(args), catch_exceptions=True)


@pytest.fixture(params=["inline", "external"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A model in `src/`, its weights inline or in `src/model.onnx.data`."""
    src = tmp_path / "src"
    src.mkdir()
    model = small_model()
    path = src / "model.onnx"
    if request.param == "inline":
        save(model, path)
    else:
        save_external(model, path)
    yield path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def _no_output(out_dir: Path) -> None:
    assert list(out_dir.iterdir()) == [], sorted(p.name for p in out_dir.iterdir())


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("external_mb", ["1024", "0"])
def test_success_leaves_input_untouched(source: Path, out_dir: Path, external_mb: str) -> None:
    before = snapshot(source.parent)
    out = out_dir / "c.onnx"
    result = cli("convert", "--external-data-mb", external_mb, str(source), str(out))
    assert result.exit_code == 0, result.stderr
    assert snapshot(source.parent) == before
    assert leftovers(out_dir) == []
    expected = {"c.onnx", "c.onnx.data"} if external_mb == "0" else {"c.onnx"}
    assert {p.name for p in out_dir.iterdir()} == expected
    assert verify(str(source), str(out)).passed


def test_output_into_the_input_folder(source: Path) -> None:
    """Output beside the input (the input's data file is read, a new data file is written)."""
    before = snapshot(source.parent)
    out = source.parent / "c.onnx"
    result = cli("convert", "--external-data-mb", "0", str(source), str(out))
    assert result.exit_code == 0, result.stderr
    after = snapshot(source.parent)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"c.onnx", "c.onnx.data"}
    assert verify(str(source), str(out)).passed


# --------------------------------------------------------------------------- refusals


def test_output_equal_to_input_refused(source: Path) -> None:
    before = snapshot(source.parent)
    with pytest.raises(UsageError, match="the output is the input"):
        convert_file(source, source)
    result = cli("convert", str(source), str(source))
    assert result.exit_code == 2
    assert "--in-place" in result.stderr
    assert snapshot(source.parent) == before


def test_in_place(source: Path, tmp_path: Path) -> None:
    original = tmp_path / "original.onnx"
    save(onnx.load(str(source)), original)
    result = cli("convert", "--in-place", str(source), str(source))
    assert result.exit_code == 0, result.stderr
    assert leftovers(source.parent) == []
    converted = onnx.load(str(source))
    assert not any(n.op_type in ("Gemm", "Flatten") for n in converted.graph.node)
    assert verify(str(original), str(source)).passed


def test_in_place_external_data_replaced(tmp_path: Path) -> None:
    """In place with weights in `model.onnx.data`: the new data file replaces the old one."""
    src = tmp_path / "src"
    src.mkdir()
    path = save_external(small_model(), src / "model.onnx")
    original = save(small_model(), tmp_path / "original.onnx")
    result = cli("convert", "--in-place", "--external-data-mb", "0", str(path), str(path))
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in src.iterdir()} == {"model.onnx", "model.onnx.data"}
    assert verify(str(original), str(path)).passed


def test_in_place_failure_keeps_the_input(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(source.parent)
    _perturb_during_verification(monkeypatch)
    result = cli("convert", "--in-place", "--external-data-mb", "0", str(source), str(source))
    assert result.exit_code == 1
    assert snapshot(source.parent) == before


# --------------------------------------------------------------------------- failures


def _perturb_during_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification sees a converted model with one kernel value changed: it must fail."""
    real = api._verify_models

    def perturbed(original, converted, heads, options):  # type: ignore[no-untyped-def]
        bad = onnx.ModelProto()
        bad.CopyFrom(converted)
        _bump_conv_weight(bad)
        return real(original, bad, heads, options)

    monkeypatch.setattr(api, "_verify_models", perturbed)


def _bump_conv_weight(model: onnx.ModelProto) -> str:
    """Add 1 to one element of the last Conv's kernel; returns the kernel's name."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    init = next(t for t in model.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return init.name


def _disk_full_in_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """`onnx.save_model` writes half a file, then the disk is full."""

    def boom(model, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(model.SerializeToString()[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(onnx, "save_model", boom)


def _runtime_error_in_save(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(model, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"partial")
        raise RuntimeError("simulated serializer failure")

    monkeypatch.setattr(onnx, "save_model", boom)


def _model_move_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data file is moved into place, then moving the model fails."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(dst).endswith(".onnx") and ".tmp" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _checker_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX checker refuses the converted graph (it runs before anything is written); the
    original, which still has its Gemm, passes."""
    real = onnx.checker.check_model

    def boom(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(n.op_type == "Gemm" for n in model.graph.node):
            return real(model, *args, **kwargs)
        raise onnx.checker.ValidationError("simulated checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", boom)


def _no_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """The output folder has 1 KiB free: refused before verification runs."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, (1 << 40) - 1024, 1024))

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("verification ran on an output that has no room")

    monkeypatch.setattr(api, "_verify_models", never)


def _interrupt_in_save(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(model, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save_model", boom)


FAILURES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], int, str]] = {
    "verification fails": (_perturb_during_verification, 1, "verification FAILED"),
    "disk full in save_model": (_disk_full_in_save, 2, "No space left on device"),
    "no room for the output": (_no_room, 2, "MiB needed, 0 MiB free; nothing written"),
    "serializer error in save_model": (_runtime_error_in_save, 2, "simulated serializer failure"),
    "moving the model fails": (_model_move_fails, 2, "Input/output error"),
    "checker fails": (_checker_fails, 1, "fails the ONNX checker"),
    "interrupted while saving": (_interrupt_in_save, 130, "interrupted (SIGINT); nothing written"),
}


@pytest.mark.parametrize("external_mb", ["1024", "0"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_failure_writes_nothing(
    failure: str, external_mb: str, source: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject, code, message = FAILURES[failure]
    before = snapshot(source.parent)
    inject(monkeypatch)
    result = cli("convert", "--external-data-mb", external_mb, str(source), str(out_dir / "c.onnx"))
    assert result.exit_code == code, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("onnx-fc2conv: "), first
    assert message in first, first
    assert "Traceback" not in result.stderr
    monkeypatch.undo()
    _no_output(out_dir)
    assert snapshot(source.parent) == before


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failure_keeps_the_previous_output(
    failure: str, source: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A previous conversion at the output path (model + data file) survives a failed rerun whole."""
    out = out_dir / "c.onnx"
    assert cli("convert", "--external-data-mb", "0", str(source), str(out)).exit_code == 0
    previous = snapshot(out_dir)
    other = save(build(ModelSpec(seed=1, layers=(FcSpec(5),))), tmp_path / "other.onnx")
    inject, code, _ = FAILURES[failure]
    inject(monkeypatch)
    result = cli("convert", "--external-data-mb", "0", str(other), str(out))
    monkeypatch.undo()
    assert result.exit_code == code, result.stderr
    assert snapshot(out_dir) == previous
    assert verify(str(source), str(out)).passed


def test_temp_folder_is_inside_the_output_folder(source: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnx.save_model
    seen: list[Path] = []

    def spy(model, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(onnx, "save_model", spy)
    assert cli("convert", "--external-data-mb", "0", str(source), str(out_dir / "c.onnx")).exit_code == 0
    assert len(seen) == 1
    assert seen[0].parent.parent == out_dir and seen[0].parent.name.endswith(".tmp")
    assert not seen[0].parent.exists()


def test_api_failure_writes_nothing(source: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(source.parent)
    _perturb_during_verification(monkeypatch)
    with pytest.raises(VerificationError):
        convert_file(source, out_dir / "c.onnx")
    _no_output(out_dir)
    assert snapshot(source.parent) == before


# --------------------------------------------------------------------------- stale data files


def test_stale_data_file_is_replaced_not_appended(source: Path, out_dir: Path) -> None:
    out = out_dir / "c.onnx"
    data = out_dir / "c.onnx.data"
    sizes = []
    for _ in range(2):
        result = cli("convert", "--external-data-mb", "0", str(source), str(out))
        assert result.exit_code == 0, result.stderr
        sizes.append(data.stat().st_size)
        assert verify(str(source), str(out)).passed
    assert sizes[0] == sizes[1] > 0
    data.write_bytes(os.urandom(sizes[0] * 3))  # junk from some other run
    written = convert_file(source, out, ConvertOptions(external_threshold=0)).data_file
    assert written == data
    assert data.stat().st_size == sizes[0]
    assert verify(str(source), str(out)).passed
    assert leftovers(out_dir) == []


def test_data_file_holds_the_weights(source: Path, out_dir: Path) -> None:
    out = out_dir / "c.onnx"
    convert_file(source, out, ConvertOptions(external_threshold=0))
    model = onnx.load(str(out), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "the weights must be in the data file"
    locations = {e.value for t in external for e in t.external_data if e.key == "location"}
    assert locations == {"c.onnx.data"}
    loaded = onnx.load(str(out))
    kernel = next(t for t in loaded.graph.initializer if t.dims and len(t.dims) == 4 and t.dims[2] == 3)
    assert np.isfinite(numpy_helper.to_array(kernel)).all()


def test_written_files_are_readable_like_the_model(source: Path, out_dir: Path) -> None:
    """onnx creates data files 0600; the output's data file gets the model file's mode."""
    out = out_dir / "c.onnx"
    convert_file(source, out, ConvertOptions(external_threshold=0))
    model_mode = out.stat().st_mode & 0o777
    assert (out_dir / "c.onnx.data").stat().st_mode & 0o777 == model_mode
    assert model_mode == 0o666 & ~_umask()


def test_replaced_output_keeps_its_mode(source: Path, out_dir: Path) -> None:
    out = out_dir / "c.onnx"
    convert_file(source, out, ConvertOptions(external_threshold=0))
    out.chmod(0o640)
    convert_file(source, out, ConvertOptions(external_threshold=0))
    assert out.stat().st_mode & 0o777 == 0o640
    assert (out_dir / "c.onnx.data").stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
