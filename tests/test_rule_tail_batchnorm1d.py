"""rules/tail_batchnorm1d: torch's BatchNorm1d after Linear (`Unsqueeze -> BatchNormalization -> Squeeze`)
becomes a plain BatchNormalization on the map."""

from __future__ import annotations

import numpy as np
import pytest
from builders import assert_sliding, big_input, convert, gemm, image_model, ops
from rule_support import assert_refused_head, bn_inputs, fc_head_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5
HIDDEN = 6


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_batchnorm1d_unsqueeze_bn_squeeze(opset: int) -> None:
    def head(g, x, k):
        y = gemm(g, x, k, HIDDEN)
        if opset >= 13:
            axes = g.const("axes", np.array([2], np.int64))
            u = g.op("Unsqueeze", [y, axes])
            bn = g.op("BatchNormalization", [u, *bn_inputs(g, HIDDEN)], epsilon=1e-3)
            s = g.op("Squeeze", [bn, g.const("axes2", np.array([2], np.int64))])
        else:
            u = g.op("Unsqueeze", [y], axes=[2])
            bn = g.op("BatchNormalization", [u, *bn_inputs(g, HIDDEN)], epsilon=1e-3)
            s = g.op("Squeeze", [bn], axes=[2])
        return g.op("Softmax", [gemm(g, g.op("Relu", [s]), HIDDEN, M)], axis=1 if opset < 13 else -1)

    model = image_model(head, opset=opset)
    result = convert(model)
    out = result.model
    softmax = ["Transpose", "Softmax", "Transpose"] if opset < 13 else ["Softmax"]
    assert ops(out) == ["Conv", "Relu", "Conv", "BatchNormalization", "Relu", "Conv", *softmax]
    assert_sliding(model, out, big_input((2, 3, 7, 7)), window=(5, 4))


def test_unsqueeze_without_batchnorm_is_refused() -> None:
    model = fc_head_model("u = Unsqueeze (fc, axes)", "float[1, 5, 1] u", axes=np.array([2], np.int64))
    reason = "Unsqueeze 'u' after the FC layers is not part of Unsqueeze -> BatchNormalization -> Squeeze"
    assert_refused_head(model, Code.BATCHNORM_PATTERN, reason)


def test_batchnorm_with_a_computed_parameter_is_refused() -> None:
    model = fc_head_model(
        "u = Unsqueeze (fc, axes)\nbn = BatchNormalization (u, scale, bias, mean, var)\ns = Squeeze (bn, axes)",
        "float[1, 5] s",
        inputs=", float[5] mean",
        axes=np.array([2], np.int64),
        scale=(M,),
        bias=(M,),
        var=np.ones(M, np.float32),
    )
    reason = "BatchNormalization 'bn': parameter 'mean' is not a constant"
    assert_refused_head(model, Code.NOT_CONSTANT, reason)
