"""rules/backbone_tensordot: a Tensordot (tf2onnx's Keras Dense on a channel-last map) exported with a
fixed batch has constant targets of the exported size; where the ops between its Reshapes map each
row alone, the first becomes `[-1, C]` and the second `Concat(Shape(X)[:-1], [K])`; any other round
trip is refused, naming the first baked Reshape."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, backbone, big_input, gemm, ops, run
from rule_support import backbone_refusals, refused

import onnx_fc2conv
from onnx_fc2conv.rules.base import Code

C, K, M = 4, 6, 5  # the map's channels, the Dense's units, classes
H, W = 4, 5  # the map at the exported size (input [1, 3, 5, 6])
ROWS = H * W


def _ints(g: GraphBuilder, name: str, values: list[int]) -> str:
    return g.const(name, np.array(values, np.int64))


def _from_shape(g: GraphBuilder, x: str, start: int, end: int) -> str:
    return g.op("Slice", [g.op("Shape", [x]), _ints(g, "s", [start]), _ints(g, "e", [end])])


def _tensordot_model(
    fixed: bool = True,
    fc: str = "MatMul",
    merge: list[int] | None = None,
    restore: list[int] | None = None,
    row_scale: tuple[int, ...] | None = None,
    weight_left: bool = False,
) -> onnx.ModelProto:
    """`[1, 3, 5, 6]` -> Conv -> `[1, C, 4, 5]` -> Transpose to channel-last -> Reshape 'merge'
    (`merge`, else `[ROWS, C]`) -> [Mul 'scale' by a `row_scale` constant] -> `fc` 'dot' -> Reshape
    'restore' (`restore`, else `[1, 4, 5, K]`) -> Add bias -> Relu -> ReduceMean over axes 1, 2 ->
    Gemm 'fc'. Not `fixed`: a batch and size-free oracle, both targets computed from Shape as
    tf2onnx writes them for a symbolic batch, with the same weights."""
    g = GraphBuilder()
    image = g.input("input", [1, 3, 5, 6] if fixed else ["N", 3, "h", "w"])
    last = g.op("Transpose", [backbone(g, image, 3, C)], perm=[0, 2, 3, 1], name="channel_last")
    if fixed:
        rows_target = _ints(g, "rows", merge or [ROWS, C])
        back_target = _ints(g, "back", restore or [1, H, W, K])
    else:
        rows_target = g.op("Concat", [_ints(g, "minus_one", [-1]), _from_shape(g, last, 3, 4)], axis=0)
        back_target = g.op("Concat", [_from_shape(g, last, 0, 3), _ints(g, "k", [K])], axis=0)
    rows = g.op("Reshape", [last, rows_target], name="merge")
    if row_scale is not None:
        rows = g.op("Mul", [rows, g.const("row_scale", g.rand(row_scale))], name="scale")
    if fc == "Gemm":
        dot = g.op("Gemm", [rows, g.const("w_dot", g.rand((K, C))), g.const("b_dot", g.rand((K,)))], transB=1)
    elif weight_left:
        dot = g.op("MatMul", [g.const("w_dot", g.rand((ROWS, ROWS))), rows], name="dot")
    else:
        dot = g.op("MatMul", [rows, g.const("w_dot", g.rand((C, K)))], name="dot")
    mapped = g.op("Reshape", [dot, back_target], name="restore")
    act = g.op("Relu", [g.op("Add", [mapped, g.const("bias", g.rand((mapped_width(weight_left),)))])])
    pooled = g.op("ReduceMean", [act], axes=[1, 2], keepdims=0, name="pool")
    g.output(gemm(g, pooled, mapped_width(weight_left), M, name="fc"))
    return g.build()


def mapped_width(weight_left: bool) -> int:
    return C if weight_left else K


def _equals_oracle(converted: onnx.ModelProto, oracle: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    x = big_input(shape)
    expected = run(oracle, {"input": x})["output"]
    assert_close(run(converted, {"input": x})["output"].reshape(expected.shape), expected)


@pytest.mark.parametrize("fc", ["MatMul", "Gemm"])
def test_constant_targets_follow_the_input(fc: str) -> None:
    """Both targets rebuilt; verified at batch 2 and larger sizes, equal to the size-free oracle."""
    model = _tensordot_model(fc=fc)
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed
    assert [(f.node, f.change) for f in result.backbone_fixes] == [
        ("merge", f"target [{ROWS}, {C}] -> [-1, {C}]"),
        ("restore", f"target [1, {H}, {W}, {K}] -> Concat(Shape(channel_last_out)[:-1], [{K}])"),
    ]
    assert result.relaxed_inputs[0].new_shape == ("batch", 3, "height", "width")
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    out = result.model
    assert ops(out)[-4:] == ["Relu", "Transpose", "ReduceMean", "Conv"]  # the head behind the Tensordot
    oracle = _tensordot_model(fixed=False, fc=fc)
    for shape in [(2, 3, 5, 6), (2, 3, 9, 7), (1, 3, 12, 16)]:
        _equals_oracle(out, oracle, shape)


def test_dense_mode_reads_the_fixed_tensordot_map() -> None:
    """--dense: the classifier runs on the Tensordot's output at every location, after the fixes."""
    model = _tensordot_model()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(dense=True))
    assert result.verification.passed
    assert [f.node for f in result.backbone_fixes] == ["merge", "restore"]
    assert {(c.check, c.input_shape[0]) for c in result.verification.comparisons} >= {
        ("dense mean", 2),
        ("larger size", 2),
    }
    out = result.model
    assert ops(out)[-3:] == ["Relu", "Transpose", "Conv"] and "ReduceMean" not in ops(out)
    assert [d.dim_value or d.dim_param for d in out.graph.output[0].type.tensor_type.shape.dim] == [
        "batch", M, "out_height", "out_width",
    ]  # fmt: skip


