"""Batch: batch 1 and batch 2 are verified whenever the converted model's batch is symbolic.

Where the original's batch is fixed, its reference for another batch is the original run image by
image (or by its fixed batch) and concatenated; a converted model that keeps a fixed batch is
verified at that batch only. The "converted" models here are written by hand (the original with
a symbolic batch, or with a fault), so that these tests pin verification, not the converter.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import GraphBuilder, backbone, gemm, image_model

import onnx_fc2conv
from onnx_fc2conv.verify.batch_noise import BATCH_NOISE_FACTOR
from onnx_fc2conv.verify.sessions import RunError, run, run_in_chunks, runtime_reason, session

C, M = 4, 3


def as_converted(model: onnx.ModelProto, *, batch: bool = True, spatial: bool = True) -> onnx.ModelProto:
    """The model as a conversion would claim it: its input's batch and spatial dims symbolic."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    dims = out.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
        if (axis == 0 and batch) or (axis > 0 and spatial):
            dims[axis].Clear()
            dims[axis].dim_param = name
    for o in out.graph.output:
        o.type.tensor_type.shape.dim[0].Clear()
        o.type.tensor_type.shape.dim[0].dim_param = "batch"
        for dim in o.type.tensor_type.shape.dim[1 + 2 * (not spatial) :]:
            dim.Clear()  # a larger input gives a larger map: its dims are unknown
    return out


def _pooled(tail: list[int] | None, batch: int | str = 1) -> onnx.ModelProto:
    """No FC layer: input [batch, 3, 6, 5] -> Conv/Relu -> GlobalAveragePool [-> Reshape `tail`]."""
    g = GraphBuilder()
    x = g.input("input", [batch, 3, 6, 5])
    y = g.op("GlobalAveragePool", [backbone(g, x, 3, C)])
    if tail is not None:
        y = g.op("Reshape", [y, g.const("target", np.array(tail, np.int64))], name="flat")
    g.output(y)
    return g.build()


def test_no_fc_model_with_batch_baked_into_a_reshape_fails_at_batch_2() -> None:
    """A symbolic batch claimed over a `Reshape [1, C]` (torch dynamo's tail): batch 2 cannot run."""
    original = _pooled([1, C])
    report = onnx_fc2conv.verify(original, as_converted(original))
    assert not report.passed
    assert [(c.check, c.input_shape[0], c.passed) for c in report.comparisons if c.check == "same size"] == [
        ("same size", 1, True),
        ("same size", 2, False),
    ]
    failure = report.failures[0]
    assert failure.output == "output"  # the output, never the input's name
    assert failure.note.startswith("the converted model cannot run: Reshape node 'flat': ")
    assert "{2,4,1,1}" in failure.note and "\n" not in failure.note
    # at larger sizes the converted model cannot run either: one row per output, same cause
    larger = [c for c in report.comparisons if c.check == "larger size"]
    assert [c.output for c in larger] == ["output", "output"] and not any(c.passed for c in larger)
    assert all("Reshape node 'flat'" in c.note for c in larger)


def test_no_fc_model_that_returns_one_image_for_two_fails() -> None:
    """`Reshape [1, -1]` runs at batch 2 but folds both images into one row: the output declared
    `[batch, ?]` returns one row for two images."""
    original = _pooled([1, -1])
    report = onnx_fc2conv.verify(original, as_converted(original))
    assert not report.passed
    failure = report.failures[0]
    note = f"declared shape [batch, ?], returns [1, {2 * C}]"
    assert (failure.check, failure.input_shape[0], failure.note) == ("declared shape", 2, note)
    # without the declaration, the comparison itself catches it by shape
    converted = as_converted(original)
    converted.graph.output[0].type.tensor_type.ClearField("shape")
    failure = onnx_fc2conv.verify(original, converted).failures[0]
    assert (failure.check, failure.input_shape[0], failure.note) == ("same size", 2, f"shape [1, {2 * C}] != [2, {C}]")


