"""rules/backbone_same_pads: explicit 'same' pads for one size become auto_pad=SAME_UPPER."""

from __future__ import annotations

import onnx
from rule_support import text_model

import onnx_fc2conv
from onnx_fc2conv.graph import import_graph
from onnx_fc2conv.rules.backbone_base import BackboneContext
from onnx_fc2conv.rules.backbone_same_pads import SamePads, same_upper_pads


def _two_branch(pads: list[int], size: int) -> onnx.ModelProto:
    """A strided branch added to a pooled one (Xception's residual), flattened into one FC layer."""
    out = (size + 1) // 2
    return text_model(
        f"""
        g (float[1, 3, {size}, {size}] input) => (float[1, 5] fc) {{
            a = Conv <kernel_shape = [3, 3], strides = [2, 2], pads = {pads}> (input, wa)
            b = Conv <kernel_shape = [1, 1], strides = [2, 2]> (input, wb)
            s = Add (a, b)
            flat = Flatten <axis = 1> (s)
            fc = Gemm <transB = 1> (flat, w)
        }}
        """,
        wa=(4, 3, 3, 3),
        wb=(4, 3, 1, 1),
        w=(5, 4 * out * out),
    )


def test_same_upper_pads_follow_tf() -> None:
    assert same_upper_pads([40, 41], [3, 3], [2, 2], [1, 1]) == [0, 1, 1, 1]


def test_asymmetric_same_pads_become_same_upper_and_run_at_any_size() -> None:
    model = _two_branch([0, 0, 1, 1], 12)
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(sizes=((13, 15), (16, 17))))
    assert [(f.op, f.change) for f in result.backbone_fixes] == [
        ("Conv", "explicit pads [0, 0, 1, 1] -> auto_pad=SAME_UPPER")
    ]
    conv = next(n for n in result.model.graph.node if n.op_type == "Conv")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}["auto_pad"] == b"SAME_UPPER"
    assert result.valid_sizes.describe() == "12+ x 12+"
    odd = [c for c in result.verification.comparisons if c.check == "larger size" and c.input_shape[2] % 2]
    assert odd and all(c.passed for c in odd)
    assert any("size-agnostic rewrite was used as the reference backbone" in n for n in result.verification.notes)


def test_symmetric_pads_are_a_choice_of_their_own() -> None:
    """torch's padding=1 on an odd map equals SAME_UPPER there, but not at other sizes: left alone."""
    result = onnx_fc2conv.convert(_two_branch([1, 1, 1, 1], 11))
    assert result.backbone_fixes == []
    assert result.valid_sizes.describe() == "11+ x 11+"  # both branches agree at every size


def test_strides_of_the_wrong_length_are_not_taken_for_same_pads() -> None:
    """A malformed Conv (three strides on a 2-D map) is left to onnxruntime, which refuses it."""
    model = _two_branch([0, 0, 1, 1], 12)
    conv = next(n for n in model.graph.node if n.output[0] == "a")
    next(a for a in conv.attribute if a.name == "strides").ints.append(2)
    graph = import_graph(model)
    ctx = BackboneContext(graph, 2, lambda t: None, lambda n: True, grows=False)
    assert SamePads().match(ctx, next(n for n in graph.nodes if n.outputs[0].name == "a")) is None
