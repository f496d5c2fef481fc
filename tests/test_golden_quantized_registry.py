"""The quantized goldens (models/ort_*.onnx) are made by the registry's factories (models/goldens/ort_quantized.py)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def registry():
    sys.path.insert(0, str(MODELS))
    try:
        goldens = importlib.import_module("goldens")
        importlib.import_module("goldens.ort_quantized")
        yield goldens
    finally:
        sys.path.remove(str(MODELS))


def test_every_quantized_golden_has_its_factory(registry) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    listed = {r["file"]: r for r in manifest if r["exporter"] == "onnxruntime.quantization"}
    made = {g.file: g for g in registry.REGISTRY.values() if g.exporter is registry.Exporter.ORT_QUANTIZATION}
    assert sorted(listed) == sorted(made) == sorted(p.name for p in MODELS.glob("ort_*.onnx"))
    for name, golden in made.items():
        assert (MODELS / golden.options["source"]).is_file()
        assert listed[name]["reproduces"] == golden.reproduces and listed[name]["issue"] == 13


MADE_WITH_ONNXRUNTIME = "1.32.0"  # models/README.md: the quantizer's output may change with its version


def test_a_quantized_golden_is_made_again_byte_for_byte(registry, tmp_path) -> None:
    import onnxruntime

    if onnxruntime.__version__ != MADE_WITH_ONNXRUNTIME:
        pytest.skip(f"the goldens were quantized with onnxruntime {MADE_WITH_ONNXRUNTIME}")
    export = importlib.import_module("goldens.ort_export")
    golden = registry.REGISTRY["ort_qop_mm_pc_keras_mnist.onnx"]
    export.export(golden, tmp_path / golden.file)
    assert (tmp_path / golden.file).read_bytes() == (MODELS / golden.file).read_bytes()


QUANTIZED = sorted(p.name for p in MODELS.glob("ort_*.onnx"))


@pytest.mark.parametrize("name", QUANTIZED)
def test_every_quantized_golden_converts_or_is_refused_for_dynamic_quantization(name: str) -> None:
    """Issue 13's bar: each verifies at batch 2 and two larger sizes, or is refused with its reason."""
    import onnx_fc2conv
    from onnx_fc2conv.errors import NotConvertibleError

    if name.startswith("ort_dyn_"):
        with pytest.raises(NotConvertibleError, match=r"DynamicQuantizeLinear '.*' computes its scale from the whole"):
            onnx_fc2conv.convert(str(MODELS / name))
        return
    result = onnx_fc2conv.convert(str(MODELS / name))
    assert result.verification is not None and result.verification.passed
    larger = {c.input_shape for c in result.verification.comparisons if c.check == "larger size"}
    assert len(larger) == 2 and all(shape[0] == 2 for shape in larger)
    assert any(c.check == "same size" and c.input_shape[0] == 2 for c in result.verification.comparisons)
