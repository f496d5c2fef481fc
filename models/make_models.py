"""Regenerate the golden ONNX test models for ``onnx_fc2conv``.

Each golden model is one small factory in a registry (the ``goldens`` package beside this script); this
script runs the factories of one backend, exports, checks and describes what they produce. PyTorch and
TensorFlow live in different virtual environments, so it runs once per backend::

    <torch-env>/bin/python models/make_models.py torch   # TorchScript-based + dynamo exports
    <tf-env>/bin/python models/make_models.py keras      # Keras models through tf2onnx
    python models/make_models.py quantized               # ort_*: torch goldens through onnxruntime.quantization
    <torch-env>/bin/python models/make_models.py torch --only ts_lenet5.onnx   # one model
    python models/make_models.py all                     # all three, via the interpreters below

``all`` re-invokes this script once per backend with the interpreters named by the environment variables
``FC2CONV_TORCH_PYTHON``, ``FC2CONV_TF_PYTHON`` and ``FC2CONV_ORT_PYTHON`` (default: the current
interpreter), torch first: the quantized goldens are made from two of its models.

Every model is built from seeded weights, put in eval mode, exported, then loaded back in onnxruntime, run
on a seeded random input and compared with the framework output. Each run rewrites the records of the
models it made in ``models/manifest.json`` and keeps the others. One line is printed per model written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.json"
SEED = 0
EXPORTER_ORDER = {"torchscript": 0, "dynamo": 1, "tf2onnx": 2, "onnxruntime.quantization": 3}
BACKEND_EXPORTERS = {
    "torch": {"torchscript", "dynamo"}, "keras": {"tf2onnx"}, "quantized": {"onnxruntime.quantization"}
}  # fmt: skip
BACKEND_MODULES = {"torch": "goldens.torch_export", "keras": "goldens.keras_export", "quantized": "goldens.ort_export"}
INTERPRETER_VARIABLES = {
    "torch": "FC2CONV_TORCH_PYTHON", "keras": "FC2CONV_TF_PYTHON", "quantized": "FC2CONV_ORT_PYTHON"
}  # fmt: skip
FEATURE_OPS = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
POOL_OPS = FEATURE_OPS - {"Conv"}
CONV_TAIL_OPS = {"Relu", "HardSwish", "Clip", "Sigmoid", "Mul", "Add", "Div", "Erf", "BatchNormalization", "LeakyRelu"}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def head_summary(model: Any) -> str:
    """Op types from the last Conv/pool to the outputs, in graph order.

    A trailing pool is included; a trailing Conv is not, nor are the element-wise ops that directly follow it
    (activation, residual Add), nor Constant nodes.
    """
    nodes = list(model.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type in FEATURE_OPS), default=-1)
    start = last if last >= 0 and nodes[last].op_type in POOL_OPS else last + 1
    if last >= 0 and nodes[last].op_type == "Conv":
        while start < len(nodes) and nodes[start].op_type in CONV_TAIL_OPS:
            start += 1
    return " -> ".join(n.op_type for n in nodes[start:] if n.op_type != "Constant")


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def seeded_input(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """The check input: standard normal floats, or integers over the whole range of an integer type."""
    rng = np.random.default_rng(SEED)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def verify_and_describe(
    path: Path, golden: Any, reference: Callable[[np.ndarray], np.ndarray], atol: float = 1e-4
) -> dict[str, Any]:
    """Run ``path`` in onnxruntime on a seeded input, compare with ``reference`` and build its manifest record."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    (graph_input,) = [i for i in model.graph.input if i.name not in initializers]
    shape = _dims(graph_input)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type))
    concrete = [d if isinstance(d, int) and d > 0 else 2 for d in shape]  # dynamic batch: run with 2
    x = seeded_input(concrete, dtype)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {graph_input.name: x})
    assert all(np.all(np.isfinite(o)) for o in outputs), f"{path.name}: non-finite output"
    np.testing.assert_allclose(outputs[0], reference(x), rtol=1e-3, atol=atol, err_msg=path.name)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return {
        "file": path.name,
        "exporter": golden.exporter.value,
        "opset": opset,
        "input_name": graph_input.name,
        "input_shape": shape,
        "input_dtype": dtype.name,
        "output_names": [o.name for o in model.graph.output],
        "head": head_summary(model),
        "external_data": external,
        "reproduces": golden.reproduces,
        "issue": golden.issue,
    }


def update_manifest(records: Sequence[dict[str, Any]], replaced: Iterable[str]) -> None:
    """Replace the records of the ``replaced`` files with ``records``, keeping every other record."""
    gone = set(replaced)
    kept = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    merged = [r for r in kept if r["file"] not in gone] + list(records)
    merged.sort(key=lambda r: (EXPORTER_ORDER.get(r["exporter"], len(EXPORTER_ORDER)), r["file"]))
    MANIFEST.write_text(json.dumps(merged, indent=2) + "\n")


def _written(record: dict[str, Any]) -> None:
    shape = "x".join(str(d) for d in record["input_shape"])
    ext = " +external data" if record["external_data"] else ""
    print(f"wrote {record['file']:<34} opset {record['opset']:<2} [{shape}] {record['head']}{ext}")


def build(backend: str, only: Sequence[str] = ()) -> None:
    """Make every golden model of ``backend`` (or only the named files) and update the manifest."""
    from goldens import REGISTRY

    exporter = importlib.import_module(BACKEND_MODULES[backend])
    for module in exporter.MODULES:
        importlib.import_module(module)  # registers its factories
    goldens = [g for g in REGISTRY.values() if g.exporter.backend == backend]
    if only:
        unknown = set(only) - {g.file for g in goldens}
        if unknown:
            raise SystemExit(f"no {backend} golden named {', '.join(sorted(unknown))}")
        goldens = [g for g in goldens if g.file in only]
    records = []
    for golden in goldens:
        path = MODELS_DIR / golden.file
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        reference = exporter.export(golden, path)
        record = verify_and_describe(path, golden, reference, golden.atol)
        records.append(record)
        _written(record)
    if only:
        replaced = set(only)
    else:  # a whole backend: its records of models no longer registered go too
        kept = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
        replaced = {r["file"] for r in kept if r["exporter"] in BACKEND_EXPORTERS[backend]}
    update_manifest(records, replaced | {r["file"] for r in records})


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the golden models under models/.")
    parser.add_argument("backend", nargs="?", default="all", choices=[*BACKEND_MODULES, "all"])
    parser.add_argument("--only", nargs="+", default=[], metavar="FILE", help="make only these files")
    args = parser.parse_args(argv)
    if args.backend == "all":
        for backend, variable in INTERPRETER_VARIABLES.items():
            python = os.environ.get(variable, sys.executable)
            subprocess.run([python, str(Path(__file__).resolve()), backend], check=True)
        return 0
    _quiet()
    sys.path.insert(0, str(MODELS_DIR))
    build(args.backend, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