def test_original_with_fixed_batch_is_run_image_by_image() -> None:
    original = _pooled([1, C])
    fixed = _pooled([-1, C])  # the same function, any batch
    report = onnx_fc2conv.verify(original, as_converted(fixed))
    assert report.passed, report
    same = [c for c in report.comparisons if c.check == "same size"]
    assert [c.input_shape for c in same] == [(1, 3, 6, 5), (2, 3, 6, 5)]
    assert "the original model's batch is fixed at 1: its outputs at batch 2 come from running it image by image" in (
        report.notes
    )


def test_original_fixed_at_batch_2_serves_batch_1() -> None:
    """An original exported for batch 2 (`Reshape [2, K]` with allowzero): batch 1 is padded to 2."""
    g = GraphBuilder(opset=14)
    x = g.input("input", [2, 3, 5, 4])
    feat = backbone(g, x, 3, C)
    k = C * 4 * 3
    flat = g.op("Reshape", [feat, g.const("target", np.array([2, k], np.int64))], allowzero=1)
    g.output(gemm(g, flat, k, M))
    model = g.build()
    result = onnx_fc2conv.convert(model)
    report = result.verification
    assert report.passed
    assert [c.input_shape[0] for c in report.comparisons if c.check == "same size"] == [1, 2]
    assert any("fixed at 2: its outputs at batch 1 come from running it 2 images at a time" in n for n in report.notes)


def test_original_with_symbolic_batch_that_cannot_run_two_images() -> None:
    """An input [N, ...] over a `Reshape [1, C]`: the original's own batch 2 is run image by image."""
    original = _pooled([1, C], batch="N")
    report = onnx_fc2conv.verify(original, as_converted(_pooled([-1, C], batch="N")))
    assert report.passed, report
    assert [c.input_shape[0] for c in report.comparisons if c.check == "same size"] == [1, 2]
    note = next(n for n in report.notes if n.startswith("the original model was run image by image"))
    assert note.startswith("the original model was run image by image (at batch 2: Reshape node 'flat': ")


def test_converted_model_with_fixed_batch_is_verified_at_that_batch_only() -> None:
    model = image_model(lambda g, x, k: gemm(g, x, k, M), batch=1)
    converted = onnx_fc2conv.convert(model).model
    converted.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    converted.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    report = onnx_fc2conv.verify(model, converted)
    assert report.passed
    assert {c.input_shape[0] for c in report.comparisons} == {1}
    assert [c.check for c in report.comparisons] == ["same size", "larger size", "larger size"]
    assert "the converted model keeps a fixed batch of 1: verified at batch 1 only" in report.notes


# --------------------------------------------------------------------------- running in chunks


@pytest.fixture(scope="module")
def batch_two_model() -> ort.InferenceSession:
    """y = x * 2 + sum over the image, for a batch fixed at 2 (`Reshape [2, -1]`)."""
    g = GraphBuilder()
    x = g.input("x", [2, 3])
    doubled = g.op("Mul", [x, g.const("two", np.array(2, np.float32))])
    rows = g.op("Reshape", [x, g.const("t", np.array([2, -1], np.int64))])
    total = g.op("ReduceSum", [rows, g.const("axes", np.array([1], np.int64))], keepdims=1)
    g.output(g.op("Add", [doubled, total]), "y")
    return session(g.build())


def test_run_in_chunks_pads_the_last_chunk(batch_two_model: ort.InferenceSession) -> None:
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    y = run_in_chunks(batch_two_model, {"x": x}, "the model", 2)["y"]
    np.testing.assert_allclose(y, x * 2 + x.sum(axis=1, keepdims=True))


def test_run_names_the_node_and_shapes_in_one_line(batch_two_model: ort.InferenceSession) -> None:
    with pytest.raises(RunError) as caught:
        run(batch_two_model, {"x": np.zeros((3, 3), np.float32)}, "the model")
    text = str(caught.value)
    assert text.startswith("the model cannot run: ") and "\n" not in text
    assert "input: x" in text and "Got: 3 Expected: 2" in text


