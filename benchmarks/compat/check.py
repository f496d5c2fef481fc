"""The independent check: the converted model in onnxruntime against the framework's own outputs.

Run in the tool's venv: `python check.py CASE_DIR` prints one JSON object. Phases:
  export:  the exported (original) model at batch 1 against the framework: is the export itself faithful;
  batch 2: the converted model at the exported size, batch 2, against the framework's forward pass;
  larger:  the converted model at the larger non-square size, batch 2, against the framework's forward
           pass there (global-pool heads) or its head on every window of its backbone's map (flattened
           heads); where the framework cannot run there, only that the model runs and its shapes.
Each comparison passes when max|a - b| <= ATOL + RTOL * max|b|, b the framework's array, after a
reshape that only drops or adds unit dims ([N, M, 1, 1] against [N, M]).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

RTOL, ATOL = 1e-3, 1e-5


def compare(actual: np.ndarray, expected: np.ndarray) -> dict:
    out = {"shape": list(actual.shape), "expected_shape": list(expected.shape)}
    squeezed = [d for d in actual.shape if d != 1] == [d for d in expected.shape if d != 1]
    if not squeezed or actual.size == 0:
        return {**out, "passed": False, "error": f"shape {list(actual.shape)} != expected {list(expected.shape)}"}
    actual = actual.reshape(expected.shape).astype(np.float64)
    expected = expected.astype(np.float64)
    if not np.isfinite(actual).all():
        return {**out, "passed": False, "error": "non-finite output"}
    err = float(np.abs(actual - expected).max())
    allowed = ATOL + RTOL * float(np.abs(expected).max())
    # how much the reference varies over images and cells: a check is only as strong as this
    others = tuple(a for a in range(expected.ndim) if a != 1)
    samples = int(np.prod([expected.shape[a] for a in others]))
    spread = float(np.abs(expected - expected.mean(axis=others, keepdims=True)).max())
    weak = spread < 10 * allowed if samples > 1 else None  # barely depends on the image: proves little
    return {
        **out,
        "passed": err <= allowed,
        "max_abs": err,
        "of_allowed": err / allowed,
        "spread": spread,
        "weak": weak,
    }


def run_phase(session: ort.InferenceSession, x: np.ndarray, refs: list[np.ndarray | None]) -> dict:
    try:
        got = session.run(None, {session.get_inputs()[0].name: x})
    except Exception as exc:
        return {"passed": False, "error": f"onnxruntime: {' '.join(str(exc).split())[:300]}"}
    results = []
    for k, y in enumerate(got):
        ref = refs[k] if k < len(refs) else None
        results.append(
            compare(y, ref) if ref is not None else {"shape": list(y.shape), "passed": True, "unchecked": True}
        )
    failed = [r for r in results if not r["passed"]]
    if not failed:
        return {"passed": True, "outputs": results}
    first = failed[0]
    error = first.get("error") or f"max abs {first['max_abs']:.3g} is {first['of_allowed']:.3g}x the allowed"
    return {"passed": False, "outputs": results, "error": error}


def refs(data, prefix: str) -> list[np.ndarray]:
    return [data[f"{prefix}_{k}"] for k in range(16) if f"{prefix}_{k}" in data]


def main(case: Path) -> dict:
    data = np.load(case / "reference.npz")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    result: dict = {}
    original = ort.InferenceSession(str(case / "model.onnx"), options, providers=["CPUExecutionProvider"])
    result["export"] = run_phase(original, data["x_one"], refs(data, "y_one"))
    del original
    converted = ort.InferenceSession(str(case / "converted.onnx"), options, providers=["CPUExecutionProvider"])
    result["batch2"] = run_phase(converted, data["x_small"], refs(data, "y_small"))
    large = refs(data, "y_large")
    result["larger"] = run_phase(converted, data["x_large"], large)
    result["larger"]["size"] = list(data["x_large"].shape)
    if not large:
        result["larger"]["note"] = f"no framework reference: {data['large_error']}"
    result["passed"] = result["batch2"]["passed"] and result["larger"]["passed"]
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
