"""Pads equal to TF's 'same' padding at the exported size: only the sizes where fixed pads and
'same' padding agree are claimed, and a notice names the layer (fixed_same_pads.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, parser

import onnx_fc2conv

RNG = np.random.default_rng(7)


def _model(conv: str, pad: str = "") -> onnx.ModelProto:
    """[1, 3, 16, 16] -> (Pad) -> 3x3 Conv stride 2 -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    source = "p" if pad else "x"
    model = parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 16, 16] x) => (float[1, 4] y) {{
          {pad}
          c = Conv<kernel_shape = [3, 3], strides = [2, 2]{conv}>({source}, w)
          r = Relu(c)
          m = GlobalAveragePool(r)
          f = Flatten(m)
          y = Gemm<transB = 1>(f, fc)
        }}"""
    )
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(RNG.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(RNG.standard_normal((4, 6)).astype(np.float32), "fc"),
            numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
        ]
    )
    return model


SAME_AT_EXPORT = [
    pytest.param(", pads = [0, 0, 1, 1]", "", "Conv 'c' pads [0, 0, 1, 1]", id="conv-pads"),
    pytest.param("", "p = Pad(x, pads)", "Conv 'c' pads [0, 0, 1, 1]", id="pad-node"),
]


@pytest.mark.parametrize(("conv", "pad", "named"), SAME_AT_EXPORT)
def test_same_at_export_claims_only_the_sizes_where_both_readings_agree(conv: str, pad: str, named: str) -> None:
    result = onnx_fc2conv.convert(_model(conv, pad))
    assert result.valid_sizes.describe() == "16+2k x 16+2k"
    notes = [n for n in result.notices if "as TF's 'same' padding does at the exported size" in n]
    assert len(notes) == 1 and notes[0].startswith(named), result.notices
    larger = [c.input_shape[2:] for c in result.verification.comparisons if c.check == "larger size"]
    assert larger and all(h % 2 == 0 and w % 2 == 0 for h, w in larger)  # the parity it was exported at
    assert result.verification.passed
    props = {p.key: p.value for p in result.model.metadata_props}
    assert props["onnx_fc2conv.valid_sizes"] == "16+2k x 16+2k"


@pytest.mark.parametrize(
    "conv",
    [
        pytest.param(", pads = [1, 1, 1, 1]", id="symmetric"),
        pytest.param(", pads = [1, 1, 0, 0]", id="not-same"),
        pytest.param("", id="valid"),
    ],
)
def test_other_pads_claim_any_size(conv: str) -> None:
    result = onnx_fc2conv.convert(_model(conv))
    assert result.valid_sizes.step == (1, 1)
    assert not any("'same' padding" in n for n in result.notices)


def test_stride_one_pads_are_not_a_question() -> None:
    model = _model(", pads = [0, 0, 1, 1]")
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    for attr in conv.attribute:
        if attr.name == "strides":
            attr.ints[:] = [1, 1]
    result = onnx_fc2conv.convert(model)
    assert result.valid_sizes.step == (1, 1)
    assert not any("'same' padding" in n for n in result.notices)
