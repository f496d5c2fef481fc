"""Tiny ONNX graphs built in code, and the checks every conversion test shares.

Models are built with `onnx.helper` from seeded numpy weights. The standard image model is
`input [N, C_in, *S] -> Conv(kernel 2, no padding) -> Relu -> <flatten> -> <head>`; an unpadded,
stride-1 backbone is translation-equivariant, so the converted model's map at a larger size can be
checked against the *original* model run on every crop of the original size (`assert_sliding`),
which shares no code with the package's own verifier.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnx_fc2conv

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def rand(shape: Sequence[int], seed: int, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(tuple(shape)) * scale).astype(dtype)


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs; `build()` returns a checked model."""

    def __init__(self, opset: int = 17, seed: int = 0, dtype=np.float32) -> None:
        self.opset = opset
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self.arrays: dict[str, np.ndarray] = {}

    @property
    def elem(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.dtype)

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def rand(self, shape: Sequence[int], scale: float = 0.5) -> np.ndarray:
        self.seed += 1
        return rand(shape, self.seed, self.dtype, scale)

    def const(self, base: str, array: np.ndarray, *, exact_name: bool = False) -> str:
        name = base if exact_name else self.fresh(base)
        array = np.asarray(array)
        self.arrays[name] = array
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def input(self, name: str, shape: Sequence[int | str | None], elem: int | None = None) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem or self.elem, list(shape)))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, name: str | None = None, **attrs):
        name = name or self.fresh(op_type.lower())
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs if n_out > 1 else outs[0]

    def rename_output(self, tensor: str, new: str) -> str:
        """Make the node producing `tensor` write `new` instead (graph outputs get fixed names)."""
        for node in self.nodes:
            for i, out in enumerate(node.output):
                if out == tensor:
                    node.output[i] = new
        for node in self.nodes:
            for i, inp in enumerate(node.input):
                if inp == tensor:
                    node.input[i] = new
        return new

    def output(self, tensor: str, name: str = "output", elem: int | None = None, shape=None) -> str:
        if tensor != name:
            self.rename_output(tensor, name)
        self.outputs.append(helper.make_tensor_value_info(name, elem or self.elem, shape))
        return name

    def build(self, ir_version: int | None = None, check: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        if ir_version is not None:
            model.ir_version = ir_version
        elif self.opset <= 21:
            # the IR version matching the opset keeps older runtimes and the checker happy
            model.ir_version = min(model.ir_version, _IR_FOR_OPSET.get(self.opset, model.ir_version))
        _fill_output_shapes(model)
        if check:
            onnx.checker.check_model(model, full_check=True)
        return model


def _fill_output_shapes(model: onnx.ModelProto) -> None:
    """Outputs declared without a shape get the inferred one (old IR versions require a shape)."""
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return
    by_name = {o.name: o for o in inferred.graph.output}
    for out in model.graph.output:
        new = by_name.get(out.name)
        if not out.type.tensor_type.HasField("shape") and new is not None and new.type.tensor_type.HasField("shape"):
            out.type.CopyFrom(new.type)


_IR_FOR_OPSET = {9: 4, 11: 6, 13: 7, 15: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


# ------------------------------------------------------------------------------------------------
# Pieces


def backbone(g: GraphBuilder, x: str, c_in: int, c_out: int, rank: int = 2, pad: bool = False) -> str:
    """Conv (kernel 2, stride 1, no padding unless `pad`) -> Relu: spatial dims shrink by 1."""
    w = g.const("conv_w", g.rand((c_out, c_in, *([2] * rank))))
    b = g.const("conv_b", g.rand((c_out,)))
    pads = [0, 1] * rank if pad else [0] * (2 * rank)
    y = g.op("Conv", [x, w, b], kernel_shape=[2] * rank, pads=pads)
    return g.op("Relu", [y])


def bias_array(g: GraphBuilder, kind: str | None, m: int) -> np.ndarray | None:
    shapes = {"vec": (m,), "row": (1, m), "scalar0": (), "scalar1": (1,), "scalar11": (1, 1)}
    if kind is None:
        return None
    return g.rand(shapes[kind])


def gemm(
    g: GraphBuilder,
    x: str,
    k: int,
    m: int,
    *,
    trans_b: int = 1,
    alpha: float = 1.0,
    beta: float = 1.0,
    bias: str | None = "vec",
    name: str | None = None,
) -> str:
    """Gemm with a seeded weight; the weight array is stored as g.arrays[<weight name>]."""
    w = g.rand((m, k) if trans_b else (k, m))
    inputs = [x, g.const("fc_w", w)]
    b = bias_array(g, bias, m)
    if b is not None:
        inputs.append(g.const("fc_b", b))
    attrs: dict = {"transB": trans_b}
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    return g.op("Gemm", inputs, name=name, **attrs)


def matmul(g: GraphBuilder, x: str, k: int, m: int, *, bias: str | None = "vec", bias_first: bool = False) -> str:
    y = g.op("MatMul", [x, g.const("mm_w", g.rand((k, m)))])
    b = bias_array(g, bias, m)
    if b is None:
        return y
    bname = g.const("mm_b", b)
    return g.op("Add", [bname, y] if bias_first else [y, bname])


def image_model(
    head: Callable[[GraphBuilder, str, int], str],
    *,
    spatial: Sequence[int] = (5, 4),
    c_in: int = 3,
    c: int = 4,
    opset: int = 17,
    batch: int | str = "N",
    flatten: str = "Flatten",
    seed: int = 0,
    dtype=np.float32,
    out_elem: int | None = None,
) -> onnx.ModelProto:
    """`input [batch, c_in, *spatial] -> Conv/Relu -> flatten -> head(g, flat, K) -> output`."""
    g = GraphBuilder(opset=opset, seed=seed, dtype=dtype)
    x = g.input("input", [batch, c_in, *spatial])
    feat = backbone(g, x, c_in, c, rank=len(spatial))
    fshape = [c, *(s - 1 for s in spatial)]
    k = math.prod(fshape)
    if flatten == "Flatten":
        flat = g.op("Flatten", [feat], axis=1)
    elif flatten == "Reshape":
        flat = g.op("Reshape", [feat, g.const("shape", np.array([-1, k], np.int64))])
    else:
        raise ValueError(flatten)
    g.output(head(g, flat, k), elem=out_elem)
    return g.build()


# ------------------------------------------------------------------------------------------------
# Running and checking


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)


def conv_params(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(kernel, bias) of every Conv node, in graph order."""
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            bias = initializer(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
            out.append((initializer(model, node.input[1]), bias))
    return out


def convert(model: onnx.ModelProto, **options) -> onnx_fc2conv.ConversionResult:
    """Convert with verification and assert the invariants every successful conversion keeps."""
    before = model.SerializeToString()
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(**options))
    assert model.SerializeToString() == before, "convert() mutated its input model"
    assert result.verification is not None and result.verification.passed, result.verification
    checks = {c.check for c in result.verification.comparisons}
    assert "same size" in checks
    converted = result.model
    onnx.checker.check_model(converted, full_check=True)
    assert [i.name for i in converted.graph.input if i.name not in {t.name for t in converted.graph.initializer}] == [
        i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    ]
    assert [o.name for o in converted.graph.output] == [o.name for o in model.graph.output]
    assert not any(n.op_type in ("Gemm", "MatMul") for n in converted.graph.node)
    return result


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol)


def assert_sliding(
    original: onnx.ModelProto,
    converted: onnx.ModelProto,
    x: np.ndarray,
    window: Sequence[int],
    spatial_axes: Sequence[int] = (2, 3),
    *,
    input_name: str = "input",
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> dict[str, np.ndarray]:
    """converted(x)[..., *p] == original(crop of x at p) for every window position p.

    Holds exactly for a translation-equivariant (unpadded, stride-1) backbone. Returns the
    converted outputs.
    """
    actual = run(converted, {input_name: x})
    grid = [x.shape[a] - w + 1 for a, w in zip(spatial_axes, window, strict=True)]
    orig = session(original)
    names = [o.name for o in orig.get_outputs()]
    for name in names:
        assert list(actual[name].shape[-len(grid) :]) == grid, (name, actual[name].shape, grid)
    for pos in itertools.product(*(range(n) for n in grid)):
        index = [slice(None)] * x.ndim
        for a, p, w in zip(spatial_axes, pos, window, strict=True):
            index[a] = slice(p, p + w)
        expected = dict(zip(names, orig.run(None, {input_name: np.ascontiguousarray(x[tuple(index)])}), strict=True))
        for name in names:
            got = actual[name][(..., *pos)]
            assert_close(got.reshape(expected[name].shape), expected[name], rtol, atol)
    return actual


def relaxed(model: onnx.ModelProto, axes: Sequence[int] = (2, 3)) -> onnx.ModelProto:
    """A copy of an original model whose input accepts any size on `axes` (for size-free heads)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for a in axes:
        dim = out.graph.input[0].type.tensor_type.shape.dim[a]
        dim.Clear()
        dim.dim_param = f"free{a}"
    for o in out.graph.output:
        o.type.tensor_type.ClearField("shape")
    return out


def big_input(shape: Sequence[int], seed: int = 123, dtype=np.float32) -> np.ndarray:
    return rand(shape, seed, dtype)


def two_map_model() -> onnx.ModelProto:
    """Two heads on maps of different sizes and an output onnxruntime's symbolic shape inference
    cannot follow (com.microsoft `FusedMatMul`), so every output dim is named by its position:
    `input [1, 3, 8, 8] -> Conv 2x2 -> Relu` -> `Flatten -> Gemm` ('fine', a map of h - 7, w - 7)
    and `MaxPool 2x2 / 2 -> Flatten -> Gemm` ('coarse', a map of (h - 1) // 2 - 2); a 1x1 Conv of
    the input times its own transpose ('side', `FusedMatMul(c, c, transB=1)`, 2 x h x h)."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 8, 8])
    y = backbone(g, x, 3, 4)
    pooled = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    g.output(gemm(g, g.op("Flatten", [y], axis=1), 4 * 7 * 7, 5), "fine", shape=[1, 5])
    g.output(gemm(g, g.op("Flatten", [pooled], axis=1), 4 * 3 * 3, 5), "coarse", shape=[1, 5])
    side = g.op("Conv", [x, g.const("side_w", g.rand((2, 3, 1, 1)))], kernel_shape=[1, 1])
    g.output(g.op("FusedMatMul", [side, side], transB=1), "side", shape=[1, 2, 8, 8])
    model = g.build(check=False)
    next(n for n in model.graph.node if n.op_type == "FusedMatMul").domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model
