r"""Compatibility sweep: public architectures, every exporter they have, converted and checked
independently against the framework itself. Run by hand (not in CI), from the repository root with
the tool installed in the running interpreter's environment:

    python benchmarks/compat.py                      # export (cached), convert, check, write the doc
    python benchmarks/compat.py --stage convert      # re-convert and re-check the cached exports
    python benchmarks/compat.py --family timm --only dla34 --doc ''   # one case, no doc

Each family exports in its framework's own virtual environment under `--venvs` (default /work/venvs);
a family whose environment or packages are missing is skipped and the doc says so. They were made with

    python3.11 -m venv torch && torch/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        onnxscript timm onnx onnxruntime
    python3.11 -m venv tf && tf/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 \
        "numpy<2" onnx==1.16.2 "protobuf<5"
    python3.11 -m venv paddle && paddle/bin/pip install paddlepaddle==3.3.1 paddle2onnx==2.1.0 onnx onnxruntime

Models get seeded random weights (nothing downloaded) with randomized BatchNorm statistics. Every
export, conversion (`onnx-fc2conv convert --json`) and check runs in a subprocess with a timeout.
The exports and the framework's reference outputs are cached under `--cache` (outside the repository).
The check (benchmarks/compat/check.py) compares the converted model with the framework's own outputs
at the exported size with batch 2, and at a larger non-square size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent / "compat"
sys.path.insert(0, str(HERE))

from catalog import ARCHS, EXPORTERS, SCRIPTS, VENVS, Arch  # noqa: E402
from report import write_doc  # noqa: E402

FAMILY_IMPORTS = {
    "torchvision": "import torch, torchvision, onnxscript",
    "timm": "import torch, timm, onnxscript",
    "keras": "import tensorflow, tf2onnx",
    "paddle": "import paddle, paddle2onnx",
}


@dataclass
class Case:
    arch: Arch
    exporter: str
    result: str = ""  # converted | refused | failed | export failed | skipped
    detail: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.arch.family}/{self.arch.name}/{self.exporter}"


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def last_error_line(stderr: str) -> str:
    """The exporter's own EXPORT-ERROR line, else the last line that looks like an error."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("EXPORT-ERROR:"):
            return one_line(line.removeprefix("EXPORT-ERROR:"))
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return one_line(line)
    return one_line(lines[-1]) if lines else "no message"


