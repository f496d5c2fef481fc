"""Golden exports of the cases real models showed: each converts, and verification ran every claim
(batch 2 where the batch is symbolic, two larger sizes the model accepts), or it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnx_fc2conv

MODELS = Path(__file__).resolve().parent.parent / "models"

# file -> (relaxed input shape, valid sizes, fix the report names or None)
CONVERTS = {
    "dynamo_squeezenet.onnx": (
        ("batch", 3, "height", "width"),
        "48+ x 48+",
        "target [1, 10] -> Concat(Shape(input)[0:1], [10])",
    ),
    "dynamo_dla_head.onnx": (
        ("batch", 3, "height", "width"),
        "32+ x 32+",
        "target [1, -1] -> Concat(Shape(input)[0:1], [-1])",
    ),
    "ts_eca.onnx": (("batch", 3, "height", "width"), "32+ x 32+", "target [1, -1, 1, 1] -> [0, -1, 1, 1]"),
    "ts_groupnorm1.onnx": (("batch", 3, "height", "width"), "32+ x 32+", None),
    "dynamo_eca.onnx": (("batch", 3, "height", "width"), "32+ x 32+", "the operand it is expanded against"),
    "dynamo_groupnorm1.onnx": (("batch", 3, "height", "width"), "32+ x 32+", "its reshape round trip started from"),
    "ts_weight_standardization.onnx": (("batch", 3, "height", "width"), "32+ x 32+", None),
    "ts_hrnet_two_branch.onnx": (("batch", 3, "height", "width"), "32+4k x 32+4k", None),
    "ts_shufflenetv2.onnx": (("batch", 3, "height", "width"), "64+ x 64+", None),
    "ts_pool_conv_head.onnx": (("batch", 3, "height", "width"), "32+ x 32+", None),
    "keras_preprocessing.onnx": (("batch", "height", "width", 3), "32+ x 32+", None),
    "keras_uint8_input.onnx": (("batch", "height", "width", 3), "29+ x 29+", None),
    "keras_one_by_one_concat.onnx": (("batch", "height", "width", 3), "16+ x 16+", "its input's own shape: Identity"),
    "keras_mnist_dynbatch.onnx": (("batch", "height", "width", 1), "26+ x 26+", "moves only unit dims"),
    # the first Pad is folded for the exported size: fixed or "same" agree at 40 + 8k only
    "ts_timm_same_pad.onnx": (("batch", 3, "height", "width"), "40+8k x 40+8k", None),
    "keras_same_pad_strided.onnx": (("batch", "height", "width", 3), "40+ x 40+", "-> auto_pad=SAME_UPPER"),
    "keras_reduce_mean_op18.onnx": (("batch", "height", "width", 3), "32+ x 32+", None),
    "keras_mobilenet_v1_head.onnx": (("batch", "height", "width", 3), "32+ x 32+", None),
    "keras_dense_on_map.onnx": (("batch", "height", "width", 3), "32+ x 32+", None),
    "keras_dense_on_map_batch1.onnx": (("batch", "height", "width", 3), "32+ x 32+", "target [49, 16] -> [-1, 16]"),
    "ts_transform_input.onnx": (("batch", 3, "height", "width"), "32+ x 32+", None),
    "dynamo_transform_input.onnx": (("batch", 3, "height", "width"), "32+ x 32+", None),
}


@pytest.mark.parametrize("name", list(CONVERTS))
def test_converts_and_every_claim_is_verified(name: str) -> None:
    shape, sizes, fix = CONVERTS[name]
    result = onnx_fc2conv.convert(str(MODELS / name))
    assert result.relaxed_inputs[0].new_shape == shape
    assert result.valid_sizes.describe() == sizes
    if fix is not None:
        assert any(fix in f.change for f in result.backbone_fixes), result.backbone_fixes
    checks = {(c.check, c.input_shape[0]) for c in result.verification.comparisons}
    assert {("same size", 1), ("same size", 2), ("larger size", 2)} <= checks
    larger = [tuple(c.input_shape) for c in result.verification.comparisons if c.check == "larger size"]
    axes = [i for i, d in enumerate(shape) if d in ("height", "width")]
    assert len({s for s in larger}) >= 2
    assert all(result.valid_sizes.accepts(tuple(s[a] for a in axes)) for s in larger)


def test_a_head_that_folds_the_batch_keeps_the_exported_batch() -> None:
    """timm's NormMlpClassifierHead through dynamo: `Reshape [-1]` mixes the batch with the channels."""
    result = onnx_fc2conv.convert(str(MODELS / "dynamo_timm_convnext_head.onnx"))
    assert result.relaxed_inputs[0].new_shape == (1, 3, "height", "width")
    assert any(n.startswith("the batch stays as exported: Reshape") for n in result.notices)
    assert {c.input_shape[0] for c in result.verification.comparisons} == {1}


