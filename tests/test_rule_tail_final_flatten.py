"""rules/tail_final_flatten: a final Flatten / Reshape to `[N, M]` becomes an Identity; the output is the map."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import assert_sliding, big_input, convert, dims, gemm, image_model, ops
from rule_support import assert_refused_head, skipped, text_model

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, M = 4, 5


@pytest.mark.parametrize("final", ["Flatten", "Reshape", "Reshape-zero"])
def test_final_flatten_becomes_identity(final: str) -> None:
    def head(g, x, k):
        y = gemm(g, x, k, M)
        if final == "Flatten":
            return g.op("Flatten", [y], axis=1)
        if final == "Reshape":
            return g.op("Reshape", [y, g.const("t", np.array([-1, M], np.int64))])
        return g.op("Reshape", [y, g.const("t", np.array([0, M], np.int64))])

    model = image_model(head)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Identity"]
    assert dims(out.graph.output[0]) == ["N", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((2, 3, 7, 6)), window=(5, 4))


def _computed_final_reshape_model(extra_use: bool) -> onnx.ModelProto:
    """Flatten -> Gemm -> Reshape(y, Concat(Shape(y)[0], -1)): a final flatten with a computed target."""
    extra = ", int64[2] shp" if extra_use else ""
    return text_model(
        f"""
        g (float[n, 2, 3, 3] x) => (float[n, 5] y{extra}) {{
            f = Flatten (x)
            y0 = Gemm <transB = 1> (f, w)
            s = Shape (y0)
            b = Gather <axis = 0> (s, zero)
            bu = Unsqueeze (b, axes)
            shp = Concat <axis = 0> (bu, m1)
            y = Reshape (y0, shp)
        }}
        """,
        seed=11,
        w=(5, 18),
        zero=np.array(0, np.int64),
        axes=np.array([0], np.int64),
        m1=np.array([-1], np.int64),
    )


def test_final_reshape_with_a_computed_target_is_dropped() -> None:
    result = onnx_fc2conv.convert(_computed_final_reshape_model(extra_use=False))
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Identity"]
    assert result.verification.passed


def test_shape_of_the_head_used_elsewhere_is_refused() -> None:
    model = _computed_final_reshape_model(extra_use=True)
    with pytest.raises(onnx_fc2conv.NotConvertibleError) as err:
        onnx_fc2conv.convert(model)
    # unnamed nodes are named by their first output in messages
    assert "Shape 's' after the FC layers feeds a graph output" in str(err.value)
    assert skipped(model) == [("y0", Code.SHAPE_PROBE, "Shape 's' after the FC layers feeds a graph output")]


def test_reshape_that_does_not_keep_n_m_is_refused() -> None:
    """A Reshape of [1, 6] to [1, 2, 3] is not a final flatten: it would mix the classes of a map."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 2, 3] r) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            flat = Flatten <axis = 1> (conv)
            fc = Gemm <transB = 1> (flat, w, b)
            r = Reshape (fc, target)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(6, 48),
        b=(6,),
        target=np.array([1, 2, 3], np.int64),
    )
    reason = "Reshape 'r' after the FC layers is not supported"
    assert_refused_head(model, Code.UNSUPPORTED_OP, reason)
