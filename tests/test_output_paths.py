"""Outputs that are not regular files: devices, FIFOs, sockets and symlink loops are refused, never replaced.

Root can create a character device with mknod (the usual case in containers, where `/dev/null` as an
output used to be replaced by a file); elsewhere a FIFO stands in for it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from corpus import save, save_external, small_model, snapshot

from onnx_fc2conv import ConvertOptions, UsageError, convert_file
from onnx_fc2conv.cli import main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _char_device(path: Path) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the same device as /dev/null
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path


def _loop(path: Path) -> Path:
    other = path.with_name(path.name + ".other")
    path.symlink_to(other)
    other.symlink_to(path)
    return path


def _link_to_fifo(path: Path) -> Path:
    target = _fifo(path.with_name("target.fifo"))
    path.symlink_to(target)
    return path


SPECIALS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "FIFO": (_fifo, "the output is a FIFO, not a regular file; it is never replaced"),
    "socket": (_socket, "the output is a socket, not a regular file; it is never replaced"),
    "symlink loop": (_loop, "the output path is a loop of symbolic links; nothing written"),
    "symlink to a FIFO": (_link_to_fifo, "the output is a FIFO, not a regular file; it is never replaced"),
}
if IS_ROOT:
    SPECIALS["character device"] = (
        _char_device,
        "the output is a character device, not a regular file; it is never replaced",
    )


def _kind(path: Path) -> str:
    try:
        return stat.filemode(os.lstat(path).st_mode)[0]
    except FileNotFoundError:
        return "missing"


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("name", list(SPECIALS))
def test_special_output_refused(name: str, verify: bool, tmp_path: Path) -> None:
    src = save(small_model(), tmp_path / "m.onnx")
    make, message = SPECIALS[name]
    out = make(tmp_path / "out.onnx")
    before = {p.name: _kind(p) for p in tmp_path.iterdir()}
    res = run("convert", src, out, *([] if verify else ["--no-verify"]))
    assert res.exit_code == 2, res.output
    assert res.stderr == f"onnx-fc2conv: error: {out}: {message}\n"
    assert {p.name: _kind(p) for p in tmp_path.iterdir()} == before, "the special file must stay what it was"


@pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")
def test_dev_null_clone_as_output_api(tmp_path: Path) -> None:
    src = save(small_model(), tmp_path / "m.onnx")
    device = _char_device(tmp_path / "null")
    with pytest.raises(UsageError, match="character device"):
        convert_file(src, device, ConvertOptions(verify=False))
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_special_data_file_refused(tmp_path: Path) -> None:
    """`OUTPUT.data` exists as a FIFO: the external-data write is refused, the FIFO stays."""
    src = save_external(small_model(), tmp_path / "src.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _fifo(out_dir / "c.onnx.data")
    res = run("convert", "--external-data-mb", "0", src, out_dir / "c.onnx")
    assert res.exit_code == 2
    assert res.stderr == (
        f"onnx-fc2conv: error: {out_dir / 'c.onnx.data'}: the output's data file is a FIFO, "
        "not a regular file; it is never replaced\n"
    )
    assert stat.S_ISFIFO(os.lstat(out_dir / "c.onnx.data").st_mode)
    assert sorted(p.name for p in out_dir.iterdir()) == ["c.onnx.data"]


def test_fifo_as_input_refused(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "in.onnx")
    res = run("inspect", fifo)
    assert res.exit_code == 2
    assert res.stderr == f"onnx-fc2conv: error: {fifo}: not a regular file\n"


def test_symlink_loop_as_input(tmp_path: Path) -> None:
    loop = _loop(tmp_path / "in.onnx")
    before = snapshot(tmp_path)
    res = run("convert", loop, tmp_path / "out.onnx")
    assert res.exit_code == 2
    assert res.stderr.startswith(f"onnx-fc2conv: error: {loop}: ")
    assert "rerun with --debug" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert snapshot(tmp_path) == before