def test_a_head_on_the_pooled_vector_never_blocks_the_conversion() -> None:
    """Pool -> LayerNorm -> Linear: the FC layer stays on the pooled vector, which fits any size."""
    path = str(MODELS / "ts_pooled_layernorm_head.onnx")
    result = onnx_fc2conv.convert(path)
    assert result.relaxed_inputs[0].new_shape == ("batch", 3, "height", "width")
    assert [n.split(":")[0] for n in result.notices] == ["head /fc/Gemm stays on the pooled vector as it is"]
    assert {(c.check, c.input_shape[0]) for c in result.verification.comparisons} >= {("larger size", 2)}
    # with --dense the LayerNorm over the channels moves in front of the pool (test_dense_pointwise.py)


def test_a_dense_layer_on_the_channel_last_map_gives_a_class_map_in_dense_mode() -> None:
    """Keras Dense on the NHWC map (a Tensordot) before the pool: the pool goes, the classifier runs
    at every location of the Tensordot's output, transposed to channel-first."""
    result = onnx_fc2conv.convert(str(MODELS / "keras_dense_on_map.onnx"), onnx_fc2conv.ConvertOptions(dense=True))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops[-4:] == ["Add", "Relu", "Transpose", "Conv"] and "ReduceMean" not in ops
    rows = {(c.check, tuple(c.input_shape), tuple(c.shape)) for c in result.verification.comparisons}
    assert ("dense mean", (2, 32, 32, 3), (2, 10)) in rows
    assert ("larger size", (2, 48, 41, 3), (2, 10, 11, 9)) in rows


@pytest.mark.parametrize("dense", [False, True])
def test_a_tensordot_exported_with_a_fixed_batch_follows_the_input(dense: bool) -> None:
    """The same Dense on the map exported with a batch of 1: tf2onnx writes the Tensordot's targets as
    constants `[49, 16]` and `[1, 7, 7, 12]`; both are rebuilt, and the head behind the Tensordot (or,
    with --dense, on its map) is verified at batch 2 and two larger sizes."""
    path = str(MODELS / "keras_dense_on_map_batch1.onnx")
    result = onnx_fc2conv.convert(path, onnx_fc2conv.ConvertOptions(dense=dense))
    assert [(f.node, f.change.split(" -> ")[0]) for f in result.backbone_fixes] == [
        ("model/dense/Tensordot/Reshape", "target [49, 16]"),
        ("model/dense/Tensordot", "target [1, 7, 7, 12]"),
    ]
    ops = [n.op_type for n in result.model.graph.node]
    assert ops[-3:] == (["Relu", "Transpose", "Conv"] if dense else ["Transpose", "ReduceMean", "Conv"])
    rows = {(c.check, tuple(c.input_shape), tuple(c.shape)) for c in result.verification.comparisons}
    first = "dense mean" if dense else "same size"
    assert (first, (2, 32, 32, 3), (2, 10)) in rows
    larger = (2, 10, 11, 9) if dense else (2, 10, 1, 1)
    assert ("larger size", (2, 48, 41, 3), larger) in rows
    assert result.verification.passed
