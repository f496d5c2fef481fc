"""Model builders for the reliability tests (bad inputs, atomic output, properties, large model).

Graphs are built in code with onnx.helper; no torch. A model is a small conv backbone whose
feature map is `C x H x W`, a Flatten, and an FC head (Gemm or MatMul+Add layers with
elementwise ops between them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT_TYPES = {"fp32": (TensorProto.FLOAT, np.float32), "fp16": (TensorProto.FLOAT16, np.float16)}


def ir_version_for(opset: int) -> int:
    """The lowest IR version that carries `opset` (onnxruntime refuses IR versions it does not know)."""
    return onnx.helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


@dataclass(frozen=True)
class Elementwise:
    """An op between/after FC layers: Relu, Sigmoid, Tanh, LeakyRelu, or a per-feature Add/Mul."""

    op: str
    alpha: float = 0.01  # LeakyRelu
    const_shape: str = "M"  # Add/Mul constant: "M" ([M]), "1M" ([1, M]) or "scalar"


@dataclass(frozen=True)
class FcSpec:
    out_features: int
    op: str = "Gemm"  # Gemm | MatMul (MatMul + Add when the bias is present)
    trans_b: bool = True
    alpha: float = 1.0
    beta: float = 1.0
    bias: str = "M"  # none | M | 1M | scalar
    after: tuple[Elementwise, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    channels: int = 4
    height: int = 3
    width: int = 3
    in_channels: int = 2
    extra_h: int = 2  # the input is (height + extra_h) x (width + extra_w); the conv kernel absorbs it
    extra_w: int = 1
    layers: tuple[FcSpec, ...] = (FcSpec(5),)
    opset: int = 17
    dtype: str = "fp32"
    seed: int = 0
    batch: int | str = 1


@dataclass
class _Builder:
    dtype: np.dtype
    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    counter: int = 0

    def name(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=self.dtype), name))
        return name

    def rand(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(self.dtype)

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out


def _fc(b: _Builder, x: str, k: int, spec: FcSpec) -> str:
    m = spec.out_features
    w = b.rand(m, k, scale=1.0 / np.sqrt(k))
    bias_shapes = {"M": (m,), "1M": (1, m), "scalar": ()}
    bias = b.rand(*bias_shapes[spec.bias]) if spec.bias != "none" else None
    if spec.op == "Gemm":
        weight = b.const("W", w if spec.trans_b else w.T)
        inputs = [x, weight] + ([b.const("B", bias)] if bias is not None else [])
        return b.node("Gemm", inputs, alpha=float(spec.alpha), beta=float(spec.beta), transB=int(spec.trans_b))
    y = b.node("MatMul", [x, b.const("W", w.T)])
    if bias is not None:
        y = b.node("Add", [y, b.const("B", bias)])
    return y


def _elementwise(b: _Builder, x: str, m: int, op: Elementwise) -> str:
    if op.op in ("Relu", "Sigmoid", "Tanh"):
        return b.node(op.op, [x])
    if op.op == "LeakyRelu":
        return b.node("LeakyRelu", [x], alpha=float(op.alpha))
    shapes = {"M": (m,), "1M": (1, m), "scalar": ()}
    const = b.rand(*shapes[op.const_shape], scale=0.5)
    if op.op == "Mul":
        const = const + np.asarray(1.0, dtype=b.dtype)
    return b.node(op.op, [x, b.const(op.op.lower() + "_c", const)])


def build(spec: ModelSpec) -> onnx.ModelProto:
    """Conv(k = extra+1, no pad) -> Relu -> Flatten -> FC head. The feature map is C x H x W."""
    elem, dtype = FLOAT_TYPES[spec.dtype]
    b = _Builder(np.dtype(dtype), np.random.default_rng(spec.seed))
    in_h, in_w = spec.height + spec.extra_h, spec.width + spec.extra_w
    kh, kw = spec.extra_h + 1, spec.extra_w + 1
    conv_w = b.const("conv_w", b.rand(spec.channels, spec.in_channels, kh, kw, scale=0.5))
    conv_b = b.const("conv_b", b.rand(spec.channels, scale=0.1))
    x = b.node("Conv", ["input", conv_w, conv_b], kernel_shape=[kh, kw])
    x = b.node("Relu", [x])
    x = b.node("Flatten", [x], axis=1)
    k = spec.channels * spec.height * spec.width
    for layer in spec.layers:
        x = _fc(b, x, k, layer)
        for op in layer.after:
            x = _elementwise(b, x, layer.out_features, op)
        k = layer.out_features
    b.nodes.append(helper.make_node("Identity", [x], ["logits"], name="out"))
    graph = helper.make_graph(
        b.nodes,
        "corpus",
        [helper.make_tensor_value_info("input", elem, [spec.batch, spec.in_channels, in_h, in_w])],
        [helper.make_tensor_value_info("logits", elem, [spec.batch, k])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)])
    model.ir_version = ir_version_for(spec.opset)
    return model


def small_model(opset: int = 17, **kw: object) -> onnx.ModelProto:
    """The default classifier: a 2-channel 5x4 input, 4x3x3 features, Gemm(36 -> 5)."""
    return build(ModelSpec(opset=opset, **kw))  # type: ignore[arg-type]


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def save_external(model: onnx.ModelProto, path: Path, location: str | None = None) -> Path:
    """Every initializer into one data file `location` (default `<name>.data`) beside the model."""
    location = location or path.name + ".data"
    m = onnx.ModelProto()
    m.CopyFrom(model)
    onnx.save_model(
        m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file in `folder` (symlinks and folders by their target/kind)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_symlink():
            out[p.name] = "symlink:" + str(p.readlink())
        elif p.is_dir():
            out[p.name] = "dir"
        else:
            out[p.name] = sha256(p)
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary files/folders save_model might leave behind (`.<name>.*.tmp`)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def write_large_fc_model(
    folder: Path, *, channels: int = 64, height: int = 8, width: int = 8, out_features: int = 134_400, seed: int = 0
) -> Path:
    """`big.onnx` + `big.onnx.data`: Conv 1x1 -> Relu -> Flatten -> Gemm(transB=1) with an [M, K] fp32 weight.

    The weight is generated and written in chunks straight into the data file (it is never whole
    in memory); the defaults make it 134,400 x 4,096 x 4 bytes = 2.2 GB, over protobuf's 2 GB.
    """
    k = channels * height * width
    rng = np.random.default_rng(seed)
    data_name = "big.onnx.data"
    scale = np.float32(1.0 / np.sqrt(k))
    rows_per_chunk = max(1, (64 << 20) // (4 * k))
    with open(folder / data_name, "wb") as f:
        for start in range(0, out_features, rows_per_chunk):
            rows = min(rows_per_chunk, out_features - start)
            chunk = rng.standard_normal((rows, k), dtype=np.float32)
            chunk *= scale
            f.write(chunk.tobytes())
    weight = TensorProto()
    weight.name = "fc.weight"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([out_features, k])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data_name), ("offset", "0"), ("length", str(out_features * k * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    inits = [
        numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.3).astype(np.float32), "conv.w"),
        numpy_helper.from_array((rng.standard_normal(channels) * 0.1).astype(np.float32), "conv.b"),
        weight,
        numpy_helper.from_array((rng.standard_normal(out_features) * 0.1).astype(np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, out_features])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version_for(17)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path
