"""The reference head cut out of the original: a flatten whose target reads the image input's batch
(`view(x.size(0), -1)` as dynamo writes it, or `n = x.size(0)` at the top of `forward` as TorchScript
writes it) reads it from the cut's own input; the batch is the same."""

from __future__ import annotations

import numpy as np
import pytest
from builders import assert_sliding, big_input, convert, ops
from rule_support import WINDOW, C, M, text_model

_HEAD = """
    g (float[N, 3, 5, 4] input) => (float[N, 5] fc) {{
        conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
        {batch}
        target = Concat <axis = 0> (batch, minus_one)
        flat = Reshape (conv, target)
        fc = Gemm <transB = 1> (flat, w, b)
    }}
"""
BATCH_READS = {
    "shape-start-end": "batch = Shape <start = 0, end = 1> (input)",
    "shape-gather": """
        dims = Shape (input)
        n = Gather <axis = 0> (dims, zero)
        batch = Unsqueeze (n, axis0)
    """,
    "shape-slice": """
        dims = Shape (input)
        batch = Slice (dims, start0, end1)
    """,
}


@pytest.mark.parametrize("batch", BATCH_READS.values(), ids=BATCH_READS.keys())
def test_head_reading_the_input_batch_is_verified(batch: str) -> None:
    model = text_model(
        _HEAD.format(batch=batch),
        conv_w=(C, 3, 2, 2),
        w=(M, 48),
        b=(M,),
        minus_one=np.array([-1], np.int64),
        zero=np.array(0, np.int64),
        axis0=np.array([0], np.int64),
        start0=np.array([0], np.int64),
        end1=np.array([1], np.int64),
    )
    result = convert(model)
    assert ops(result.model) == ["Conv", "Conv"]
    assert "larger size" in {c.check for c in result.verification.comparisons}
    assert_sliding(model, result.model, big_input((2, 3, 8, 6)), WINDOW)
