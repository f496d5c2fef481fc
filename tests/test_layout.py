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


def _channels_rebuilt(index: str, unsqueeze: str) -> onnx.ModelProto:
    """torchvision's `transform_input`: each channel gathered (`x[:, i]`), rescaled, unsqueezed and
    concatenated again before the first Conv."""
    lines = []
    for i in range(3):
        lines.append(f"i{i} = Constant<value = int64{index} {{{i}}}>()")
        lines.append(f"g{i} = Gather<axis = 1>(x, i{i})")
        lines.append(f"u{i} = {unsqueeze.format(src=f'g{i}')}")
        lines.append(f"s{i} = Mul(u{i}, scale)")
        lines.append(f"c{i} = Add(s{i}, shift)")
    body = "\n".join(lines)
    return _with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 9, 8] x) => (float[1, 4] y) {{
          {body}
          cat = Concat<axis = 1>(c0, c1, c2)
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(cat, w)
          fl = Flatten(f)
          y = Gemm<transB = 1>(fl, fc)
        }}""",
        scale=np.array(0.458, np.float32),
        shift=np.array(-0.03, np.float32),
        axes=np.array([1], np.int64),
        w=RNG.standard_normal((5, 3, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((4, 5 * 4 * 3)).astype(np.float32),
    )


def test_channels_gathered_and_concatenated_again_keep_their_axes() -> None:
    model = _channels_rebuilt("", "Unsqueeze({src}, axes)")
    layout = trace_layout(import_graph(model).inputs[0])
    assert (layout.batch, layout.channel, layout.spatial) == (0, 1, (2, 3))
    result = onnx_fc2conv.convert(model)
    assert [r.new_shape for r in result.relaxed_inputs] == [("batch", 3, "height", "width")]
    assert {c.check for c in result.verification.comparisons} >= {"same size", "larger size"}
    assert result.verification.passed


def test_a_channel_index_list_keeps_the_axis_without_unsqueeze() -> None:
    layout = trace_layout(import_graph(_channels_rebuilt("[1]", "Identity({src})")).inputs[0])
    assert (layout.batch, layout.channel, layout.spatial) == (0, 1, (2, 3))


def test_rows_gathered_one_by_one_are_not_a_spatial_axis() -> None:
    """Three rows picked by index and stacked again: the Conv's height is not the input's."""
    model = _with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 9, 8] x) => (float[1, 4] y) {
          i0 = Constant<value = int64 {0}>()
          i1 = Constant<value = int64 {4}>()
          i2 = Constant<value = int64 {8}>()
          g0 = Gather<axis = 2>(x, i0)
          g1 = Gather<axis = 2>(x, i1)
          g2 = Gather<axis = 2>(x, i2)
          u0 = Unsqueeze(g0, axes)
          u1 = Unsqueeze(g1, axes)
          u2 = Unsqueeze(g2, axes)
          cat = Concat<axis = 2>(u0, u1, u2)
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(cat, w)
          fl = Flatten(f)
          y = Gemm<transB = 1>(fl, fc)
        }""",
        axes=np.array([2], np.int64),
        w=RNG.standard_normal((5, 3, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((4, 5 * 1 * 3)).astype(np.float32),
    )
    assert trace_layout(import_graph(model).inputs[0]) is None
    with pytest.raises(
        onnx_fc2conv.NotConvertibleError, match="input 'x': its batch and spatial axes cannot be traced"
    ):
        onnx_fc2conv.convert(model)


def _gathered_by_a_2d_index(axis: int, index: list[list[int]]) -> onnx.ModelProto:
    """`Gather` with a `[1, 3]` index puts two axes in place of `axis`; a Squeeze drops the first."""
    return _with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 9, 8] x) => (float[1, 4] y) {{
          picked = Gather<axis = {axis}>(x, index)
          sq = Squeeze(picked, axes)
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(sq, w)
          fl = Flatten(f)
          y = Gemm<transB = 1>(fl, fc)
        }}""",
        index=np.array(index, np.int64),
        axes=np.array([axis], np.int64),
        w=RNG.standard_normal((5, 3, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((4, 5 * (4 if axis == 1 else 1) * 3)).astype(np.float32),
    )


def test_channels_reordered_by_a_2d_index_keep_their_axes() -> None:
    """BGR to RGB as `x[:, [[2, 1, 0]]].squeeze(1)`: the channel axis is the one the index replaced."""
    model = _gathered_by_a_2d_index(1, [[2, 1, 0]])
    layout = trace_layout(import_graph(model).inputs[0])
    assert (layout.batch, layout.channel, layout.spatial) == (0, 1, (2, 3))
    result = onnx_fc2conv.convert(model)
    assert [r.new_shape for r in result.relaxed_inputs] == [("batch", 3, "height", "width")]
    assert result.verification.passed


def test_rows_picked_by_a_2d_index_are_not_a_spatial_axis() -> None:
    assert trace_layout(import_graph(_gathered_by_a_2d_index(2, [[0, 4, 8]])).inputs[0]) is None


def test_a_space_to_depth_stem_is_refused_naming_the_reshape() -> None:
    """TResNet's stem folds 4 x 4 blocks into the channels with a Reshape whose target holds the
    exported size: the trace cannot follow the axes through it, and the refusal says where."""
    model = _with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 3, 8, 8] x) => (float[1, 2] y) {
          blocks = Reshape(x, target)
          moved = Transpose<perm = [0, 3, 5, 1, 2, 4]>(blocks)
          deep = Reshape(moved, merged)
          f = Conv<kernel_shape = [1, 1]>(deep, w)
          p = GlobalAveragePool(f)
          fl = Flatten(p)
          y = Gemm<transB = 1>(fl, fc)
        }""",
        target=np.array([1, 3, 2, 4, 2, 4], np.int64),
        merged=np.array([1, 48, 2, 2], np.int64),
        w=RNG.standard_normal((5, 48, 1, 1)).astype(np.float32),
        fc=RNG.standard_normal((2, 5)).astype(np.float32),
    )
    with pytest.raises(onnx_fc2conv.NotConvertibleError) as err:
        onnx_fc2conv.convert(model)
    assert str(err.value) == (
        "input 'x': its batch and spatial axes cannot be traced to a Conv or pool; "
        "the trace stops at Reshape 'blocks' (target [1, 3, 2, 4, 2, 4])"
    )


