"""Quantize a registered float golden with onnxruntime's own tool (`onnxruntime.quantization`).

Runs in the tool's own environment, where onnxruntime is installed. Calibration reads four seeded
standard-normal images at the model's exported size; the output is deterministic for one onnxruntime
version. The forward pass handed back is the float source's in onnxruntime: the quantized file must
stay within the golden's `atol` of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from goldens import Golden

SEED = 0
MODULES = ("goldens.ort_quantized",)
MODELS_DIR = Path(__file__).resolve().parent.parent


class SeededImages(CalibrationDataReader):
    """Four seeded standard-normal inputs at the model's exported size."""

    def __init__(self, model_path: Path, count: int = 4) -> None:
        model = onnx.load(str(model_path))
        inp = model.graph.input[0]
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        rng = np.random.default_rng(SEED)
        self._feeds = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def export(golden: Golden, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Quantize ``golden``'s float source to ``path``; return the float source's forward pass."""
    logging.disable(logging.WARNING)  # the tool advises pre-processing on every call
    source = MODELS_DIR / golden.options["source"]
    golden.factory(source, path, SeededImages(source))
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(a: np.ndarray) -> np.ndarray:
        return session.run(None, {name: a})[0]

    return forward
