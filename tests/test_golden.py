"""Golden models from real exporters (models/manifest.json): every one converts, verifies, keeps its names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import assert_close, convert, dims, ops, run
from click.testing import CliRunner
from onnx import numpy_helper

import onnx_fc2conv
from onnx_fc2conv.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
# The FC heads the tool handles; models that reproduce an open issue's pattern ("issue" set) get their own tests.
FILES = [entry["file"] for entry in MANIFEST if entry["issue"] is None]

# The flatten ops the matcher must report for each exporter's head (the ops between the feature
# map and the first FC). The rest of the expected pattern is derived from the manifest's head.
FLATTEN_OPS = {
    "question_mlp.onnx": ("input",),
    "ts_mean_head.onnx": ("ReduceMean",),
    "dynamo_mean_head.onnx": ("ReduceMean",),
    "ts_view_head.onnx": ("Reshape",),
    "ts_view_head_dynbatch.onnx": ("Reshape",),
    "keras_flatten.onnx": ("Transpose", "Reshape"),
    "keras_dense_bn.onnx": ("Transpose", "Reshape"),
    "keras_gap.onnx": ("Squeeze",),
}
for _f in FILES:
    FLATTEN_OPS.setdefault(_f, ("Reshape",) if _f.startswith("dynamo_") else ("Flatten",))

POOLED = {  # global-pool heads: the output map is always 1 x 1
    "ts_resnet_gap.onnx", "dynamo_resnet_gap.onnx", "ts_convnext_head.onnx", "dynamo_convnext_head.onnx",
    "ts_mobilenetv3_head.onnx", "dynamo_mobilenetv3_head.onnx", "ts_mean_head.onnx", "dynamo_mean_head.onnx",
    "keras_gap.onnx",
}  # fmt: skip


def _expected(entry: dict) -> tuple[str, list[str]]:
    """(description, tail op types) the matcher must report, from the manifest's head sequence."""
    tokens = entry["head"].split(" -> ")
    first = tokens.index("Gemm")
    flatten = FLATTEN_OPS[entry["file"]]
    if flatten != ("input",):
        # the reported flatten ops sit right before the first FC in the exporter's head
        assert tuple(tokens[first - len(flatten) : first]) == flatten, entry["head"]
    gemms = [t for t in tokens if t == "Gemm"]
    tail = [t for t in tokens[first:] if t != "Gemm"]
    return " -> ".join([*flatten, *gemms]), tail


def test_manifest_lists_every_model_file() -> None:
    assert sorted(e["file"] for e in MANIFEST) == sorted(p.name for p in MODELS.glob("*.onnx"))


@pytest.mark.parametrize("name", FILES)
def test_golden_inspect_pattern(name: str) -> None:
    entry = next(e for e in MANIFEST if e["file"] == name)
    description, tail = _expected(entry)
    found = onnx_fc2conv.inspect(str(MODELS / name))
    assert found.skipped == [] and found.backbone_refusals == []
    assert len(found.heads) == 1
    head = found.heads[0]
    assert head.description == description
    assert [t.op for t in head.tail] == tail
    assert found.opset == entry["opset"]
    assert list(head.outputs) == entry["output_names"]
    result = CliRunner().invoke(main, ["inspect", str(MODELS / name)])
    assert result.exit_code == 0, result.output
    assert f"head 1: {description}" in result.stdout.splitlines()


@pytest.mark.parametrize("name", FILES)
def test_golden_convert_and_verify(name: str) -> None:
    entry = next(e for e in MANIFEST if e["file"] == name)
    model = onnx.load(str(MODELS / name))
    result = convert(model)
    out = result.model
    assert [i.name for i in out.graph.input] == [entry["input_name"]]
    assert [o.name for o in out.graph.output] == entry["output_names"]
    assert out.opset_import[0].version == entry["opset"]
    checks = [c.check for c in result.verification.comparisons]
    assert checks.count("larger size") >= 2
    # the converted batch is symbolic: batch 1 and 2 are verified, whatever the original's batch
    assert [c.input_shape[0] for c in result.verification.comparisons if c.check == "same size"] == [1, 2]
    batched = not isinstance(entry["input_shape"][0], int)
    image_by_image = "its outputs at batch 2 come from running it image by image"
    assert any(image_by_image in n for n in result.verification.notes) == (not batched)
    in_dims = dims(out.graph.input[0])
    assert in_dims[0] == "batch"
    if name.startswith("keras_"):
        assert in_dims[1:3] == ["height", "width"] and in_dims[3] == entry["input_shape"][3]
    else:
        assert in_dims[1] == entry["input_shape"][1] and in_dims[2:] == ["height", "width"]
    m = result.rewrites[0].layers[-1].kernel_shape[0]
    spatial = [1, 1] if name in POOLED else ["out_height", "out_width"]
    assert dims(out.graph.output[0]) == ["batch", m, *spatial]
    assert "Gemm" not in ops(out) and "Flatten" not in ops(out)


