"""Where and how weights are stored: dtypes, sharing, Constant / Identity nodes, old IR, external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import (
    GraphBuilder,
    assert_sliding,
    backbone,
    big_input,
    conv_params,
    convert,
    dims,
    gemm,
    image_model,
    initializer,
    ops,
    run,
)
from onnx import helper, numpy_helper

import onnx_fc2conv
from onnx_fc2conv.graph import constant, import_graph

C, H0, W0, M = 4, 4, 3, 5
K = C * H0 * W0


def _mk(w: np.ndarray, trans_b: int) -> np.ndarray:
    return w if trans_b else w.T


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fp16_model(trans_b: int) -> None:
    model = image_model(lambda g, x, k: g.op("Relu", [gemm(g, x, k, M, trans_b=trans_b)]), dtype=np.float16, opset=17)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu"]
    kernel, bias = conv_params(out)[1]
    assert kernel.dtype == np.float16 and bias.dtype == np.float16
    w = next(
        numpy_helper.to_array(t) for t in model.graph.initializer if t.dims and t.dims[0] in (M, K) and len(t.dims) == 2
    )
    np.testing.assert_array_equal(kernel, _mk(w, trans_b).reshape(M, C, H0, W0))
    assert out.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert_sliding(model, out, big_input((1, 3, 7, 6), dtype=np.float16), window=(5, 4), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_shared_weight_two_heads_not_corrupted(trans_b: int) -> None:
    """One initializer read by two Gemm nodes (two heads on one backbone)."""
    g = GraphBuilder()
    x = g.input("input", ["N", 3, 5, 4])
    feat = backbone(g, x, 3, C)
    w = g.const("shared_w", g.rand((M, K) if trans_b else (K, M)))
    b = g.const("shared_b", g.rand((M,)))
    y1 = g.op("Gemm", [g.op("Flatten", [feat], axis=1), w, b], transB=trans_b)
    y2 = g.op("Gemm", [g.op("Flatten", [g.op("Sigmoid", [feat])], axis=1), w, b], transB=trans_b)
    g.output(y1, "out1")
    g.output(y2, "out2")
    model = g.build()
    original_w = initializer(model, w).copy()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Sigmoid", "Conv"]  # each Gemm's Conv takes its place
    assert len(result.rewrites) == 2
    expected = _mk(original_w, trans_b).reshape(M, C, H0, W0)
    for kernel, bias in conv_params(out)[1:]:
        np.testing.assert_array_equal(kernel, expected)
        np.testing.assert_array_equal(bias, initializer(model, b))
    # the caller's model still holds the weight with its original dims
    np.testing.assert_array_equal(initializer(model, w), original_w)
    assert_sliding(model, out, big_input((2, 3, 7, 6)), window=(5, 4))


def test_shared_weight_tied_layers_in_one_chain() -> None:
    """Weight tying: the same [6, 6] weight in a later FC used twice (pooled map, 1 x 1 kernels)."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 5, 4])
    feat = backbone(g, x, 3, 6, pad=True)
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [feat])], axis=1)
    w = g.const("tied", g.rand((6, 6)))
    y = g.op("Relu", [g.op("Gemm", [flat, w], transB=1)])
    y = g.op("Gemm", [y, w], transB=1)
    g.output(y)
    model = g.build()
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "GlobalAveragePool", "Conv", "Relu", "Conv"]
    for kernel, _ in conv_params(out)[1:]:
        np.testing.assert_array_equal(kernel, initializer(model, w).reshape(6, 6, 1, 1))


def _weights_as(kind: str) -> onnx.ModelProto:
    """Gemm weight and bias held in Constant nodes or reached through Identity nodes."""
    model = image_model(lambda g, x, k: gemm(g, x, k, M, trans_b=1, name="fc"))
    graph = model.graph
    fc = next(n for n in graph.node if n.name == "fc")
    moved = [t for t in graph.initializer if t.name in fc.input[1:]]
    for t in moved:
        graph.initializer.remove(t)
    new_nodes = []
    for t in moved:
        if kind == "constant":
            new_nodes.append(helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t))
        else:
            stored = onnx.TensorProto()
            stored.CopyFrom(t)
            stored.name = f"{t.name}_stored"
            graph.initializer.append(stored)
            mid = f"{t.name}_mid"
            new_nodes.append(helper.make_node("Identity", [stored.name], [mid], name=f"id1_{t.name}"))
            new_nodes.append(helper.make_node("Identity", [mid], [t.name], name=f"id2_{t.name}"))
    index = list(graph.node).index(fc)
    for i, node in enumerate(new_nodes):
        graph.node.insert(index + i, node)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("kind", ["constant", "identity"])