def test_runtime_reason_keeps_node_and_shapes() -> None:
    exc = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. Name:'bake' "
        "Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 "
        "onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, "
        "bool) input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the "
        "requested shape. Input shape:{1,3,5,5}, requested shape:{1,2,12,4,3}\n"
    )
    assert runtime_reason(exc) == (
        "Reshape node 'bake': The input tensor cannot be reshaped to the requested shape. "
        "Input shape:{1,3,5,5}, requested shape:{1,2,12,4,3}"
    )


def _batch_model(eps: float, mixing: bool) -> onnx.ModelProto:
    """`_pooled([-1, C])` plus, at batch N, `eps * (N - 1) * y` (the output follows the batch size
    alone, as the runtime's noise does), or with `mixing` `eps * (mean over the batch - y)` (each
    image's output follows the others): both exact image by image."""
    g = GraphBuilder(opset=18)
    x = g.input("input", ["N", 3, 6, 5])
    y = g.op("GlobalAveragePool", [backbone(g, x, 3, C)])
    y = g.op("Reshape", [y, g.const("target", np.array([-1, C], np.int64))])
    batch_axis = g.const("batch_axis", np.array([0], np.int64))
    if mixing:
        extra = g.op("Sub", [g.op("ReduceMean", [y, batch_axis]), y])
    else:
        ones = g.op(
            "Add", [g.op("Mul", [y, g.const("zero", np.array(0, np.float32))]), g.const("one", np.array(1, np.float32))]
        )
        count = g.op("ReduceSum", [ones, batch_axis])
        extra = g.op("Mul", [g.op("Sub", [count, g.const("one_", np.array(1, np.float32))]), y])
    g.output(g.op("Add", [y, g.op("Mul", [extra, g.const("eps", np.array(eps, np.float32))])]))
    return g.build()


def _rows(report) -> list[tuple[str, int, bool]]:  # type: ignore[no-untyped-def]
    return [(c.check, c.input_shape[2], c.passed) for c in report.comparisons]


AT_9X7 = onnx_fc2conv.ConvertOptions(sizes=((9, 7),))
SPLIT_NOTE = "at batch 2 the converted model is compared with the original on the same runs (image by image), "


def test_batch_noise_of_the_runtime_is_told_apart_from_the_rewrite() -> None:
    """Against an original run image by image, a batch-2 error over the bound is split: the converted
    model image by image against the original (the usual bound), on a batch of its first image
    against the whole batch (the usual bound: the images are independent), and on the whole batch
    against itself image by image (100x the bound: the runtime sums a batch in another order). At the
    larger size too, where the original (no FC layer) is the reference and runs image by image."""
    original = _pooled([1, C])
    converted = as_converted(_batch_model(4e-4, mixing=False))
    report = onnx_fc2conv.verify(original, converted, AT_9X7)
    assert report.passed, report
    assert _rows(report) == [
        ("same size", 6, True),
        ("same size", 6, True),
        ("independence", 6, True),
        ("batch", 6, True),
        ("larger size", 9, True),
        ("independence", 9, True),
        ("batch", 9, True),
    ]
    for rewrite, alone, batch in (report.comparisons[1:4], report.comparisons[4:7]):
        assert rewrite.max_abs == 0.0 and alone.max_abs == 0.0  # the same runs, the same sums
        assert 1 / BATCH_NOISE_FACTOR < batch.ratio < 1  # over the usual bound, within the batch row's
    assert any(n.startswith(SPLIT_NOTE) for n in report.notes)
    # the same numbers against an original that runs the whole batch are not split: they fail
    report = onnx_fc2conv.verify(_pooled([-1, C], batch="N"), converted, AT_9X7)
    assert _rows(report) == [("same size", 6, True), ("same size", 6, False), ("larger size", 9, False)]
    assert not any(n.startswith(SPLIT_NOTE) for n in report.notes)