@pytest.mark.parametrize("name", ["ts_lenet5.onnx", "dynamo_view_head.onnx", "keras_flatten.onnx"])
def test_golden_convert_file_keeps_names(name: str, tmp_path) -> None:
    entry = next(e for e in MANIFEST if e["file"] == name)
    target = tmp_path / "out.onnx"
    result = onnx_fc2conv.convert_file(MODELS / name, target)
    written = onnx.load(str(target))
    onnx.checker.check_model(written, full_check=True)
    assert [i.name for i in written.graph.input] == [entry["input_name"]]
    assert [o.name for o in written.graph.output] == entry["output_names"]
    assert ops(written) == ops(result.model)


# ------------------------------------------------------------------------------------------------
# VGG: the converted map equals an independent reference (original backbone + numpy head)


def _feature_extractor(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """The original model with any input size and `tensor` as an extra output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for i in (2, 3):
        dim = out.graph.input[0].type.tensor_type.shape.dim[i]
        dim.Clear()
        dim.dim_param = f"s{i}"
    producer = next(i for i, n in enumerate(out.graph.node) if tensor in n.output)
    del out.graph.node[producer + 1 :]  # the nodes after the feature map (the head) go
    del out.graph.output[:]
    out.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return out


def _numpy_head(model: onnx.ModelProto, window: np.ndarray) -> np.ndarray:
    """The original Gemm -> Relu -> Gemm -> Relu -> Gemm head on one flattened window, in numpy."""
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    y = window.reshape(window.shape[0], -1).astype(np.float64)
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    for i, node in enumerate(gemms):
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        w = weights[node.input[1]]
        w = w.T if a.get("transB", 0) else w
        y = a.get("alpha", 1.0) * (y @ w) + a.get("beta", 1.0) * weights[node.input[2]]
        if i < len(gemms) - 1:
            y = np.maximum(y, 0)
    return y


@pytest.mark.parametrize("size", [(96, 80), (80, 112)])
def test_vgg_dynbatch_equals_independent_reference(size: tuple[int, int]) -> None:
    model = onnx.load(str(MODELS / "ts_vgg_small_dynbatch.onnx"))
    result = convert(model, sizes=((96, 80), (80, 112)))
    assert [c.input_shape for c in result.verification.comparisons if c.check == "larger size"] == [
        (2, 3, 96, 80),
        (2, 3, 80, 112),
    ]
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    x = np.random.default_rng(7).standard_normal((2, 3, *size)).astype(np.float32)
    feature = run(_feature_extractor(model, flatten.input[0]), {"input": x})[flatten.input[0]]
    c, h, w = 16, 4, 4  # the exported feature map (64 x 64 input, four 2 x 2 pools)
    assert feature.shape == (2, c, size[0] // 16, size[1] // 16)
    grid = (feature.shape[2] - h + 1, feature.shape[3] - w + 1)
    expected = np.zeros((2, 10, *grid))
    for i in range(grid[0]):
        for j in range(grid[1]):
            expected[:, :, i, j] = _numpy_head(model, feature[:, :, i : i + h, j : j + w])
    got = run(result.model, {"input": x})["output"]
    assert got.shape == (2, 10, *grid)
    assert_close(got, expected.astype(np.float32), rtol=1e-4, atol=1e-4)
    # and at the exported size the map is 1 x 1 and equals the original output
    x0 = np.random.default_rng(8).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert_close(run(result.model, {"input": x0})["output"].reshape(2, 10), run(model, {"input": x0})["output"])
