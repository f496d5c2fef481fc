"""Dim names: a relaxed input keeps the original's own symbols, fixed dims get the configured names,
and every output dim computed from the new input dims is named after them, on every path."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from builders import GraphBuilder, backbone, convert, dims, gemm, image_model, two_map_model
from click.testing import CliRunner
from rule_support import pooled_model

import onnx_fc2conv
from onnx_fc2conv import ConvertOptions, DimNames, RelaxedInput
from onnx_fc2conv.cli import main
from onnx_fc2conv.graph import set_value_info_dims
from onnx_fc2conv.output_dims import name_outputs

MODELS = Path(__file__).resolve().parent.parent / "models"
M = 5


def head_model(batch: int | str) -> onnx.ModelProto:
    """`[batch, 3, 5, 4] -> Conv 2x2 -> Flatten -> Gemm`: the head's map is `[batch, M, h - 4, w - 3]`."""
    return image_model(lambda g, x, k: gemm(g, x, k, M), batch=batch)


def conv_model(shape: list) -> onnx.ModelProto:
    """No FC layer: `shape -> Conv 2x2 -> Relu`, a map `[N, 4, h - 1, w - 1]`."""
    g = GraphBuilder()
    x = g.input("input", shape)
    g.output(backbone(g, x, 3, 4))
    return g.build()


def io_dims(model: onnx.ModelProto) -> tuple[list, list]:
    return dims(model.graph.input[0]), [dims(o) for o in model.graph.output]


def golden(name: str, **options: object) -> onnx.ModelProto:
    return onnx_fc2conv.convert(str(MODELS / name), ConvertOptions(verify=False, **options)).model


# -- inputs -------------------------------------------------------------------------------------


def test_fixed_dims_get_the_configured_names() -> None:
    assert io_dims(convert(head_model(1)).model) == (
        ["batch", 3, "height", "width"],
        [["batch", M, "out_height", "out_width"]],
    )


@pytest.mark.parametrize("batch", ["N", "n", "batch_size"])
def test_the_originals_batch_name_is_kept_on_the_input_and_the_outputs(batch: str) -> None:
    assert io_dims(convert(head_model(batch)).model) == (
        [batch, 3, "height", "width"],
        [[batch, M, "out_height", "out_width"]],
    )


@pytest.mark.parametrize(
    "placeholder",
    # onnx and tf2onnx; paddle2onnx; torch.onnx with a list of dynamic axes; torch.export's automatic dims
    ["unk__123", "unk__0", "DynamicDimension.0", "input_dynamic_axes_1", "s31"],
)
def test_an_exporters_placeholder_is_not_kept(placeholder: str) -> None:
    assert io_dims(convert(head_model(placeholder)).model) == (
        ["batch", 3, "height", "width"],
        [["batch", M, "out_height", "out_width"]],
    )


@pytest.mark.parametrize("own", ["unk__batch", "s", "sN", "DynamicDimension", "images"])
def test_names_that_merely_look_like_a_placeholder_are_kept(own: str) -> None:
    assert dims(convert(head_model(own)).model.graph.input[0]) == [own, 3, "height", "width"]


def test_tf2onnx_golden_with_a_placeholder_batch() -> None:
    assert io_dims(golden("keras_mnist_dynbatch.onnx")) == (
        ["batch", "height", "width", 1],
        [["batch", 10, "out_height", "out_width"]],
    )


@pytest.mark.parametrize("name", ["ts_vgg_small_dynbatch.onnx", "dynamo_view_head_dynbatch.onnx"])
def test_goldens_with_a_named_batch(name: str) -> None:
    assert io_dims(golden(name)) == (["batch", 3, "height", "width"], [["batch", 10, "out_height", "out_width"]])


def test_own_spatial_names_are_kept() -> None:
    result = convert(conv_model(["batch_size", 3, "h", "w"]))
    assert io_dims(result.model) == (["batch_size", 3, "h", "w"], [["batch_size", 4, "out_height", "out_width"]])


def test_own_and_fixed_dims_mixed() -> None:
    result = onnx_fc2conv.convert(conv_model(["N", 3, "h", 6]))
    assert io_dims(result.model) == (["N", 3, "h", "width"], [["N", 4, "out_height", "out_width"]])
    # both spatial axes are verified larger: the one the original left free and the relaxed one
    larger = {c.input_shape for c in result.verification.comparisons if c.check == "larger size"}
    assert len(larger) == 2 and all(s[2] > 32 and s[3] > 6 for s in larger), larger
    assert result.verification.passed


def test_an_own_name_that_would_tie_two_axes_gives_way() -> None:
    """`['width', 3, 5, 4]`: keeping `width` on the batch would tie it to the new width."""
    result = convert(head_model("width"))
    assert io_dims(result.model) == (["batch", 3, "height", "width"], [["batch", M, "out_height", "out_width"]])


def test_a_square_symbol_on_both_spatial_axes_gives_way() -> None:
    """`[N, 3, S, S]` says height == width; the converted model takes any height and width."""
    model = onnx_fc2conv.convert(conv_model(["N", 3, "S", "S"]), ConvertOptions(verify=False)).model
    assert io_dims(model) == (["N", 3, "height", "width"], [["N", 4, "out_height", "out_width"]])


