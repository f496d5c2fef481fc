"""rules/flatten_squeeze: `Squeeze` of the 1 x 1 spatial axes of a pooled map `[N, C, 1, 1]`."""

from __future__ import annotations

import numpy as np
from builders import GraphBuilder, assert_close, backbone, big_input, convert, matmul, ops, relaxed, run
from rule_support import assert_pooled_head, refused, skipped, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def test_squeeze_axes_input_after_global_pool() -> None:
    assert_pooled_head("gap_squeeze_matmul", ["Conv", "Relu", "GlobalAveragePool", "Conv"], "Squeeze -> MatMul+Add")


def test_squeeze_axes_attribute_opset11() -> None:
    g = GraphBuilder(opset=11)
    x = g.input("input", [1, 3, 5, 4])
    pooled = g.op("GlobalAveragePool", [backbone(g, x, 3, C, pad=True)])
    g.output(matmul(g, g.op("Squeeze", [pooled], axes=[2, 3]), C, M))
    model = g.build()
    result = convert(model)
    assert ops(result.model) == ["Conv", "Relu", "GlobalAveragePool", "Conv"]
    xv = big_input((1, 3, 8, 9))
    assert_close(run(result.model, {"input": xv})["output"].reshape(1, M), run(relaxed(model), {"input": xv})["output"])


def test_squeeze_of_other_axes_is_refused() -> None:
    """[1, 1, 1, 4] squeezed at the channel and height axes: the width is read as the features."""
    model = text_model(
        """
        g (float[1, 3, 2, 5] input) => (float[1, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            sq = Squeeze (conv, axes)
            fc = Gemm <transB = 1> (sq, w, b)
        }
        """,
        conv_w=(1, 3, 2, 2),
        axes=np.array([1, 2], np.int64),
        w=(M, 4),
        b=(M,),
    )
    err = refused(model)
    reason = "Squeeze 'sq' before Gemm 'fc' does not squeeze 1 x 1 spatial axes"
    assert err.reasons == [f"fc: {reason}"]
    assert skipped(model) == [("fc", Code.SQUEEZE_NOT_SPATIAL, reason)]
