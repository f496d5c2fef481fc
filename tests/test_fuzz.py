"""Fuzz: mutants of the golden models through `convert`, `convert --no-verify` and `inspect` (also with `--json`).

For every mutant: an exit code in {0, 1, 2, 3}; on failure one `onnx-fc2conv: error:` line (exit 1
and 3 may add their documented detail lines), never the catch-all "(rerun with --debug)" meant for
bugs, no traceback, nothing left in the output folder, the input folder unchanged; on success the
output written whole and nothing on stderr; with `--json` one valid document with the exit code.

A fixed seed and 240 cases by default (a few seconds); more by hand:
`FUZZ_CASES=3000 FUZZ_SEED=7 pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
from click.testing import CliRunner
from corpus import leftovers, save_external, small_model, snapshot
from json_contract import parse
from mutants import MUTATORS, make_mutant

from onnx_fc2conv.cli import main

CASES = int(os.environ.get("FUZZ_CASES", "240"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))
COMMANDS = (
    ("convert",),
    ("convert", "--no-verify", "--json"),
    ("inspect",),
    ("convert", "--json"),
    ("inspect", "--json"),
)
GOLDEN_VGG = Path(__file__).resolve().parent.parent / "models" / "ts_vgg_small.onnx"
DETAIL_PREFIXES = {1: ("  ", "verification"), 3: ("  - ",)}  # lines that may follow the error line


def _problems(code: int, stdout: str, stderr: str, command: tuple[str, ...], out: Path) -> list[str]:
    problems = []
    if code not in (0, 1, 2, 3):
        problems.append(f"exit {code}")
    lines = stderr.splitlines()
    if "rerun with --debug" in stderr:
        problems.append("the catch-all answered")
    if "Traceback" in stderr + stdout:
        problems.append("a traceback")
    if code == 0:
        if stderr:
            problems.append("stderr on success")
        if command[0] == "convert" and sorted(p.name for p in out.iterdir()) not in (
            ["c.onnx"],
            ["c.onnx", "c.onnx.data"],
        ):
            problems.append(f"output folder holds {sorted(p.name for p in out.iterdir())}")
    elif code in (1, 2, 3):
        if not lines or not lines[0].startswith("onnx-fc2conv: error: "):
            problems.append("no error line first")
        extra = lines[1:]
        allowed = DETAIL_PREFIXES.get(code, ())
        if any(not line.startswith(allowed) for line in extra) if allowed else extra:
            problems.append(f"{len(lines)} stderr lines")
        if stdout and "--json" not in command:
            problems.append("stdout on failure")
        if list(out.iterdir()):
            problems.append(f"left {sorted(p.name for p in out.iterdir())}")
    return problems


def test_fuzz_mutants(tmp_path: Path) -> None:
    assert len(MUTATORS) <= CASES
    failures = []
    for index in range(CASES):
        case = tmp_path / f"case{index}"
        mutant = make_mutant(index, SEED, case / "src")
        out = case / "out"
        out.mkdir()
        before = snapshot(mutant.path.parent)
        command = COMMANDS[(index // len(MUTATORS)) % len(COMMANDS)]
        args = [*command, str(mutant.path)] + ([str(out / "c.onnx")] if command[0] == "convert" else [])
        result = CliRunner().invoke(main, args)
        problems = _problems(result.exit_code, result.stdout, result.stderr, command, out)
        if snapshot(mutant.path.parent) != before:
            problems.append("the input changed")
        if leftovers(out):
            problems.append("a temporary file was left")
        if "--json" in command:
            try:
                doc = parse(result.stdout)
                if doc["exit_code"] != result.exit_code:
                    problems.append(f"JSON exit_code {doc['exit_code']}")
            except (ValueError, AssertionError) as exc:
                problems.append(f"not one valid JSON document: {str(exc)[:200]}")
        if problems:
            failures.append(f"{mutant.description} | {' '.join(command)} -> {problems}: {result.stderr[:300]!r}")
    assert not failures, f"{len(failures)} of {CASES} cases (seed {SEED}):\n" + "\n".join(failures)


def test_onnx_warnings_do_not_reach_stderr(tmp_path: Path) -> None:
    """onnx warns about an unknown external data key; the real console stays clean (it is logged with --debug)."""
    src = save_external(small_model(), tmp_path / "m.onnx")
    model = onnx.load(str(src), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "origin", "elsewhere"
    src.write_bytes(model.SerializeToString())
    proc = subprocess.run(
        [sys.executable, "-m", "onnx_fc2conv", "convert", str(src), str(tmp_path / "c.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_named_channel_dim(tmp_path: Path) -> None:
    model = onnx.load(str(GOLDEN_VGG))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "c.onnx")])
    assert "rerun with --debug" not in result.stderr, result.stderr