def test_a_per_feature_constant_on_the_rows_and_a_minus_one_merge() -> None:
    """A Mul by a `[C]` constant between the merge and the FC maps each row alone; a merge already
    written `[-1, C]` stays, only the way back is rebuilt."""
    model = _tensordot_model(merge=[-1, C], row_scale=(C,))
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed
    assert [f.node for f in result.backbone_fixes] == ["restore"]
    x = big_input((2, 3, 8, 11))
    out = run(result.model, {"input": x})["output"]
    assert out.shape == (2, M, 1, 1) and np.all(np.isfinite(out))


def test_a_way_back_to_other_locations_is_refused() -> None:
    """`[1, W, H, K]` on a `[1, H, W, C]` map puts the rows back elsewhere: nothing follows the input."""
    model = _tensordot_model(restore=[1, W, H, K])
    reason = (
        f"Reshape 'merge' bakes the spatial size into its target shape [{ROWS}, {C}], and its rows cannot "
        f"follow other sizes: Reshape 'restore' puts the rows back as [1, {W}, {H}, {K}], not at the locations "
        f"[1, {H}, {W}] of Reshape 'merge''s input (with {K} features)"
    )
    assert backbone_refusals(model) == [("merge", Code.TENSORDOT_LAYOUT, reason)]
    assert refused(model).exit_code == 3  # the head search refuses it too (rules/flatten_channel_last)


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("weight_left", "MatMul 'dot' takes the rows as its right operand, so it mixes them"),
        ("row_constant", "Mul 'scale' on the rows is not the same for each row"),
    ],
)
def test_ops_that_do_not_map_each_row_alone_are_refused(kind: str, detail: str) -> None:
    """A MatMul with the rows on the right mixes locations; a constant with one value per row (`[ROWS, 1]`)
    holds the exported count of locations."""
    if kind == "weight_left":
        model = _tensordot_model(weight_left=True, restore=[1, H, W, C])
    else:
        model = _tensordot_model(row_scale=(ROWS, 1))
    assert backbone_refusals(model) == [
        (
            "merge",
            Code.TENSORDOT_LAYOUT,
            f"Reshape 'merge' bakes the spatial size into its target shape [{ROWS}, {C}], and its rows cannot "
            f"follow other sizes: {detail}",
        )
    ]
    assert refused(model).exit_code == 3


def test_the_way_back_names_itself_when_the_merge_follows_the_input() -> None:
    """A merge written `[-1, C]` bakes nothing: the refusal of a mismatched way back names that Reshape."""
    model = _tensordot_model(merge=[-1, C], restore=[1, ROWS, 1, K])
    (node, code, reason) = backbone_refusals(model)[0]
    assert (node, code) == ("restore", Code.TENSORDOT_LAYOUT)
    assert reason.startswith(f"Reshape 'restore' bakes the spatial size into its target shape [1, {ROWS}, 1, {K}]")


def _pointwise_mlp(fixed: bool) -> onnx.ModelProto:
    """ConvNeXt's pointwise MLP as tf2onnx writes it: Tensordot to 2C -> GELU (`0.5x * (1 + erf(x/√2))`,
    whose last Mul reads two tensors) -> Tensordot back to C -> channel-first -> ReduceMean -> Gemm 'fc'."""
    g = GraphBuilder()
    image = g.input("input", [1, 3, 5, 6] if fixed else ["N", 3, "h", "w"])
    x = g.op("Transpose", [backbone(g, image, 3, C)], perm=[0, 2, 3, 1])
    for i, (c_in, c_out) in enumerate([(C, 2 * C), (2 * C, C)]):
        if fixed:
            rows_target, back_target = _ints(g, "rows", [ROWS, c_in]), _ints(g, "back", [1, H, W, c_out])
        else:
            rows_target = _ints(g, "rows", [-1, c_in])
            back_target = g.op("Concat", [_from_shape(g, x, 0, 3), _ints(g, "k", [c_out])], axis=0)
        rows = g.op("Reshape", [x, rows_target], name=f"merge{i}")
        dot = g.op("MatMul", [rows, g.const("w_dot", g.rand((c_in, c_out)))])
        x = g.op("Add", [g.op("Reshape", [dot, back_target], name=f"restore{i}"), g.const("b", g.rand((c_out,)))])
        if i == 0:
            half = g.op("Mul", [x, g.const("half", np.array(0.5, np.float32))])
            erf = g.op("Erf", [g.op("Mul", [x, g.const("scale", np.array(0.70710677, np.float32))])])
            x = g.op("Mul", [half, g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))])])
    back = g.op("Transpose", [x], perm=[0, 3, 1, 2])  # tf2onnx moves the residual Add to channel-first
    pooled = g.op("ReduceMean", [back], axes=[2, 3], keepdims=0)
    g.output(gemm(g, pooled, C, M, name="fc"))
    return g.build()


def test_two_tensordots_around_a_gelu_stay_in_the_backbone() -> None:
    """The second Tensordot reads the GELU, whose last Mul has two data inputs: it is still a layer of
    the backbone (no head candidate), and all four targets follow the input."""
    model = _pointwise_mlp(fixed=True)
    result = onnx_fc2conv.convert(model)
    assert result.verification.passed and len(result.heads) == 1
    assert [f.node for f in result.backbone_fixes] == ["merge0", "restore0", "merge1", "restore1"]
    oracle = _pointwise_mlp(fixed=False)
    for shape in [(2, 3, 5, 6), (2, 3, 9, 7)]:
        _equals_oracle(result.model, oracle, shape)
