"""The wire-format scan that measures initializers without copying their bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_fc2conv.files import raw_data_lengths

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_scan_equals_the_parsed_lengths(path: Path) -> None:
    data = path.read_bytes()
    model = onnx.ModelProto.FromString(data)
    expected = [len(t.raw_data) if t.HasField("raw_data") else None for t in model.graph.initializer]
    assert raw_data_lengths(data) == expected


def test_scan_sees_typed_and_raw_tensors() -> None:
    raw = numpy_helper.from_array(np.zeros((3, 5), np.float32), "raw")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["typed", "typed"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [raw, typed],
    )
    data = helper.make_model(graph).SerializeToString()
    assert raw_data_lengths(data) == [60, None]
    assert raw_data_lengths(data[: len(data) // 2]) is None  # truncated: unsure, the caller measures
