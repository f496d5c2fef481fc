"""Two runs writing one output: the result is one complete model from one run, never a mix.

The first writer pauses between moving its data file into place and moving its model; the second
starts its renames during that pause. Unlocked, the first run's model would land last, beside the
second run's data file. The two sources differ in structure, so a mix cannot pass for either.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from corpus import FcSpec, ModelSpec, build, leftovers, save

from onnx_fc2conv import verify

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock")

DRIVER = r"""
import os, sys, time
from pathlib import Path
from onnx_fc2conv.cli import main

announce, delay = os.environ.get("ANNOUNCE"), float(os.environ["DELAY"])
real_replace = os.replace

def slow_replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if str(dst).endswith(".data"):  # the data file is in place, the model not yet
        if announce:
            Path(announce).write_text("renamed")
        time.sleep(delay)

os.replace = slow_replace
main(sys.argv[1:], prog_name="onnx-fc2conv")
"""


def _writer(source: Path, out: Path, delay: float, announce: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "DELAY": str(delay)}
    if announce is not None:
        env["ANNOUNCE"] = str(announce)
    args = ["convert", "--no-verify", "--external-data-mb", "0", str(source), str(out)]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_writers_leave_one_whole_model(tmp_path: Path) -> None:
    first = save(build(ModelSpec(layers=(FcSpec(5),))), tmp_path / "first.onnx")
    second = save(build(ModelSpec(seed=1, layers=(FcSpec(9), FcSpec(3)))), tmp_path / "second.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "c.onnx"
    announce = tmp_path / "renamed"
    slow = _writer(first, out, delay=2.0, announce=announce)
    deadline = time.monotonic() + 120
    while not announce.exists():
        assert slow.poll() is None, slow.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    fast = _writer(second, out, delay=0.0)
    for proc in (fast, slow):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["c.onnx", "c.onnx.data"]
    assert leftovers(out_dir) == []
    onnx.checker.check_model(str(out), full_check=True)
    # The second writer waited for the first one's renames, so its model and data file are the last.
    assert verify(str(second), str(out)).passed
