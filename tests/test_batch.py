"""The batch a written model claims: copied where a constant baked it, kept where a node pins it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, parser

import onnx_fc2conv
from onnx_fc2conv.batch import plan_batch
from onnx_fc2conv.graph import import_graph
from onnx_fc2conv.layout import trace_layout
from onnx_fc2conv.rules.base import Code

RNG = np.random.default_rng(5)


def _model(tail: str, **weights: np.ndarray) -> onnx.ModelProto:
    """A fully convolutional model (no FC layer) exported for batch 1, ending in `tail`."""
    model = parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 8, 8] x) => (float[1, 4] y) {{
          c = Conv<kernel_shape = [3, 3]>(x, w)
          p = GlobalAveragePool(c)
          {tail}
        }}"""
    )
    weights["w"] = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _run_batch2(original: onnx.ModelProto, converted: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    orig = ort.InferenceSession(original.SerializeToString())
    conv = ort.InferenceSession(converted.SerializeToString())
    expected = np.concatenate([orig.run(None, {"x": x[i : i + 1]})[0] for i in range(2)])
    return conv.run(None, {"x": x})[0], expected


def test_a_final_reshape_that_bakes_batch_one_copies_the_batch() -> None:
    model = _model("y = Reshape(p, target)", target=np.array([1, 4], np.int64))
    result = onnx_fc2conv.convert(model)
    assert [(f.op, f.change) for f in result.backbone_fixes] == [
        ("Reshape", "target [1, 4] -> [0, 4]: the batch is copied, not fixed")
    ]
    assert result.relaxed_inputs[0].new_shape == ("batch", 3, "height", "width")
    got, expected = _run_batch2(model, result.model)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_reshape_that_flattens_the_batch_with_the_features_pins_it() -> None:
    model = _model(
        "f = Reshape(p, flat)\n          y = Reshape(f, target)",
        flat=np.array([-1], np.int64),
        target=np.array([1, 4], np.int64),
    )
    graph = import_graph(model)
    layout = trace_layout(graph.inputs[0])
    plan = plan_batch(graph, {"x": layout})
    assert [(p.node, p.code) for p in plan.pins] == [("f", Code.BAKED_BATCH)]
    result = onnx_fc2conv.convert(model)
    assert result.relaxed_inputs[0].new_shape == (1, 3, "height", "width")
    assert "the batch stays as exported: Reshape 'f' folds the batch into its target [-1]" in result.notices


def test_a_symbolic_batch_is_left_alone() -> None:
    model = _model("y = Reshape(p, target)", target=np.array([-1, 4], np.int64))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    graph = import_graph(model)
    plan = plan_batch(graph, {"x": trace_layout(graph.inputs[0])})
    assert plan.fixes == [] and plan.pins == []
