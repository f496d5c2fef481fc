"""rules/flatten_pool: a global pool before the flatten leaves a 1 x 1 map; the head becomes a 1 x 1 Conv after it.

Dense mode (the head moved before the pool) is tested in test_dense.py.
"""

from __future__ import annotations

import pytest
from rule_support import assert_pooled_head, pooled_model

import onnx_fc2conv


@pytest.mark.parametrize(
    ("kind", "pool"), [("gap_flatten_gemm", "GlobalAveragePool"), ("gmp_flatten_gemm", "GlobalMaxPool")]
)
def test_global_pool_then_flatten(kind: str, pool: str) -> None:
    assert_pooled_head(kind, ["Conv", "Relu", pool, "Conv"], "Flatten -> Gemm")
    head = onnx_fc2conv.inspect(pooled_model(kind)).heads[0]
    assert head.pool is not None and head.pool.op == pool
