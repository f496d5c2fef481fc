"""SIGTERM and SIGHUP stop the tool like SIGINT: exit 128 + signal number, nothing written, no temporary
file or folder left, one line on stderr. A real signal goes to a child process paused in the save.

The child runs the CLI with `onnx.save_model` (or the rename that puts the data file in place)
wrapped to announce itself in a file and then sleep: the test waits for the announcement and sends
the signal. During the renames the signal waits until both are done: the output is then complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus import leftovers, save, save_external, small_model, snapshot
from json_contract import parse

from onnx_fc2conv import verify

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

DRIVER = r"""
import os, sys, time
from pathlib import Path
import onnx
from onnx_fc2conv.cli import main

ready, pause = Path(os.environ["READY"]), os.environ["PAUSE"]
real_save, real_replace = onnx.save_model, os.replace

def slow_save(*args, **kwargs):
    real_save(*args, **kwargs)
    ready.write_text("saved")
    time.sleep(60)

def slow_replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if str(dst).endswith(".data"):  # the data file is in place, the model not yet
        ready.write_text("renamed")
        time.sleep(1.5)

if pause == "save":
    onnx.save_model = slow_save
else:
    os.replace = slow_replace
main(sys.argv[1:], prog_name="onnx-fc2conv")
"""


def _run_and_signal(tmp_path: Path, args: list[str], pause: str, signum: int) -> subprocess.CompletedProcess:
    ready = tmp_path / "ready"
    env = {**os.environ, "READY": str(ready), "PAUSE": pause}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never reached the save"
            time.sleep(0.02)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    ready.unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    return src, out


@pytest.mark.parametrize("external", ["1024", "0"], ids=["inline", "external"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_during_save_writes_nothing(
    signum: signal.Signals, external: str, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    src, out = folders
    model = save_external(small_model(), src / "m.onnx")
    before = snapshot(src)
    args = ["convert", "--no-verify", "--external-data-mb", external, str(model), str(out / "c.onnx")]
    proc = _run_and_signal(tmp_path, args, "save", signum)
    assert proc.returncode == 128 + signum, proc.stderr
    assert proc.stderr == f"onnx-fc2conv: interrupted ({signum.name}); nothing written\n"
    assert proc.stdout == ""
    assert list(out.iterdir()) == []
    assert snapshot(src) == before


def test_signal_with_json(folders: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = folders
    model = save(small_model(), src / "m.onnx")
    args = ["convert", "--json", "--no-verify", str(model), str(out / "c.onnx")]
    proc = _run_and_signal(tmp_path, args, "save", signal.SIGTERM)
    assert proc.returncode == 143
    doc = parse(proc.stdout)
    assert doc["status"] == "interrupted" and doc["exit_code"] == 143 and doc["error_type"] == "Interrupted"
    assert doc["error"] == "interrupted (SIGTERM); nothing written"
    assert list(out.iterdir()) == []


def test_signal_keeps_the_previous_output(folders: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = folders
    first = save(small_model(), src / "first.onnx")
    second = save(small_model(seed=1), src / "second.onnx")
    target = out / "c.onnx"
    args = ["--external-data-mb", "0", "--no-verify"]
    done = subprocess.run(
        [sys.executable, "-m", "onnx_fc2conv", "convert", *args, str(first), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    previous = snapshot(out)
    proc = _run_and_signal(tmp_path, ["convert", *args, str(second), str(target)], "save", signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr
    assert snapshot(out) == previous
    assert verify(str(first), str(target)).passed


def test_signal_during_the_renames_waits_for_them(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """Between the data file's rename and the model's, SIGTERM is held: both land, then exit 143."""
    src, out = folders
    model = save(small_model(), src / "m.onnx")
    target = out / "c.onnx"
    args = ["convert", "--no-verify", "--external-data-mb", "0", str(model), str(target)]
    proc = _run_and_signal(tmp_path, args, "rename", signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == f"onnx-fc2conv: interrupted (SIGTERM); {target} was written whole before stopping\n"
    assert sorted(p.name for p in out.iterdir()) == ["c.onnx", "c.onnx.data"]
    assert leftovers(out) == []
    assert verify(str(model), str(target)).passed
