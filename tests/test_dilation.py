"""--output-stride: the a trous rewrite (dilate.py) and its reference (verify/dilated.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, assert_close, gemm, run
from click.testing import CliRunner
from json_contract import parse

import onnx_fc2conv
from onnx_fc2conv.cli import main
from onnx_fc2conv.dilate import DilationCode, DilationRefusal
from onnx_fc2conv.errors import UsageError, VerificationError
from onnx_fc2conv.verify.dilated import AtrousReference


def _out(n: int, k: int, stride: int = 1, pad: int = 0) -> int:
    return (n + 2 * pad - k) // stride + 1


class _Net:
    """Builds the backbone layer by layer, tracking the map's size (the head's window)."""

    def __init__(self, g: GraphBuilder, x: str, size: tuple[int, int], channels: int) -> None:
        self.g, self.y, self.size, self.c = g, x, size, channels

    def conv(self, c_out: int, k: int, *, stride: int = 1, pad: int = 0) -> None:
        w = self.g.const("conv_w", self.g.rand((c_out, self.c, k, k)))
        b = self.g.const("conv_b", self.g.rand((c_out,)))
        y = self.g.op("Conv", [self.y, w, b], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
        self.y, self.c = self.g.op("Relu", [y]), c_out
        self.size = tuple(_out(n, k, stride, pad) for n in self.size)

    def pool(self, op: str = "MaxPool", *, k: int = 2, stride: int = 2, pad: int = 0, ceil: int = 0) -> None:
        attrs = {"ceil_mode": ceil} if ceil else {}
        self.y = self.g.op(op, [self.y], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, **attrs)
        self.size = tuple(-(-(n + 2 * pad - k) // stride) + 1 if ceil else _out(n, k, stride, pad) for n in self.size)


def cnn(
    *,
    padded: bool = False,
    last: str = "pool",
    head: str = "fc",
    after: str = "Conv",
    size: tuple[int, int] = (22, 20),
    opset: int = 17,
    ceil: int = 0,
    pool_k: int = 2,
) -> onnx.ModelProto:
    """Conv -> MaxPool/2 -> Conv -> L (MaxPool/2 or Conv stride 2) -> <after> -> head.

    `head`: "fc" flattens the whole map (a k x k window) into two Gemms; "pool" a global pool then
    one Gemm (the `--dense` case). `padded` pads every Conv, and L by 1 (kernel 3).
    """
    g = GraphBuilder(opset=opset, seed=7)
    net = _Net(g, g.input("input", ["N", 3, *size]), size, 3)
    p = 1 if padded else 0
    net.conv(4, 3, pad=p)
    net.pool(k=pool_k, ceil=ceil)
    net.conv(5, 3, pad=p)
    if last == "pool":
        net.pool(k=3 if padded else pool_k, pad=p, ceil=ceil)
    else:
        net.conv(5, 3, stride=2, pad=p)
    if after == "Conv":
        net.conv(6, 3, pad=p)
    elif after == "AveragePool":
        net.pool("AveragePool", k=2, stride=1, pad=p)
        net.conv(6, 1)
    elif after == "Resize":
        scales = g.const("scales", np.array([1, 1, 1, 1], np.float32))
        net.y = g.op("Resize", [net.y, "", scales], mode="nearest")
        net.conv(6, 1)
    if head == "fc":
        window = net.c * net.size[0] * net.size[1]
        out = gemm(g, g.op("Relu", [gemm(g, g.op("Flatten", [net.y], axis=1), window, 8)]), 8, 5)
    else:
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", [net.y])], axis=1)
        out = gemm(g, pooled, net.c, 5)
    g.output(out)
    return g.build()


SIZES = {  # exported sizes: a head window of 2 x 2 to 3 x 3
    (False, "pool"): (22, 20),
    (True, "pool"): (12, 10),
    (False, "conv"): (24, 22),
    (True, "conv"): (12, 10),
}


def _convert(model: onnx.ModelProto, stride: int, **options) -> onnx_fc2conv.ConversionResult:
    options.setdefault("sizes", ((37, 30), (45, 41)))
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(output_stride=stride, **options))
    assert result.verification is not None and result.verification.passed, result.verification
    assert {c.check for c in result.verification.comparisons} == {"a trous"}
    shapes = {c.input_shape for c in result.verification.comparisons}
    assert any(s[0] == 2 and s[2] != s[3] and s[2] > 24 for s in shapes)
    return result


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("last", ["pool", "conv"])
@pytest.mark.parametrize("factor", [2, 4])
def test_denser_map_equals_the_shifted_reference(padded: bool, last: str, factor: int) -> None:
    size = SIZES[(padded, last)]
    model = cnn(padded=padded, last=last, size=size)
    today = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(verify=False))
    stride = next(iter(today.geometry.values())).stride[0]
    result = _convert(model, stride // factor)
    assert result.dilation is not None and result.dilation.factor == factor
    assert next(iter(result.geometry.values())).stride == (stride // factor,) * 2
    assert dict((p.key, p.value) for p in result.model.metadata_props)["onnx_fc2conv.output_stride"] == (
        f"{stride // factor}x{stride // factor}"
    )
    strides = [list(a.ints) for n in result.model.graph.node for a in n.attribute if a.name == "strides"]
    assert sum(s == [2, 2] for s in strides) == 2 - int(np.log2(factor))
    # the even cells (multiples of the factor) are today's map, every cell the reference's
    x = np.random.default_rng(3).standard_normal((2, 3, 41, 35)).astype(np.float32)
    dense = run(result.model, {"input": x})["output"]
    coarse = run(today.model, {"input": x})["output"]
    assert_close(dense[..., ::factor, ::factor], coarse)
    assert dense.shape[2] > coarse.shape[2] * (factor - 1)
    ref = AtrousReference(model, result.heads, "input", result.dilation).expected(x)["output"]
    assert isinstance(ref, np.ndarray)
    assert_close(dense, ref)


@pytest.mark.parametrize("factor", [2, 4])
def test_dense_global_pool_head(factor: int) -> None:
    model = cnn(padded=True, head="pool", size=(12, 10))
    result = _convert(model, 4 // factor, dense=True)
    assert next(iter(result.geometry.values())).stride == (4 // factor,) * 2


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("size", [(22, 20), (23, 21)])
def test_ceil_mode_max_pool_as_the_strided_layer(factor: int, size: tuple[int, int]) -> None:
    """Caffe-style pools: ceil_mode becomes one more end pad at stride 1 (odd and even extents)."""
    model = cnn(size=size, ceil=1, pool_k=3)
    result = _convert(model, 4 // factor)
    ceil_pools = [n for n in result.model.graph.node for a in n.attribute if a.name == "ceil_mode" and a.i]
    assert len(ceil_pools) == 2 - int(np.log2(factor))  # the strided layers made stride 1 lose it


def test_average_pool_after_the_strided_layer_at_opset_19() -> None:
    model = cnn(size=(22, 20), after="AveragePool", padded=False, opset=19)
    result = _convert(model, 2)
    pools = [n for n in result.model.graph.node if n.op_type == "AveragePool"]
    assert [list(a.ints) for a in pools[0].attribute if a.name == "dilations"] == [[2, 2]]


def test_a_changed_weight_fails_the_reference() -> None:
    model = cnn(size=SIZES[(False, "pool")])
    result = onnx_fc2conv.convert(model, onnx_fc2conv.ConvertOptions(output_stride=2, verify=False))
    last_conv = [n for n in result.model.graph.node if n.op_type == "Conv"][-1]
    weights = {t.name: t for t in result.model.graph.initializer}
    w = onnx.numpy_helper.to_array(weights[last_conv.input[1]]).copy()
    w.flat[0] += 0.5
    weights[last_conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, last_conv.input[1]))
    with pytest.raises(VerificationError, match="a trous"):
        onnx_fc2conv.api.verify_conversion(model, result, onnx_fc2conv.ConvertOptions(output_stride=2))


def _stride_three() -> onnx.ModelProto:
    g = GraphBuilder(seed=3)
    net = _Net(g, g.input("input", ["N", 3, 14, 14]), (14, 14), 3)
    net.conv(4, 3)
    net.pool()
    net.pool(k=3, stride=3)
    g.output(gemm(g, g.op("Flatten", [net.y], axis=1), 4 * net.size[0] * net.size[1], 5))
    return g.build()


def _parallel_strided() -> onnx.ModelProto:
    """A ResNet-style downsampling block: a strided 3 x 3 conv beside a strided 1 x 1 shortcut."""
    g = GraphBuilder(seed=4)
    net = _Net(g, g.input("input", ["N", 3, 12, 12]), (12, 12), 3)
    net.conv(4, 3)
    x = net.y
    net.conv(4, 3, stride=2, pad=1)
    main_path = net.y
    w = g.const("short_w", g.rand((4, 4, 1, 1)))
    shortcut = g.op("Conv", [x, w], kernel_shape=[1, 1], strides=[2, 2])
    y = g.op("Add", [main_path, shortcut])
    g.output(gemm(g, g.op("Flatten", [y], axis=1), 4 * net.size[0] * net.size[1], 5))
    return g.build()


@pytest.mark.parametrize(
    ("build", "stride", "code"),
    [
        (lambda: cnn(size=(22, 20), after="AveragePool", opset=17), 2, DilationCode.AVERAGE_POOL_OPSET),
        (lambda: cnn(size=(22, 20), after="Resize"), 2, DilationCode.NO_GEOMETRY),
        (lambda: cnn(size=(22, 20)), 3, DilationCode.OUTPUT_STRIDE),
        (_stride_three, 3, DilationCode.STRIDE_NOT_TWO),
        (lambda: cnn(size=(22, 20), ceil=1), 1, DilationCode.POOL_PAD),
        (_parallel_strided, 1, DilationCode.PARALLEL_STRIDED),
    ],
    ids=["average-pool-opset", "resize", "output-stride", "stride-not-two", "pool-pad", "parallel-strided"],
)
def test_refusals_name_their_cause(build, stride: int, code: DilationCode) -> None:
    with pytest.raises(DilationRefusal) as info:
        onnx_fc2conv.convert(build(), onnx_fc2conv.ConvertOptions(output_stride=stride, verify=False))
    assert info.value.code is code
    assert f"[{code.value}]" in str(info.value)
    assert info.value.exit_code == 3
    if code is DilationCode.NO_GEOMETRY:
        assert "Resize" in str(info.value)


MODELS = Path(__file__).resolve().parent.parent / "models"


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_convert_reports_the_new_stride(tmp_path: Path) -> None:
    out = tmp_path / "dense.onnx"
    result = _cli("convert", str(MODELS / "ts_vgg_small.onnx"), str(out), "--output-stride", "4", "--json")
    assert result.exit_code == 0, result.output
    found = parse(result.output)  # validated against the committed schema
    assert found["geometry"]["output"]["stride"] == [4, 4]
    assert any("output stride 16 -> 4 (a trous)" in n for n in found["notices"])
    assert {c["check"] for c in found["verification"]["comparisons"]} == {"a trous"}
    written = onnx.load(str(out))
    assert {p.key: p.value for p in written.metadata_props}["onnx_fc2conv.output_stride"] == "4x4"
    # the written model records its levels: `verify` rebuilds the shifted reference from them
    checked = parse(_cli("verify", str(MODELS / "ts_vgg_small.onnx"), str(out), "--json").output)
    assert checked["status"] == "ok" and checked["verification"]["passed"]
    assert {c["check"] for c in checked["verification"]["comparisons"]} == {"a trous"}
    assert onnx_fc2conv.verify(str(MODELS / "ts_vgg_small.onnx"), str(out)).passed


def test_cli_refusal_exits_3_with_the_code(tmp_path: Path) -> None:
    result = _cli("convert", str(MODELS / "ts_vgg_small.onnx"), str(tmp_path / "x.onnx"), "--output-stride", "5")
    assert result.exit_code == 3
    assert "[output-stride]" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_heatmap_draws_the_denser_map(tmp_path: Path) -> None:
    pytest.importorskip("PIL.Image")
    args = [str(MODELS / "ts_vgg_small.onnx"), str(MODELS / "example.png")]
    coarse = _cli("heatmap", *args, str(tmp_path / "a.png"), "--top", "0")
    dense = _cli("heatmap", *args, str(tmp_path / "b.png"), "--top", "0", "--output-stride", "8")
    assert coarse.exit_code == dense.exit_code == 0, dense.output
    # 192 x 256 image, receptive field 94 with pad 64: stride 16 gives 9 x 13 cells, stride 8 gives 17 x 25
    assert "map 9x13 over a 192x256 image" in coarse.output
    assert "map 17x25 over a 192x256 image" in dense.output


def test_static_size_runs_only_at_its_size_and_matches_the_dynamic_model(tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    src = MODELS / "ts_vgg_small.onnx"
    result = _cli("convert", str(src), str(out), "--input-size", "160x208", "--batch", "2", "--json")
    assert result.exit_code == 0, result.output
    found = parse(result.output)
    assert found["outputs"] == [{"name": "output", "shape": [2, 10, 7, 10]}]  # (160 - 64) / 16 + 1, (208 - 64) / 16 + 1
    assert {c["check"] for c in found["verification"]["comparisons"]} >= {"same size", "larger size", "static size"}
    static = onnx.load(str(out))
    assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 160, 208]
    assert {p.key: p.value for p in static.metadata_props}["onnx_fc2conv.valid_sizes"] == "160x208 only (static shapes)"
    dynamic = onnx_fc2conv.convert(str(src), onnx_fc2conv.ConvertOptions(verify=False)).model
    x = np.random.default_rng(5).standard_normal((2, 3, 160, 208)).astype(np.float32)
    assert_close(run(static, {"input": x})["output"], run(dynamic, {"input": x})["output"])
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        run(static, {"input": x[:, :, :128, :192]})


def test_static_size_with_a_denser_map() -> None:
    model = cnn(size=(22, 20))
    options = onnx_fc2conv.ConvertOptions(output_stride=2, input_size=(30, 26), batch=2)
    result = onnx_fc2conv.convert(model, options)
    assert result.verification is not None and result.verification.passed
    assert {c.check for c in result.verification.comparisons} == {"a trous", "static size"}
    assert result.static is not None and all(isinstance(d, int) for d in result.static.output_shapes["output"])


def test_static_size_refuses_a_size_the_model_cannot_run_at() -> None:
    with pytest.raises(UsageError, match="--input-size 20x20 is not a size"):
        onnx_fc2conv.convert(str(MODELS / "ts_vgg_small.onnx"), onnx_fc2conv.ConvertOptions(input_size=(20, 20)))


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("ts_lenet_softmax_op11.onnx", None),  # a legacy Softmax's Transposes after the strided layer
        ("keras_dense_bn.onnx", "the size-agnostic backbone up to the strided layer was used"),
    ],
)
def test_golden_exports_at_half_stride(name: str, note: str | None) -> None:
    result = onnx_fc2conv.convert(str(MODELS / name), onnx_fc2conv.ConvertOptions(verify=False))
    stride = next(iter(result.geometry.values())).stride[0]
    denser = onnx_fc2conv.convert(str(MODELS / name), onnx_fc2conv.ConvertOptions(output_stride=stride // 2))
    assert denser.verification is not None and denser.verification.passed
    assert next(iter(denser.geometry.values())).stride[0] == stride // 2
    if note:
        assert any(note in n for n in denser.verification.notes)
