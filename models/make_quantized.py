"""Regenerate the quantized golden models with onnxruntime's own quantization tool.

Run from the tool's own environment (onnxruntime is a dependency of onnx-fc2conv)::

    python models/make_quantized.py

From the shipped float models `ts_vgg_small.onnx` (Flatten head) and `ts_resnet_gap.onnx`
(global pool head), each quantized four ways:

- `ort_qdq_pt_*`: `quantize_static`, QDQ format, per-tensor weights (int8 weights, uint8 activations)
- `ort_qdq_pc_*`: the same, per-channel weights
- `ort_qop_*`: `quantize_static`, QOperator format (QGemm / QLinearConv)
- `ort_dyn_*`: `quantize_dynamic` (DynamicQuantizeLinear -> MatMulInteger / ConvInteger)

Calibration reads four seeded standard-normal images; the output is deterministic for one
onnxruntime version. One line is printed per model written.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.json"
EXPORTER = "onnxruntime.quantization"
SOURCES = {"vgg_small": "ts_vgg_small.onnx", "resnet_gap": "ts_resnet_gap.onnx"}
STATIC = {"qdq_pt": (QuantFormat.QDQ, False), "qdq_pc": (QuantFormat.QDQ, True), "qop": (QuantFormat.QOperator, False)}
WHAT = {
    "qdq_pt": "quantize_static QDQ, per-tensor int8 weights, uint8 activations",
    "qdq_pc": "quantize_static QDQ, per-channel int8 weights, uint8 activations",
    "qop": "quantize_static QOperator (QGemm, QLinearConv)",
    "dyn": "quantize_dynamic (DynamicQuantizeLinear, MatMulInteger)",
}


class SeededImages(CalibrationDataReader):
    """Four seeded standard-normal inputs at the model's exported size."""

    def __init__(self, model_path: Path, count: int = 4) -> None:
        model = onnx.load(str(model_path))
        inp = model.graph.input[0]
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        rng = np.random.default_rng(0)
        self._feeds = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def build() -> list[tuple[Path, str, str]]:
    """Every quantized model: (path, source short name, kind)."""
    written = []
    for short, source in SOURCES.items():
        src = MODELS_DIR / source
        for kind, (fmt, per_channel) in STATIC.items():
            out = MODELS_DIR / f"ort_{kind}_{short}.onnx"
            quantize_static(
                src, out, SeededImages(src), quant_format=fmt, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )  # fmt: skip
            written.append((out, short, kind))
        out = MODELS_DIR / f"ort_dyn_{short}.onnx"
        quantize_dynamic(src, out, weight_type=QuantType.QInt8)
        written.append((out, short, "dyn"))
    return written


def record(path: Path, source: str, kind: str) -> dict:
    """The manifest record of one quantized model (issue 13's own tests read them)."""
    model = onnx.load(str(path))
    inp = model.graph.input[0]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "file": path.name, "exporter": EXPORTER, "opset": opset, "input_name": inp.name, "input_shape": dims,
        "input_dtype": "float32", "output_names": [o.name for o in model.graph.output],
        "head": " -> ".join(n.op_type for n in model.graph.node[-6:]), "external_data": False,
        "reproduces": f"{source} through {WHAT[kind]}", "issue": 13,
    }  # fmt: skip


def main() -> int:
    logging.disable(logging.WARNING)
    records = []
    with tempfile.TemporaryDirectory():
        for path, short, kind in build():
            onnx.checker.check_model(str(path))
            records.append(record(path, SOURCES[short], kind))
            sys.stdout.write(f"wrote {path.name} ({path.stat().st_size} bytes)\n")
    manifest = [r for r in json.loads(MANIFEST.read_text()) if r["exporter"] != EXPORTER]
    MANIFEST.write_text(json.dumps(manifest + records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