@pytest.mark.parametrize("eps", [4e-3, 0.5])
def test_a_model_that_mixes_its_images_fails_however_little(eps: float) -> None:
    """A mix over the usual bound fails, also within the batch row's bound (4e-3: 2-5x the usual one):
    the first image's outputs move when the other image changes."""
    report = onnx_fc2conv.verify(_pooled([1, C]), as_converted(_batch_model(eps, mixing=True)), AT_9X7)
    assert not report.passed
    failed = {(c.check, c.input_shape[2]) for c in report.failures}
    assert {("independence", 6), ("independence", 9)} <= failed
    assert all(c.passed for c in report.comparisons if c.check in ("same size", "larger size"))
    first = report.failures[0]
    assert report.failure_line().startswith(
        f"verification FAILED: output 'output' ({first.check}, input [2, 3, 6, 5]): "
    )


def test_the_larger_size_reference_runs_a_fixed_batch_backbone_image_by_image() -> None:
    """`Reshape [1, C, -1]` (tokens) bakes the exported batch but runs at batch 2, folding both images
    into one sequence. The conversion makes it copy the batch; the reference at the larger sizes runs
    the original backbone by its fixed batch, as at the same size, not both images at once."""
    g = GraphBuilder(opset=18)
    x = g.input("input", [1, 3, 6, 5])
    t = g.op("Reshape", [backbone(g, x, 3, C), g.const("tokens", np.array([1, C, -1], np.int64))])
    pooled = g.op("ReduceMean", [g.op("Sin", [t]), g.const("axes", np.array([2], np.int64))], keepdims=0)
    g.output(gemm(g, pooled, C, M))
    result = onnx_fc2conv.convert(g.build())
    report = result.verification
    assert report.passed, report
    larger = [c for c in report.comparisons if c.check == "larger size"]
    assert len(larger) == 2 and all(c.shape[0] == 2 and c.max_abs < 1e-5 for c in larger)


def test_a_dense_mean_against_an_original_run_image_by_image_is_split_too() -> None:
    """The cell mean of a map that follows the batch size alone (runtime noise) passes once split;
    the rows compare cell means."""
    from onnx_fc2conv.verify.batch_noise import cell_mean, split_batch_noise
    from onnx_fc2conv.verify.compare import Tolerance, compare

    g = GraphBuilder(opset=18)
    x = g.input("input", ["N", C])
    batch_axis = g.const("batch_axis", np.array([0], np.int64))
    ones = g.op(
        "Add", [g.op("Mul", [x, g.const("zero", np.array(0, np.float32))]), g.const("one", np.array(1, np.float32))]
    )
    factor = g.op(
        "Add",
        [
            g.op("Mul", [g.op("ReduceSum", [ones, batch_axis]), g.const("eps", np.array(4e-4, np.float32))]),
            g.const("base", np.array(1 - 4e-4, np.float32)),
        ],
    )
    scaled = g.op("Mul", [x, factor])  # x * (1 + eps * (N - 1))
    cells = g.op(
        "Expand",
        [
            g.op("Unsqueeze", [scaled, g.const("axes", np.array([2, 3], np.int64))]),
            g.const("map", np.array([1, 1, 2, 3], np.int64)),
        ],
    )
    g.output(cells, shape=["N", C, 2, 3])
    sess = ort.InferenceSession(g.build().SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": np.random.default_rng(0).standard_normal((2, C)).astype(np.float32) + 3}
    expected = {"output": feeds["input"]}
    actual = run(sess, feeds, "map")
    found = [
        compare(
            cell_mean(actual["output"], expected["output"]),
            expected["output"],
            Tolerance(),
            check="dense mean",
            output="output",
            input_shape=(2, C),
        )
    ]
    assert not found[0].passed  # over the usual bound at batch 2
    rows, notes = split_batch_noise(found, expected, actual, (sess, feeds, 1), Tolerance(), {}, cell_mean)
    assert [(c.check, c.passed, c.shape) for c in rows] == [
        ("dense mean", True, (2, C)),
        ("independence", True, (1, C)),
        ("batch", True, (2, C)),
    ]
    assert rows[0].max_abs < 1e-6 and len(notes) == 1
