r"""Probe: classifier models as they reach users by routes other than the current exporters,
converted with `onnx-fc2conv convert`. Run by hand from the repository root, with the tool and the
probe's own dependencies (`pip install onnxsim onnxconverter_common`, never the tool's) installed:

    python benchmarks/probe_routes.py                          # goldens, cached exports, Caffe2 heads
    python benchmarks/probe_routes.py --route opset9 --only lenet --jobs 2 --json probe.json

Models: the goldens under models/, a few small real exports from the compatibility sweep's cache
(`--cache`, read only; missing ones are skipped) and Caffe2-style heads at opsets 7-9 built in code
(benchmarks/routes/legacy_heads.py). Routes (benchmarks/routes/derive.py): the model itself, down-
converted to opsets 7-12 by onnx's version converter, onnxsim, onnxruntime's offline optimizer at the
basic and extended levels, float16 with and without `keep_io_types`. Nothing is downloaded.

Each probe is one `convert` in a subprocess. Outcomes: `ok` (exit 0, and an independent same-size
run of the original and the converted model agrees), `WRONG` (exit 0 but it does not), `refused`
(exit 3), `usage` (exit 2), `VERIFY-FAIL` (exit 1), `CRASH` (a traceback, `--debug` hint or other
exit), `TIMEOUT`; `-` when the route does not apply or its tool fails (the reason in --json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent / "routes"))
from derive import ROUTES, Unsuitable
from legacy_heads import all_models

ROOT = Path(__file__).resolve().parent.parent
CACHED = [
    "torchvision/resnet18.torchscript",
    "torchvision/resnet18.dynamo",
    "torchvision/mobilenet_v2.torchscript",
    "torchvision/squeezenet1_0.torchscript",
    "torchvision/alexnet.torchscript",
    "paddle/mobilenet_v1.paddle2onnx",
    "keras/MobileNet.tf2onnx",
]
TOLERANCE = {np.float32: (1e-5, 1e-4), np.float16: (1e-3, 1e-2)}


def sources(cache: Path) -> dict[str, Path | onnx.ModelProto]:
    found: dict[str, Path | onnx.ModelProto] = {f"golden/{p.stem}": p for p in sorted((ROOT / "models").glob("*.onnx"))}
    found |= {f"cache/{c}": cache / c / "model.onnx" for c in CACHED if (cache / c / "model.onnx").exists()}
    return found | all_models()


def feeds(session: ort.InferenceSession, model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    """Random inputs at the declared size (a symbolic dim is 1); weights listed as inputs are left out."""
    weights = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    out = {}
    for arg in session.get_inputs():
        if arg.name in weights:
            continue
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}[arg.type]
        if dtype is np.uint8:
            out[arg.name] = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            out[arg.name] = rng.standard_normal(shape).astype(dtype)
    return out


def independent_check(source: Path, converted: Path) -> str:
    """'' when original and converted agree at the original size, else what differs."""
    original = onnx.load(source, load_external_data=False)
    a = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    x = feeds(a, original, 7)
    want = dict(zip([o.name for o in a.get_outputs()], a.run(None, x), strict=True))
    ranks = {arg.name: len(arg.shape) for arg in b.get_inputs()}  # an MLP's [N, K] became [N, K, 1, 1]
    x = {k: v.reshape(*v.shape, *[1] * (ranks.get(k, v.ndim) - v.ndim)) for k, v in x.items()}
    got = dict(zip([o.name for o in b.get_outputs()], b.run(None, x), strict=True))
    for name, ref in want.items():
        if name not in got:
            return f"output {name} missing"
        out = got[name]
        if out.size != ref.size:
            return f"output {name}: {out.shape} vs {ref.shape}"
        ref32, out32 = ref.astype(np.float64).reshape(-1), out.astype(np.float64).reshape(-1)
        half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in original.graph.initializer)
        atol, rtol = TOLERANCE[np.float16] if half else TOLERANCE.get(ref.dtype.type, (0, 0))
        err = float(np.max(np.abs(ref32 - out32))) if ref.size else 0.0
        if not np.all(np.isfinite(out32)) or err > atol + rtol * float(np.max(np.abs(ref32), initial=0)):
            return f"output {name}: max abs error {err:.3g}"
    return ""


def probe(name: str, source: Path | onnx.ModelProto, route: str, timeout: float) -> dict:
    row = {"model": name, "route": route, "result": "-", "detail": ""}
    with tempfile.TemporaryDirectory(prefix="probe_") as tmp:
        try:
            model = source if isinstance(source, onnx.ModelProto) else onnx.load(source)
            derived = ROUTES[route](model)
            ort.InferenceSession(derived.SerializeToString(), providers=["CPUExecutionProvider"])
        except Unsuitable as why:
            row["detail"] = f"not applicable: {why}"
            return row
        except Exception as error:  # the route's own tool failed, or onnxruntime cannot load its result
            row["detail"] = "route failed: " + " ".join(str(error).split())[:300]
            return row
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(derived, src)
        cmd = [sys.executable, "-m", "onnx_fc2conv", "convert", str(src), str(dst), "-q"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            row.update(result="TIMEOUT", detail=f"after {timeout:.0f} s")
            return row
        row["seconds"] = round(time.perf_counter() - start, 1)
        err = " ".join(proc.stderr.split())
        row["detail"] = err[-400:]
        if "Traceback" in proc.stderr or "--debug" in proc.stderr or proc.returncode not in (0, 1, 2, 3):
            row["result"] = "CRASH"
        elif proc.returncode == 0:
            try:
                mismatch = independent_check(src, dst)
            except Exception as error:  # a converted model that does not run is wrong too
                mismatch = "does not run: " + " ".join(str(error).split())[:300]
            row.update(result="WRONG" if mismatch else "ok", detail=mismatch)
        else:
            row["result"] = {1: "VERIFY-FAIL", 2: "usage", 3: "refused"}[proc.returncode]
    return row


def table(rows: list[dict]) -> str:
    routes = [r for r in ROUTES if any(row["route"] == r for row in rows)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    cell = {(row["model"], row["route"]): row["result"] for row in rows}
    width = max(len(m) for m in models)
    lines = [f"{'model':<{width}}  " + " ".join(f"{r:>12}" for r in routes)]
    lines += [f"{m:<{width}}  " + " ".join(f"{cell.get((m, r), ''):>12}" for r in routes) for m in models]
    lines.append("")
    for r in routes:
        counts = Counter(row["result"] for row in rows if row["route"] == r)
        lines.append(f"{r:>12}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/work/compat-cache"))
    parser.add_argument("--route", action="append", choices=list(ROUTES), help="routes to run (default: all)")
    parser.add_argument("--only", action="append", help="models whose name contains this (repeatable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, help="write every row, with its stderr, here")
    args = parser.parse_args()
    chosen = {k: v for k, v in sources(args.cache).items() if not args.only or any(o in k for o in args.only)}
    jobs = [(m, s, r) for m, s in chosen.items() for r in args.route or ROUTES]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: probe(*job, args.timeout), jobs))
    print(table(rows))
    for row in rows:
        if row["result"] not in ("ok", "-", "refused"):
            print(f"{row['result']:>11} {row['model']} {row['route']}: {row['detail'][-300:]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
