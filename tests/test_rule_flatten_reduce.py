"""rules/flatten_reduce: a `keepdims=0` reduce over all spatial axes is both the global pool and the flatten."""

from __future__ import annotations

import pytest
from rule_support import assert_pooled_head, assert_refused_head, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5


@pytest.mark.parametrize("kind", ["reducemean_attr", "reducemean_input_axes"])
def test_reduce_mean_keepdims_0(kind: str) -> None:
    """The reduce switches to keepdims=1 and the FC layer becomes a 1 x 1 Conv after it."""
    assert_pooled_head(kind, ["Conv", "Relu", "ReduceMean", "Conv"], "ReduceMean -> Gemm")


def test_reduce_over_other_axes_is_refused() -> None:
    """A mean over channels and height leaves the width as the features: not a global pool."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            r = ReduceMean <axes = [1, 2], keepdims = 0> (conv)
            fc = Gemm <transB = 1> (r, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(M, 3),
        b=(M,),
    )
    reason = "ReduceMean 'r' before Gemm 'fc' is not a keepdims=0 reduce over the spatial axes"
    assert_refused_head(model, Code.REDUCE_NOT_SPATIAL, reason)
