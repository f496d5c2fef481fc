"""The Python API's options and sources: dimension names, a fixed batch, a model given by path."""

from __future__ import annotations

import onnx
from builders import convert, dims, gemm, image_model, ops

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions
from onnx_fc2conv import convert as api_convert

M = 5


def test_custom_dim_names_and_fixed_batch() -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M), batch=1)
    names = onnx_fc2conv.DimNames(batch="B", height="rows", width="cols")
    result = convert(model, dim_names=names)
    assert dims(result.model.graph.input[0]) == ["B", 3, "rows", "cols"]
    assert dims(result.model.graph.output[0]) == ["B", M, "out_rows", "out_cols"]


def test_convert_from_path(tmp_path) -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    result = api_convert(str(path), ConvertOptions())
    assert result.verification is not None and result.verification.passed
    assert ops(result.model) == ["Conv", "Relu", "Conv"]
