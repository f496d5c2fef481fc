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
    """Run at `x` and compare with `refs`; a model whose batch is fixed at 1 runs image by image."""
    name = session.get_inputs()[0].name
    per_image = session.get_inputs()[0].shape[0] == 1 and x.shape[0] > 1
    try:
        if per_image:
            runs = [session.run(None, {name: x[i : i + 1]}) for i in range(x.shape[0])]
            got = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        else:
            got = session.run(None, {name: x})
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
        return {"passed": True, "outputs": results, "per_image": per_image}
    first = failed[0]
    error = first.get("error") or f"max abs {first['max_abs']:.3g} is {first['of_allowed']:.3g}x the allowed"
    return {"passed": False, "outputs": results, "error": error, "per_image": per_image}


def refs(data, prefix: str) -> list[np.ndarray]:
    return [data[f"{prefix}_{k}"] for k in range(16) if f"{prefix}_{k}" in data]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3  # a failed run is reported in the result, not logged
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(case: Path) -> dict:
    data = np.load(case / "reference.npz")
    result: dict = {"export": export_phase(case)}
    converted = session(case / "converted.onnx")
    result["batch2"] = run_phase(converted, data["x_small"], refs(data, "y_small"))
    large = refs(data, "y_large")
    result["larger"] = run_phase(converted, data["x_large"], large)
    result["larger"]["size"] = list(data["x_large"].shape)
    if not large:
        result["larger"]["note"] = f"no framework reference: {data['large_error']}"
    result["passed"] = result["batch2"]["passed"] and result["larger"]["passed"]
    return result


def export_phase(case: Path) -> dict:
    """The export as written, at batch 1 and the exported size, against the framework."""
    data = np.load(case / "reference.npz")
    try:
        original = session(case / "model.onnx")
    except Exception as exc:
        return {"passed": False, "loads": False, "error": f"onnxruntime: {' '.join(str(exc).split())[:300]}"}
    return {"loads": True, **run_phase(original, data["x_one"], refs(data, "y_one"))}


def relaxed_original(case: Path) -> dict:
    """Does the export itself pin the size? Its input's spatial dims made symbolic, nothing else
    changed, run at the larger size with batch 1 against the framework there (global heads)."""
    import onnx

    layout = json.loads((case / "export.json").read_text())["layout"]
    model = onnx.load(str(case / "model.onnx"), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in zip((1, 2) if layout == "NHWC" else (2, 3), ("height", "width"), strict=True):
        dims[axis].dim_param = name
    del model.graph.value_info[:]
    for output in model.graph.output:
        for k, dim in enumerate(output.type.tensor_type.shape.dim):
            dim.dim_param = f"out_{k}"
    path = case / "relaxed_original.onnx"
    onnx.save(model, str(path))  # beside the original, so its external data is found
    data = np.load(case / "reference.npz")
    try:
        relaxed = session(path)
    except Exception as exc:
        return {"passed": False, "error": f"onnxruntime: {' '.join(str(exc).split())[:300]}"}
    finally:
        path.unlink()
    return run_phase(relaxed, data["x_large"][:1], [y[:1] for y in refs(data, "y_large")])


def dense(case: Path) -> dict:
    """The `--dense` model: with a linear head (the tool's report says so) the spatial mean of its map
    equals the framework's logits, at the exported size and at the larger size (batch 2); with a
    nonlinear head the map is the head at every location, so only its shape is recorded."""
    data = np.load(case / "reference.npz")
    linear = all(h["linear"] for h in json.loads((case / "dense.json").read_text())["heads"])
    model = session(case / "dense.onnx")
    name = model.get_inputs()[0].name
    result: dict = {"linear": linear}
    for phase, prefix in (("batch2", "small"), ("larger", "large")):
        x, expected = data[f"x_{prefix}"], refs(data, f"y_{prefix}")
        try:
            runs = [model.run(None, {name: x[i : i + 1]}) for i in range(len(x))]  # batch may stay fixed
            maps = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        except Exception as exc:
            result[phase] = {"passed": False, "error": f"onnxruntime: {' '.join(str(exc).split())[:300]}"}
            continue
        shapes = [list(m.shape) for m in maps]
        if not linear or not expected:
            result[phase] = {"passed": all(m.ndim == 4 for m in maps), "shapes": shapes, "compared": False}
            continue
        pooled = [m.mean(axis=(2, 3)) if m.ndim == 4 else m for m in maps]
        outputs = [compare(p, y) for p, y in zip(pooled, expected, strict=False)]
        result[phase] = {"passed": all(o["passed"] for o in outputs), "shapes": shapes, "outputs": outputs}
    result["passed"] = result["batch2"]["passed"] and result["larger"]["passed"]
    return result


if __name__ == "__main__":
    modes = {"--relaxed-original": relaxed_original, "--export": export_phase, "--dense": dense}
    mode = next((modes[a] for a in sys.argv[1:-1] if a in modes), main)
    print(json.dumps(mode(Path(sys.argv[-1]))))
