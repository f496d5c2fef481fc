"""Input axes are found by following the data to the first Conv or pool, never by position."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, parser

import onnx_fc2conv
from onnx_fc2conv.graph import import_graph
from onnx_fc2conv.layout import trace_layout

RNG = np.random.default_rng(3)


def _with_weights(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _keras_preprocessed(dtype: str = "float") -> onnx.ModelProto:
    """Keras: Rescaling and Normalization (Mul, Sub, Div) on the NHWC input, then the Transpose."""
    cast = "xf = Cast<to = 1>(x)" if dtype == "uint8" else "xf = Identity(x)"
    return _with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g ({dtype}[1, 12, 10, 3] x) => (float[1, 4] y) {{
          {cast}
          s = Mul(xf, scale)
          c = Sub(s, mean)
          n = Div(c, std)
          t = Transpose<perm = [0, 3, 1, 2]>(n)
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(t, w)
          r = Relu(f)
          p = Transpose<perm = [0, 2, 3, 1]>(r)
          fl = Reshape(p, target)
          y = MatMul(fl, fc)
        }}""",
        scale=np.array(1 / 255, np.float32),
        mean=RNG.standard_normal(3).astype(np.float32),
        std=(RNG.random(3) + 0.5).astype(np.float32),
        w=RNG.standard_normal((5, 3, 3, 3)).astype(np.float32),
        target=np.array([-1, 5 * 5 * 4], np.int64),
        fc=RNG.standard_normal((5 * 5 * 4, 4)).astype(np.float32),
    )


def test_preprocessing_before_the_nhwc_transpose_keeps_the_channels_last() -> None:
    model = _keras_preprocessed()
    layout = trace_layout(import_graph(model).inputs[0])
    assert (layout.batch, layout.channel, layout.spatial) == (0, 3, (1, 2))
    result = onnx_fc2conv.convert(model)
    assert [r.new_shape for r in result.relaxed_inputs] == [("batch", "height", "width", 3)]
    assert result.verification.passed


def test_uint8_image_input_with_cast_is_relaxed() -> None:
    result = onnx_fc2conv.convert(_keras_preprocessed("uint8"))
    assert [r.new_shape for r in result.relaxed_inputs] == [("batch", "height", "width", 3)]
    assert result.verification.passed


def test_an_input_no_path_traces_is_refused_by_name() -> None:
    model = _with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 6, 4, 3] x) => (float[1, 2] y) {
          r = ReduceSum<keepdims = 0>(x, axes)
          fl = Flatten(r)
          y = Gemm<transB = 1>(fl, w)
        }""",
        axes=np.array([1], np.int64),
        w=RNG.standard_normal((2, 12)).astype(np.float32),
    )
    with pytest.raises(onnx_fc2conv.NotConvertibleError) as err:
        onnx_fc2conv.convert(model)
    assert "input 'x'" in str(err.value)


def test_shape_inference_leaves_no_file_in_the_working_folder(tmp_path, monkeypatch) -> None:
    """onnxruntime's symbolic inference saves an incomplete result into the working folder; ours not."""
    model = _keras_preprocessed()
    custom = onnx.helper.make_node("Swish2", ["n"], ["n2"], domain="com.example")
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose")
    transpose.input[0] = "n2"
    model.graph.node.insert(list(model.graph.node).index(transpose), custom)
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    monkeypatch.chdir(tmp_path)
    onnx_fc2conv.inspect(model)
    assert list(tmp_path.iterdir()) == []
