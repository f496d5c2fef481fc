"""Verification with the weights mapped from temporary files (what large models get): same verdicts.

The thresholds are lowered so a small model takes the mapped path: every initializer goes to a
file, sessions read it through onnxruntime's external data, and the files are gone afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import gemm, image_model
from onnx import numpy_helper

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions
from onnx_fc2conv.verify import sessions


@pytest.fixture
def mapped_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[onnx.ModelProto]:
    """Map every model and every tensor; returns the stubs made, temporary files in tmp_path."""
    monkeypatch.setattr(sessions, "MAP_THRESHOLD", 0)
    monkeypatch.setattr(sessions, "_LARGE_TENSOR", 0)
    monkeypatch.setattr(sessions.tempfile, "tempdir", str(tmp_path))
    stubs: list[onnx.ModelProto] = []
    real = sessions.map_weights

    def recording(model: onnx.ModelProto, folder: str, name: str) -> onnx.ModelProto:
        stub = real(model, folder, name)
        stubs.append(stub)
        return stub

    monkeypatch.setattr(sessions, "map_weights", recording)
    return stubs


def _model() -> onnx.ModelProto:
    return image_model(lambda g, x, k: gemm(g, x, k, 6))


def _external(model: onnx.ModelProto) -> int:
    return sum(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_mapped_weights_verify_a_conversion(mapped_everything: list[onnx.ModelProto], tmp_path: Path) -> None:
    result = onnx_fc2conv.convert(_model())
    report = result.verification
    assert report is not None and report.passed
    assert {c.check for c in report.comparisons} == {"same size", "larger size"}
    assert len(mapped_everything) == 2  # the original and the converted model
    assert all(_external(stub) == len(stub.graph.initializer) > 0 for stub in mapped_everything)
    assert os.listdir(tmp_path) == []  # the weight files are removed


def test_mapped_weights_still_catch_one_changed_weight(mapped_everything: list[onnx.ModelProto]) -> None:
    model = _model()
    converted = onnx_fc2conv.convert(model, ConvertOptions(verify=False)).model
    conv = [n for n in converted.graph.node if n.op_type == "Conv"][-1]
    init = next(t for t in converted.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += np.float32(1)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    report = onnx_fc2conv.verify(model, converted)
    assert not report.passed
    assert {c.check for c in report.failures} == {"same size", "larger size"}
    assert _external(mapped_everything[-1]) > 0


def test_convert_file_maps_the_original(
    mapped_everything: list[onnx.ModelProto], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    onnx.save(_model(), str(src / "m.onnx"))
    monkeypatch.setattr(sessions.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = onnx_fc2conv.convert_file(src / "m.onnx", dst / "m.onnx")
    assert result.verification is not None and result.verification.passed
    assert len(mapped_everything) == 2
    assert os.listdir(tmp_path / "tmp") == []