def run(cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[int | None, str, str, float]:
    """Run a child in its own process group; on timeout kill the group. Returns (code, out, err, s)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return None, out, err, time.perf_counter() - start


def family_status(venvs: Path, families: set[str]) -> dict[str, str]:
    """'' for a usable family, else why it is skipped."""
    status = {}
    for family in sorted(families):
        python = venvs / VENVS[family] / "bin" / "python"
        if not python.exists():
            status[family] = f"no environment at {python.parent.parent}"
            continue
        code, _, err, _ = run([str(python), "-c", FAMILY_IMPORTS[family]], timeout=300)
        status[family] = "" if code == 0 else f"packages do not import: {last_error_line(err)}"
    return status


def case_dir(cache: Path, case: Case) -> Path:
    return cache / case.arch.family / f"{case.arch.name}.{case.exporter}"


def export(case: Case, cache: Path, venvs: Path, timeout: float, redo: bool) -> bool:
    """Export once (cached); a failure is cached too unless `redo`."""
    out = case_dir(cache, case)
    done, failed = out / "export.json", out / "export_error.txt"
    if done.exists() and not (redo and failed.exists()):
        case.info["export"] = json.loads(done.read_text())
        return True
    if failed.exists() and not redo:
        case.result, case.detail = "export failed", [failed.read_text().strip()]
        return False
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    python = venvs / VENVS[case.arch.family] / "bin" / "python"
    cmd = [str(python), str(HERE / SCRIPTS[case.arch.family]), case.arch.family, case.arch.name, case.exporter]
    code, stdout, stderr, _ = run([*cmd, str(out)], timeout, cwd=out)
    (out / "export.log").write_text(stdout + stderr)
    if code == 0 and done.exists() and (out / "model.onnx").exists():
        case.info["export"] = json.loads(done.read_text())
        return True
    error = f"timeout after {timeout:.0f} s" if code is None else last_error_line(stderr)
    failed.write_text(error + "\n")
    case.result, case.detail = "export failed", [error]
    return False


def convert(case: Case, cache: Path, tool: list[str], timeout: float) -> None:
    """`onnx-fc2conv convert --json`, then the independent check of what it wrote."""
    out = case_dir(cache, case)
    if not export_loads(case, out, timeout):
        return
    target = out / "converted.onnx"
    for stale in (target, out / "converted.onnx.data", out / "check.json", out / "dense.onnx", out / "dense.onnx.data"):
        stale.unlink(missing_ok=True)
    code, stdout, stderr, seconds = run([*tool, "convert", "model.onnx", target.name, "--json", "-q"], timeout, out)
    case.info["convert_seconds"] = round(seconds, 1)
    try:
        payload = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        payload = {}
    (out / "convert.json").write_text(json.dumps({"exit_code": code, "payload": payload, "stderr": stderr}))
    if code is None:
        case.result, case.detail = "failed", [f"conversion timeout after {timeout:.0f} s"]
    elif code == 3:
        case.result = "refused"
        case.detail = [one_line(r, 400) for r in payload.get("reasons") or [payload.get("error", stderr)]]
    elif code != 0:
        case.result = "failed"
        case.detail = [f"exit {code}: " + one_line(payload.get("error") or last_error_line(stderr))]
        if code == 1:  # is the model wrong, or the tool's verification? check the unverified output
            case.detail.append(unverified(case, out, tool, timeout))
    else:
        case.info["converted"] = summarize(payload)
        passed, lines = check(case, out, timeout)
        case.result, case.detail = ("converted" if passed else "failed"), lines
    if case.result in ("refused", "failed") and case.arch.head == "global":
        case.detail.append(original_at_larger_size(case, out, timeout))
    if case.result == "converted" and case.arch.head == "global" and case.info["converted"]["heads"]:
        case.info["dense"] = dense(out, tool, timeout)


def dense(out: Path, tool: list[str], timeout: float) -> dict:
    """`convert --dense` and its check: the class map's spatial mean against the framework's logits."""
    cmd = [*tool, "convert", "model.onnx", "dense.onnx", "--dense", "--json", "-q"]
    code, stdout, stderr, _ = run(cmd, timeout, out)
    try:
        payload = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        payload = {}
    (out / "dense.json").write_text(json.dumps(payload))
    if code != 0:
        reasons = payload.get("reasons") or [payload.get("error") or last_error_line(stderr)]
        return {"exit_code": code, "reasons": [one_line(r, 300) for r in reasons]}
    code, stdout, stderr, _ = run([sys.executable, str(HERE / "check.py"), "--dense", str(out)], timeout, out)
    if code != 0:
        return {"exit_code": 0, "check": {"passed": False, "error": last_error_line(stderr)}}
    return {"exit_code": 0, "check": json.loads(stdout), "notices": payload.get("notices", [])}


def original_at_larger_size(case: Case, out: Path, timeout: float) -> str:
    """Whether the export itself pins the size: its input relaxed, nothing else changed, at the larger size."""
    cmd = [sys.executable, str(HERE / "check.py"), "--relaxed-original", str(out)]
    code, stdout, stderr, _ = run(cmd, timeout, out)
    if code != 0:
        return f"(could not test the export at the larger size: {last_error_line(stderr)})"
    result = json.loads(stdout)
    case.info["relaxed_original"] = result
    size = "x".join(map(str, case.arch.larger))
    if result["passed"]:
        return f"the export itself, input relaxed and nothing else changed, runs at {size} and equals the framework"
    return f"the export itself, input relaxed, at {size}: {result.get('error', '')}"


def export_loads(case: Case, out: Path, timeout: float) -> bool:
    """The export in onnxruntime against the framework (batch 1); one that does not load is an export failure."""
    code, stdout, stderr, _ = run([sys.executable, str(HERE / "check.py"), "--export", str(out)], timeout, out)
    result = json.loads(stdout) if code == 0 else {"loads": False, "error": last_error_line(stderr)}
    case.info["export_check"] = result
    if not result["loads"]:
        case.result, case.detail = "export failed", [f"the export does not load in onnxruntime: {result['error']}"]
    return result["loads"]


def unverified(case: Case, out: Path, tool: list[str], timeout: float) -> str:
    """After the tool's own verification failed: convert with --no-verify and run the independent check."""
    cmd = [*tool, "convert", "model.onnx", "converted.onnx", "--no-verify", "-q"]
    code, _, stderr, _ = run(cmd, timeout, out)
    if code != 0:
        return f"with --no-verify: exit {code}: {last_error_line(stderr)}"
    passed, lines = check(case, out, timeout)
    if passed:
        worst = max(o.get("of_allowed", 0) for p in ("batch2", "larger") for o in case.info["check"][p]["outputs"])
        return f"with --no-verify the independent check passes (max error {worst:.2g} of allowed)"
    return "with --no-verify: " + "; ".join(lines)


def summarize(payload: dict) -> dict:
    return {
        "heads": [h["pattern"] for h in payload.get("heads", [])],
        "fixes": [f"{f['node']} ({f['op']}): {f['change']}" for f in payload.get("backbone_fixes", [])],
        "notices": payload.get("notices", []),
        "outputs": payload.get("outputs", {}),
    }


def check(case: Case, out: Path, timeout: float) -> tuple[bool, list[str]]:
    """The independent check (compat/check.py) on converted.onnx: passed, and a line per failed phase."""
    code, stdout, stderr, _ = run([sys.executable, str(HERE / "check.py"), str(out)], timeout, out)
    if code != 0:
        return False, [f"independent check did not run: {'timeout' if code is None else last_error_line(stderr)}"]
    result = json.loads(stdout)
    (out / "check.json").write_text(json.dumps(result, indent=2))
    case.info["check"] = result
    lines = []
    for phase, label in (("batch2", "batch 2 at the exported size"), ("larger", "batch 2 at the larger size")):
        if not result[phase]["passed"]:
            lines.append(f"independent check FAILED, {label}: {result[phase].get('error', '')}")
    if lines and not result["export"]["passed"]:
        lines.append(f"(the export itself differs from the framework: {result['export'].get('error', '')})")
    return result["passed"], lines


def sweep(args: argparse.Namespace) -> list[Case]:
    archs = [
        a for a in ARCHS if (not args.family or a.family in args.family) and (not args.only or a.name in args.only)
    ]
    cases = [Case(a, e) for a in archs for e in EXPORTERS[a.family]]
    skipped = family_status(args.venvs, {a.family for a in archs}) if args.stage != "convert" else {}
    tool = [str(Path(sys.executable).parent / "onnx-fc2conv")]

    def one(case: Case) -> Case:
        if skipped.get(case.arch.family):
            case.result, case.detail = "skipped", [skipped[case.arch.family]]
            return case
        if args.stage == "convert":
            if not (case_dir(args.cache, case) / "export.json").exists():
                error = case_dir(args.cache, case) / "export_error.txt"
                case.result = "export failed" if error.exists() else "skipped"
                case.detail = [error.read_text().strip() if error.exists() else "not exported yet"]
                return case
            case.info["export"] = json.loads((case_dir(args.cache, case) / "export.json").read_text())
        elif not export(case, args.cache, args.venvs, args.export_timeout, args.redo_export):
            return case
        convert(case, args.cache, tool, args.convert_timeout)
        return case

    with ThreadPoolExecutor(args.jobs) as pool:
        for case in pool.map(one, cases):
            line = f"{case.key:58} {case.result:14} {case.detail[0][:120] if case.detail else ''}"
            print(line, flush=True)
    return cases


def save_results(cases: list[Case], path: Path) -> None:
    """Merge into the cache's results.json (a partial run updates only its cases)."""
    known = json.loads(path.read_text()) if path.exists() else {}
    for c in cases:
        known[c.key] = {"result": c.result, "detail": c.detail, "info": c.info}
    path.write_text(json.dumps(known, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "convert", "doc"), default="all")
    parser.add_argument("--family", action="append", choices=sorted(EXPORTERS), help="repeatable")
    parser.add_argument("--only", action="append", help="architecture name (repeatable)")
    parser.add_argument("--cache", type=Path, default=Path("/work/compat-cache"))
    parser.add_argument("--venvs", type=Path, default=Path("/work/venvs"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--export-timeout", type=float, default=900)
    parser.add_argument("--convert-timeout", type=float, default=900)
    parser.add_argument("--redo-export", action="store_true", help="retry exports that failed before")
    parser.add_argument("--doc", default="docs/compatibility.md", help="'' to write no doc")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    results = args.cache / "results.json"
    if args.stage != "doc":
        start = time.perf_counter()
        save_results(sweep(args), results)
        print(f"sweep took {time.perf_counter() - start:.0f} s", flush=True)
    if args.doc:
        tool_version = subprocess.run(
            [str(Path(sys.executable).parent / "onnx-fc2conv"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        write_doc(json.loads(results.read_text()), Path(args.doc), tool_version)
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
