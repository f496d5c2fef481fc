"""Window geometry against brute force: perturb one input pixel, see which output cells change."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_fc2conv import ConvertOptions, convert, window_geometry
from onnx_fc2conv.geometry import Geometry, output_geometry

RNG_SEED = 7


def _backbone_model(layers: list[dict], in_hw: tuple[int, int], classes: int = 3, channels: int = 2) -> onnx.ModelProto:
    """Input [1, 1, H, W] -> the given Conv/AveragePool layers (with Tanh) -> Flatten -> Gemm."""
    rng = np.random.default_rng(RNG_SEED)
    nodes, inits = [], []
    x, c = "x", 1
    for i, layer in enumerate(layers):
        out = f"t{i}"
        if layer["op"] == "Conv":
            k = layer["k"]
            scale = 0.5 / np.sqrt(c * k * k)  # keeps Tanh in its linear range: every tap shows
            w = numpy_helper.from_array((scale * rng.standard_normal((channels, c, k, k))).astype(np.float32), f"w{i}")
            inits.append(w)
            attrs = {
                "kernel_shape": [k, k],
                "strides": [layer.get("s", 1)] * 2,
                "pads": [layer.get("p", 0)] * 4,
                "dilations": [layer.get("d", 1)] * 2,
            }
            nodes.append(helper.make_node("Conv", [x, f"w{i}"], [out + "c"], **attrs))
            nodes.append(helper.make_node("Tanh", [out + "c"], [out]))
            c = channels
        else:
            k = layer["k"]
            nodes.append(
                helper.make_node(
                    "AveragePool",
                    [x],
                    [out],
                    kernel_shape=[k, k],
                    strides=[layer.get("s", k)] * 2,
                    pads=[layer.get("p", 0)] * 4,
                    count_include_pad=1,
                )
            )
        x = out
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, *in_hw])], [], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inferred = onnx.shape_inference.infer_shapes(model)
    feat = next(v for v in inferred.graph.value_info if v.name == x)
    fc_shape = [d.dim_value for d in feat.type.tensor_type.shape.dim]
    k = int(np.prod(fc_shape[1:]))
    model.graph.node.extend(
        [
            helper.make_node("Flatten", [x], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1),
        ]
    )
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((classes, k)).astype(np.float32), "fw"),
            numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fb"),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes]))
    onnx.checker.check_model(model)
    return model


BACKBONES = {
    "padding": ([{"op": "Conv", "k": 3, "p": 1}, {"op": "Conv", "k": 3, "p": 1}], (8, 8)),
    "stride": (
        [{"op": "Conv", "k": 3, "s": 2, "p": 1}, {"op": "Conv", "k": 3, "s": 2}, {"op": "Pool", "k": 2}],
        (16, 16),
    ),
    "dilation": (
        [{"op": "Conv", "k": 3}, {"op": "Conv", "k": 3, "d": 2, "p": 2}, {"op": "Conv", "k": 2, "s": 2}],
        (12, 12),
    ),
    "mixed": ([{"op": "Conv", "k": 5, "p": 2, "s": 2}, {"op": "Pool", "k": 3, "s": 2, "p": 1}], (13, 13)),
}


def _changed_cells(sess: ort.InferenceSession, x: np.ndarray, pixel: tuple[int, int]) -> set[tuple[int, int]]:
    base = sess.run(None, {"x": x})[0]
    bumped = x.copy()
    bumped[0, 0, pixel[0], pixel[1]] += 5.0
    diff = np.abs(sess.run(None, {"x": bumped})[0] - base).max(axis=(0, 1))
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(diff > 1e-6), strict=True)}


def _cells_seeing(geo: Geometry, grid: tuple[int, int], pixel: tuple[int, int]) -> set[tuple[int, int]]:
    cells = set()
    for i in range(grid[0]):
        for j in range(grid[1]):
            (r0, r1), (c0, c1) = geo.box((i, j))
            if r0 <= pixel[0] < r1 and c0 <= pixel[1] < c1:
                cells.add((i, j))
    return cells


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_geometry_matches_brute_force(name: str) -> None:
    layers, hw = BACKBONES[name]
    converted = convert(_backbone_model(layers, hw), ConvertOptions(verify=False)).model
    geo = output_geometry(converted)["y"]
    assert isinstance(geo, Geometry)
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    big = (hw[0] + 2 * geo.stride[0] + 3, hw[1] + 3 * geo.stride[1] + 1)
    x = np.random.default_rng(0).standard_normal((1, 1, *big)).astype(np.float32)
    grid = sess.run(None, {"x": x})[0].shape[2:]
    assert grid[0] > 1 and grid[1] > 1
    step = max(1, min(big) // 9)
    for r in range(0, big[0], step):
        for c in range(0, big[1], step):
            assert _changed_cells(sess, x, (r, c)) == _cells_seeing(geo, grid, (r, c)), (name, (r, c))


def test_geometry_values_for_a_known_stack() -> None:
    # conv 3x3 s2 p1: J=2, o=-1, R=3; conv 3x3 s2: J=4, R=3+2*2=7; avgpool 2: J=8, R=7+1*4=11.
    # On 16x16 the feature map is 1x1 (16 -> 8 -> 3 -> 1), so the head window adds nothing.
    layers, hw = BACKBONES["stride"]
    geo = window_geometry(_backbone_model(layers, hw))["y"]
    assert isinstance(geo, Geometry)
    assert geo.stride == (8, 8)
    # feature map of 16x16: 8 -> 3 -> 1 (pool 2): the head window is 1x1, so R is the backbone's field
    assert geo.receptive_field == (11, 11)
    assert geo.offset == (-1, -1)
    assert geo.box((1, 2)) == ((7, 18), (15, 26))


def test_crop_identity_without_padding() -> None:
    """CS231n: with no padding, cell (i, j) on a large image equals the original on the crop at (i*S, j*S)."""
    layers = [{"op": "Conv", "k": 3}, {"op": "Pool", "k": 2}, {"op": "Conv", "k": 3, "s": 2}]
    hw = (14, 14)
    original = _backbone_model(layers, hw)
    converted = convert(original, ConvertOptions()).model
    geo = output_geometry(converted)["y"]
    # 14 -> 12 -> 6 -> 2: the last rows and columns are never read, so the field is 12, not 14
    assert isinstance(geo, Geometry) and geo.offset == (0, 0) and geo.receptive_field == (12, 12)
    s = geo.stride
    orig = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    conv = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    big = np.random.default_rng(1).standard_normal((1, 1, hw[0] + 3 * s[0], hw[1] + 2 * s[1])).astype(np.float32)
    scores = conv.run(None, {"x": big})[0]
    assert scores.shape[2:] == (4, 3)
    for i in range(scores.shape[2]):
        for j in range(scores.shape[3]):
            crop = big[:, :, i * s[0] : i * s[0] + hw[0], j * s[1] : j * s[1] + hw[1]]
            np.testing.assert_allclose(scores[0, :, i, j], orig.run(None, {"x": crop})[0][0], rtol=1e-4, atol=1e-5)


def test_global_pool_output_has_no_window() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [
            numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
            numpy_helper.from_array(np.ones((3, 2), np.float32), "fw"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # an unnamed node is named by its first output
    assert window_geometry(model)["y"] == "GlobalAveragePool 'p' has no fixed window geometry"
    dense = window_geometry(model, ConvertOptions(dense=True))["y"]
    assert isinstance(dense, Geometry) and dense.stride == (1, 1) and dense.receptive_field == (3, 3)