def test_configured_names() -> None:
    names = DimNames(batch="b", height="y", width="x")
    assert io_dims(convert(head_model(1), dim_names=names).model) == (
        ["b", 3, "y", "x"],
        [["b", M, "out_y", "out_x"]],
    )
    assert io_dims(convert(head_model("N"), dim_names=names).model) == (
        ["N", 3, "y", "x"],
        [["N", M, "out_y", "out_x"]],
    )


def test_an_mlp_input_keeps_its_batch_name() -> None:
    assert io_dims(golden("question_mlp.onnx")) == (
        ["batch", 3, "height", "width"],
        [["batch", 2, "out_height", "out_width"]],
    )


# -- outputs on every path ----------------------------------------------------------------------


def test_no_fc_layer_map_output() -> None:
    result = convert(conv_model([1, 3, 6, 5]))
    assert io_dims(result.model) == (["batch", 3, "height", "width"], [["batch", 4, "out_height", "out_width"]])


@pytest.mark.parametrize("name", ["ts_vgg_small.onnx", "keras_flatten.onnx"])
def test_reconversion_of_a_converted_model(name: str) -> None:
    once = golden(name)
    twice = onnx_fc2conv.convert(once, ConvertOptions(verify=False)).model
    assert io_dims(twice) == io_dims(once)
    assert [dims(o) for o in twice.graph.output] == [["batch", 10, "out_height", "out_width"]]


def test_reconversion_keeps_the_originals_batch_name() -> None:
    once = convert(head_model("N")).model
    assert io_dims(convert(once).model) == (["N", 3, "height", "width"], [["N", M, "out_height", "out_width"]])


def test_head_kept_on_the_pooled_vector() -> None:
    assert io_dims(golden("ts_pooled_layernorm_head.onnx")) == (["batch", 3, "height", "width"], [["batch", 10]])


def verified(model: onnx.ModelProto, **options: object) -> onnx.ModelProto:
    """Converted and verified (for the modes whose checks builders.convert does not expect)."""
    result = onnx_fc2conv.convert(model, ConvertOptions(**options))
    assert result.verification is not None and result.verification.passed
    return result.model


def test_dense_mode() -> None:
    model = verified(pooled_model("gap_flatten_gemm"), dense=True)
    assert [dims(o) for o in model.graph.output] == [["N", M, "out_height", "out_width"]]


def test_a_fixed_class_count_the_original_declared() -> None:
    """A computed `[batch, -1]` reshape: onnx's inference leaves the second dim unknown, the
    symbolic one finds the 10 the original declared."""
    assert io_dims(golden("dynamo_dla_head.onnx")) == (["batch", 3, "height", "width"], [["batch", 10]])


def test_an_output_that_is_not_a_head() -> None:
    """The backbone's map as a second output: another size, so other names."""
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    feat = backbone(g, x, 3, 4)
    g.output(gemm(g, g.op("Flatten", [feat], axis=1), 48, M), "logits")
    g.outputs.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, ["N", 4, 4, 3]))
    result = convert(g.build())
    assert [dims(o) for o in result.model.graph.output] == [
        ["N", M, "out_height", "out_width"],
        ["N", 4, "out_height_2", "out_width_2"],
    ]


def test_quantized_ops_are_followed_by_their_float_arithmetic() -> None:
    """QLinearConv and the other quantized ops onnxruntime's inference lacks (contrib_shapes.py)."""
    assert io_dims(golden("ort_qop_vgg_small.onnx")) == (
        ["batch", 3, "height", "width"],
        [["batch", 10, "out_height", "out_width"]],
    )


def test_maps_named_by_position_never_share_a_name() -> None:
    """Nothing says two maps named by position are of one size (here they are not): each gets its own."""
    result = convert(two_map_model())
    assert [dims(o) for o in result.model.graph.output] == [
        ["batch", M, "out_height", "out_width"],
        ["batch", M, "out_height_2", "out_width_2"],
        ["batch", None, "out_height_3", "out_width_3"],
    ]
    larger = [c for c in result.verification.comparisons if c.check == "larger size"]
    assert {c.output: c.shape[2:] for c in larger if c.input_shape[2:] == (12, 11)} == {
        "fine": (5, 4),
        "coarse": (3, 3),
    }


def test_computed_pads_name_by_position() -> None:
    assert io_dims(golden("ts_timm_same_pad.onnx")) == (
        ["batch", 3, "height", "width"],
        [["batch", 10, "out_height", "out_width"]],
    )


def test_denser_map() -> None:
    model = golden("ts_vgg_small.onnx", output_stride=8)
    assert [dims(o) for o in model.graph.output] == [["batch", 10, "out_height", "out_width"]]


def test_batched_head_keeps_the_names() -> None:
    model = verified(head_model("N"), batch_head=True)
    assert [dims(o) for o in model.graph.output] == [["N", M, "out_height", "out_width"]]


