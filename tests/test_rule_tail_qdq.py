"""rules/tail_qdq: per-tensor QuantizeLinear / DequantizeLinear after an FC layer stay; per-channel ones are refused."""

from __future__ import annotations

import numpy as np
import pytest
from builders import GraphBuilder, convert, gemm, image_model, ops

import onnx_fc2conv


def _quantized_output(scale_shape: tuple[int, ...], axis: int = 1):
    def head(g: GraphBuilder, flat: str, k: int) -> str:
        y = g.op("Relu", [gemm(g, flat, k, 6)])
        y = gemm(g, y, 6, 5)
        scale, zero = np.full(scale_shape, 0.02, np.float32), np.full(scale_shape, 128, np.uint8)
        q = g.op("QuantizeLinear", [y, g.const("s", scale), g.const("z", zero)], axis=axis)
        return g.op("DequantizeLinear", [q, g.const("s", scale), g.const("z", zero)], axis=axis)

    return head


@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_per_tensor_pair_after_the_fc_layers_stays(scale_shape: tuple[int, ...]) -> None:
    model = image_model(_quantized_output(scale_shape), spatial=(5, 4), batch=1)
    result = convert(model, sizes=((9, 7),))
    assert ops(result.model)[-5:] == ["Conv", "Relu", "Conv", "QuantizeLinear", "DequantizeLinear"]
    assert any(c.check == "larger size" and c.passed for c in result.verification.comparisons)


@pytest.mark.parametrize("axis", [1, -1])
def test_per_channel_pair_after_the_fc_layers_is_refused(axis: int) -> None:
    found = onnx_fc2conv.inspect(image_model(_quantized_output((5,), axis), spatial=(5, 4), batch=1))
    assert [s.code.value for s in found.skipped] == ["qdq-per-channel"]
    assert (
        "quantizes the FC output per channel: onnxruntime's QLinearConv takes one output scale"
        in found.skipped[0].reason
    )