def _symbolic_channels(group: int) -> onnx.ModelProto:
    """An input `[N, C, 9, 8]` whose channel dim is a symbol; the first Conv (`group` groups) takes 3."""
    return _with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, C, 9, 8] x) => (float[N, 4] y) {{
          f = Conv<kernel_shape = [3, 3], strides = [2, 2], group = {group}>(x, w)
          r = Relu(f)
          fl = Flatten(r)
          y = Gemm<transB = 1>(fl, fc)
        }}""",
        w=RNG.standard_normal((6, 3 // group, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((4, 6 * 4 * 3)).astype(np.float32),
    )


@pytest.mark.parametrize("group", [1, 3])
def test_a_symbolic_channel_dim_becomes_the_count_the_kernels_take(group: int) -> None:
    """The model runs only with 3 channels: the written input says so, and verification feeds 3."""
    model = _symbolic_channels(group)
    assert trace_layout(import_graph(model).inputs[0]).channels == 3
    result = onnx_fc2conv.convert(model)
    assert [r.new_shape for r in result.relaxed_inputs] == [("N", 3, "height", "width")]
    assert {c.input_shape[1] for c in result.verification.comparisons} == {3}
    assert result.verification.passed


def test_channels_rebuilt_by_a_concat_give_no_kernel_count() -> None:
    """The Conv's count is the Concat's, not necessarily the input's: nothing is pinned."""
    layout = trace_layout(import_graph(_channels_rebuilt("", "Unsqueeze({src}, axes)")).inputs[0])
    assert layout.channels is None


def _keras_gap_layernorm_head() -> onnx.ModelProto:
    """Keras' ConvNeXt classifier through tf2onnx: GlobalAveragePooling2D as a channel-last
    `ReduceMean` over axes 1, 2, then LayerNormalization and Dense on the pooled vector."""
    return _with_weights(
        """
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, 12, 10, 3] x) => (float[N, 4] y) {
          t = Transpose<perm = [0, 3, 1, 2]>(x)
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(t, w)
          r = Relu(f)
          nhwc = Transpose<perm = [0, 2, 3, 1]>(r)
          p = ReduceMean<keepdims = 0>(nhwc, axes)
          n = LayerNormalization<axis = -1>(p, gamma, beta)
          y = MatMul(n, fc)
        }""",
        w=RNG.standard_normal((5, 3, 3, 3)).astype(np.float32),
        axes=np.array([1, 2], np.int64),
        gamma=(RNG.random(5) + 0.5).astype(np.float32),
        beta=RNG.standard_normal(5).astype(np.float32),
        fc=RNG.standard_normal((5, 4)).astype(np.float32),
    )


def test_a_head_behind_a_channel_last_global_pool_stays_on_the_pooled_vector() -> None:
    result = onnx_fc2conv.convert(_keras_gap_layernorm_head())
    assert [r.new_shape for r in result.relaxed_inputs] == [("N", "height", "width", 3)]
    assert len(result.notices) == 1 and result.notices[0].startswith("head ")
    assert "stays on the pooled vector as it is" in result.notices[0]
    assert {c.check for c in result.verification.comparisons} >= {"same size", "larger size"}
    assert result.verification.passed


@pytest.mark.parametrize(
    "step",
    [
        "t = Pad(x, pads)",  # two channels more: the Conv's 5 are not the input's
        "t = Slice(x, starts, ends, axes)",  # the first 5 channels of any number
    ],
)
def test_a_channel_count_changed_on_the_way_pins_nothing(step: str) -> None:
    model = _with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, C, 9, 8] x) => (float[N, 4] y) {{
          {step}
          f = Conv<kernel_shape = [3, 3], strides = [2, 2]>(t, w)
          fl = Flatten(f)
          y = Gemm<transB = 1>(fl, fc)
        }}""",
        pads=np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64),
        starts=np.array([0], np.int64),
        ends=np.array([5], np.int64),
        axes=np.array([1], np.int64),
        w=RNG.standard_normal((6, 5, 3, 3)).astype(np.float32),
        fc=RNG.standard_normal((4, 6 * 4 * 3)).astype(np.float32),
    )
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(verify=False))
    assert [r.new_shape for r in result.relaxed_inputs] == [("N", "C", "height", "width")]