def test_sizes_and_geometry_with_an_own_batch_name() -> None:
    result = convert(head_model("N"))
    assert result.valid_sizes is not None and result.valid_sizes.minimum == (5, 4)
    geometry = result.geometry["output"]
    assert isinstance(geometry, onnx_fc2conv.Geometry) and geometry.receptive_field == (5, 4)


def test_cli_names_and_report(tmp_path: Path) -> None:
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(head_model("N"), source)
    args = ["convert", str(source), str(target), "--batch-name", "B", "--height-name", "Y", "--width-name", "X"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    written = onnx.load(str(target))
    assert io_dims(written) == (["N", 3, "Y", "X"], [["N", M, "out_Y", "out_X"]])
    assert "input 'input': [N, 3, 5, 4] -> [N, 3, Y, X]" in res.output


def test_verify_accepts_a_conversion_whose_input_was_free_already() -> None:
    """`['batch_size', 3, 'h', 'w']` keeps its dims: verify() still knows it as a conversion."""
    original = conv_model(["batch_size", 3, "h", "w"])
    converted = convert(original).model
    assert dims(converted.graph.input[0]) == dims(original.graph.input[0])
    assert onnx_fc2conv.verify(original, converted).passed


def _relaxed_conv_model(output_dims: list) -> tuple[onnx.ModelProto, list[RelaxedInput]]:
    """conv_model relaxed by hand, its output declared `output_dims` (what onnx's inference left)."""
    model = conv_model(["N", 3, 6, 5])
    set_value_info_dims(model.graph.input[0], ["N", 3, "height", "width"])
    set_value_info_dims(model.graph.output[0], output_dims)
    relaxed = [RelaxedInput("input", ("N", 3, 6, 5), ("N", 3, "height", "width"), 0, (2, 3))]
    return model, relaxed


def test_an_output_onnx_lost_takes_the_symbolic_rank_and_fixed_dims() -> None:
    """onnx's inference can lose an output (a Reshape whose target is built from Shape), leaving
    the original's rank: the symbolic inference's rank and fixed dims replace it."""
    model, relaxed = _relaxed_conv_model([None, None])
    name_outputs(model, relaxed, DimNames(), {"output": ("N", 10)}, {})
    assert dims(model.graph.output[0]) == ["N", 4, "out_height", "out_width"]


def test_a_fixed_dim_onnx_left_unknown_is_declared_only_where_the_original_declared_it() -> None:
    model, relaxed = _relaxed_conv_model(["N", None, None, None])
    name_outputs(model, relaxed, DimNames(), {"output": ("N", 4, 5, 4)}, {})
    assert dims(model.graph.output[0]) == ["N", 4, "out_height", "out_width"]
    model, relaxed = _relaxed_conv_model(["N", None, None, None])
    name_outputs(model, relaxed, DimNames(), {"output": ("N", 7, 5, 4)}, {})
    assert dims(model.graph.output[0]) == ["N", None, "out_height", "out_width"]


def test_by_position_a_rank_2_head_output_has_no_spatial_dims() -> None:
    """An op no inference knows (a custom domain) ends the graph: dims are named by position, and
    the class dim of a `[batch, M]` output is not called a width."""
    model, relaxed = _relaxed_conv_model([None, None])
    node = model.graph.node[-1]
    node.output[0] = "map"
    model.graph.node.append(onnx.helper.make_node("Mystery", ["map"], ["output"], domain="test.domain"))
    model.opset_import.append(onnx.helper.make_opsetid("test.domain", 1))
    name_outputs(model, relaxed, DimNames(), {"output": ("N", 10)}, {"output": 2})
    assert dims(model.graph.output[0]) == ["N", None]
    set_value_info_dims(model.graph.output[0], [None, None, None, None])
    name_outputs(model, relaxed, DimNames(), {"output": ("N", 10)}, {"output": 2})
    assert dims(model.graph.output[0]) == ["N", None, "out_height", "out_width"]


def _two_images(second: tuple[int, int]) -> onnx.ModelProto:
    """Two image inputs, `a` [1, 3, 6, 5] and `b` [1, 3, *second], each pooled, concatenated, classified."""
    g = GraphBuilder(opset=17)
    pooled = [
        g.op("Flatten", [g.op("GlobalAveragePool", [backbone(g, g.input(name, [1, 3, *size]), 3, 4)])])
        for name, size in (("a", (6, 5)), ("b", second))
    ]
    g.output(gemm(g, g.op("Concat", pooled, axis=1), 8, M))
    return g.build()


def test_images_of_different_sizes_get_names_of_their_own() -> None:
    """One name would declare the two sizes equal, which the exported sizes already contradict."""
    result = onnx_fc2conv.convert(_two_images((9, 7)))
    assert result.verification.passed
    assert [r.new_shape for r in result.relaxed_inputs] == [
        ("batch", 3, "height", "width"),
        ("batch", 3, "height_2", "width_2"),
    ]
    same = onnx_fc2conv.convert(_two_images((6, 5)))
    assert {r.new_shape for r in same.relaxed_inputs} == {("batch", 3, "height", "width")}