def test_weights_in_constant_or_identity_nodes(kind: str) -> None:
    model = _weights_as(kind)
    fc = next(n for n in model.graph.node if n.name == "fc")
    w_value = onnx_fc2conv.inspect(model)  # the matcher sees through both forms
    assert w_value.heads and not w_value.skipped
    tensors = import_graph(model).tensors()
    w = constant(tensors[fc.input[1]])
    b = constant(tensors[fc.input[2]])
    result = convert(model)
    out = result.model
    # the weight's Constant / Identity nodes went with the Gemm (the kernel is a new initializer);
    # the [M] bias is a valid Conv bias as it is, so the nodes producing it stay
    bias_nodes = ["Constant"] if kind == "constant" else ["Identity", "Identity"]
    assert ops(out) == ["Conv", "Relu", *bias_nodes, "Conv"]
    conv = out.graph.node[-1]
    np.testing.assert_array_equal(initializer(out, conv.input[1]), w.reshape(M, C, H0, W0))
    np.testing.assert_array_equal(constant(import_graph(out).tensors()[conv.input[2]]), b)
    assert_sliding(model, out, big_input((1, 3, 6, 7)), window=(5, 4))


def test_initializers_listed_as_inputs_ir3_opset9() -> None:
    g = GraphBuilder(opset=9)
    x = g.input("input", [1, 3, 5, 4])
    feat = backbone(g, x, 3, C)
    flat = g.op("Flatten", [feat], axis=1)
    y = g.op("Relu", [gemm(g, flat, K, 6, trans_b=1)])
    g.output(gemm(g, y, 6, M, trans_b=1), shape=[1, M])
    model = g.build(ir_version=3, check=False)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(model, full_check=True)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu", "Conv"]
    assert out.ir_version == 3 and out.opset_import[0].version == 9
    # every initializer still declared as an input carries the dims of the initializer it names
    inits = {t.name: list(t.dims) for t in out.graph.initializer}
    declared = {i.name: dims(i) for i in out.graph.input if i.name in inits}
    assert declared == {n: d for n, d in inits.items() if n in declared}
    assert len(declared) == len(inits)
    assert dims(out.graph.input[0]) == ["batch", 3, "height", "width"]
    assert [k.shape for k, _ in conv_params(out)[1:]] == [(6, C, H0, W0), (M, 6, 1, 1)]
    x_big = big_input((1, 3, 6, 6))
    assert_sliding(model, out, x_big, window=(5, 4))


def test_external_data_path(tmp_path) -> None:
    model = image_model(lambda g, x, k: g.op("Relu", [gemm(g, x, k, M, trans_b=1)]))
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)  # fmt: skip
    data = (tmp_path / "ext.onnx.data").read_bytes()
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    result = onnx_fc2conv.convert(str(path))
    assert result.verification is not None and result.verification.passed
    out = result.model
    assert ops(out) == ["Conv", "Relu", "Conv", "Relu"]
    fc = next(n for n in model.graph.node if n.op_type == "Gemm")
    kernel, bias = conv_params(out)[1]
    np.testing.assert_array_equal(kernel, weights[fc.input[1]].reshape(M, C, H0, W0))
    np.testing.assert_array_equal(bias, weights[fc.input[2]])
    assert (tmp_path / "ext.onnx.data").read_bytes() == data  # the input's data file is untouched
    x = big_input((1, 3, 5, 4))
    assert run(out, {"input": x})["output"].shape == (1, M, 1, 1)
    # and through the file API: written, verified, readable
    target = tmp_path / "out.onnx"
    onnx_fc2conv.convert_file(str(path), str(target))
    written = onnx.load(str(target))
    onnx.checker.check_model(written, full_check=True)
    assert ops(written) == ["Conv", "Relu", "Conv", "Relu"]
    assert (tmp_path / "ext.onnx.data").read_bytes() == data


def test_ir3_new_kernels_are_declared_as_inputs_too() -> None:
    """transB=0 weights are copied into new kernels; before IR 4 each initializer is a graph input."""
    g = GraphBuilder(opset=9)
    feat = backbone(g, g.input("input", [1, 3, 5, 4]), 3, C)
    y = g.op("Relu", [gemm(g, g.op("Flatten", [feat], axis=1), K, 6, trans_b=0)])
    g.output(gemm(g, y, 6, M, trans_b=0), shape=[1, M])
    model = g.build(ir_version=3, check=False)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    out = convert(model).model
    inits = {t.name: list(t.dims) for t in out.graph.initializer}
    assert {i.name: dims(i) for i in out.graph.input if i.name in inits} == inits
    onnx.checker.check_model(out, full_check=True)
