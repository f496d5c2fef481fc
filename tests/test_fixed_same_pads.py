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


# torch folds the static input's shape into timm's 'same' padding: the pads are computed from constants
COMPUTED = """
          half = Constant<value = int64[4] {0, 0, 0, 0}>()
          ends = Constant<value = int64[4] {0, 0, 1, 1}>()
          both = Concat<axis = 0>(half, ends)
          computed = Cast<to = 7>(both)
          p = Pad(x, computed)"""

SAME_AT_EXPORT = [
    pytest.param(", pads = [0, 0, 1, 1]", "", "Conv 'c' pads [0, 0, 1, 1]", id="conv-pads"),
    pytest.param("", "p = Pad(x, pads)", "Conv 'c' pads [0, 0, 1, 1]", id="pad-node"),
    pytest.param("", COMPUTED, "Conv 'c' pads [0, 0, 1, 1]", id="pad-computed-from-constants"),
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


def test_a_pad_computed_from_the_input_shape_follows_every_size() -> None:
    """Pads computed from `Shape(x)` at run time are 'same' at every size: nothing to narrow."""
    pad = """
          s = Shape(x)
          hw = Slice(s, two, four)
          odd = Mod(hw, two1)
          ones = Sub(one, odd)
          begin = Constant<value = int64[4] {0, 0, 0, 0}>()
          zeros = Constant<value = int64[2] {0, 0}>()
          all = Concat<axis = 0>(begin, zeros, ones)
          p = Pad(x, all)"""
    model = _model("", pad)
    model.graph.initializer.extend(
        numpy_helper.from_array(np.array(v, np.int64), k)
        for k, v in (("two", [2]), ("four", [4]), ("two1", [2]), ("one", [1]))
    )
    result = onnx_fc2conv.convert(model)
    assert not any("'same' padding" in n for n in result.notices)
    assert result.valid_sizes.step == (1, 1)


def test_the_step_is_the_stride_the_ambiguous_layer_sees_from_the_input() -> None:
    """A 'same' layer behind a stride-2 Conv sees half the input: the input grows by 2 x 2."""
    model = parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 32, 32] x) => (float[1, 4] y) {
          a = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x, w1)
          c = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [0, 0, 1, 1]>(a, w2)
          d = Conv<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(c, w3)
          m = GlobalAveragePool(d)
          f = Flatten(m)
          y = Gemm<transB = 1>(f, fc)
        }"""
    )
    model.graph.initializer.extend(
        numpy_helper.from_array(RNG.standard_normal(s).astype(np.float32), k)
        for k, s in (("w1", (4, 3, 3, 3)), ("w2", (4, 4, 3, 3)), ("w3", (4, 4, 3, 3)), ("fc", (4, 4)))
    )
    result = onnx_fc2conv.convert(model)
    assert result.valid_sizes.describe() == "32+8k x 32+8k"  # the output stride, a multiple of 2 x 2
    assert any(n.startswith("Conv 'c' pads [0, 0, 1, 1] as TF's 'same'") for n in result.notices)
    assert result.verification.passed
