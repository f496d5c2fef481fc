"""rules/flatten_nhwc: a channel-last Transpose before the flatten is absorbed into the kernel layout."""

from __future__ import annotations

import numpy as np
import onnx
from builders import GraphBuilder, assert_sliding, backbone, big_input, conv_params, convert, dims, matmul, ops
from rule_support import refused, skipped, text_model

import onnx_fc2conv
from onnx_fc2conv.rewrite import kernel_from_weight
from onnx_fc2conv.rules.base import Code

C, M = 4, 5


def _nhwc_model(h: int = 5, w: int = 6, c_in: int = 2) -> onnx.ModelProto:
    g = GraphBuilder(opset=13)
    x = g.input("input", [1, h, w, c_in])
    nchw = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    feat = backbone(g, nchw, c_in, C)
    nhwc = g.op("Transpose", [feat], perm=[0, 2, 3, 1])
    shape = g.op("Shape", [nhwc])
    first = g.op("Slice", [shape, g.const("s0", np.array([0], np.int64)), g.const("s1", np.array([1], np.int64))])
    target = g.op("Concat", [first, g.const("m1", np.array([-1], np.int64))], axis=0)
    flat = g.op("Reshape", [nhwc, target])
    g.output(matmul(g, flat, C * (h - 1) * (w - 1), M), shape=[1, M])
    return g.build()


def test_nhwc_transpose_reshape_matmul() -> None:
    h, w, c_in = 5, 6, 2
    model = _nhwc_model(h, w, c_in)
    result = convert(model)
    out = result.model
    assert ops(out) == ["Transpose", "Conv", "Relu", "Conv"]
    head = result.heads[0]
    assert head.kind == "nhwc"
    assert head.description == "Transpose -> Reshape -> MatMul+Add"
    kernel, _ = conv_params(out)[1]
    w_km = next(
        onnx.numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name == next(n for n in model.graph.node if n.op_type == "MatMul").input[1]
    )
    np.testing.assert_array_equal(kernel, w_km.T.reshape(M, h - 1, w - 1, C).transpose(0, 3, 1, 2))
    # the input's axes 1 and 2 are the spatial ones
    assert dims(out.graph.input[0]) == ["batch", "height", "width", c_in]
    assert dims(out.graph.output[0]) == ["batch", M, "out_height", "out_width"]
    assert_sliding(model, out, big_input((1, 8, 7, c_in)), window=(h, w), spatial_axes=(1, 2))


def test_nhwc_kernel_from_weight_matches_design_formula() -> None:
    model = _nhwc_model()
    head = onnx_fc2conv.inspect(model).heads[0]
    layer = head.layers[0]
    m, c, h, w = layer.kernel_shape
    weight_km = np.arange(c * h * w * m, dtype=np.float32).reshape(c * h * w, m)
    got = kernel_from_weight(weight_km, layer, head.perm)
    np.testing.assert_array_equal(got, weight_km.T.reshape(m, h, w, c).transpose(0, 3, 1, 2))


def test_nhwc_transpose_used_elsewhere_is_refused() -> None:
    """The channel-last map also feeds another output: it cannot be read channel-first."""
    model = text_model(
        """
        g (float[1, 3, 5, 4] input) => (float[1, 5] fc, float[1, 4, 3, 4] side) {
            conv = Conv <kernel_shape = [2, 2]> (input, conv_w)
            to_nhwc = Transpose <perm = [0, 2, 3, 1]> (conv)
            flat = Reshape (to_nhwc, target)
            fc = Gemm <transB = 1> (flat, w, b)
            side = Relu (to_nhwc)
        }
        """,
        conv_w=(C, 3, 2, 2),
        target=np.array([1, 48], np.int64),
        w=(M, 48),
        b=(M,),
    )
    err = refused(model)
    reason = (
        "Transpose 'to_nhwc' before Gemm 'fc' moves the channels last and its output is also used elsewhere: "
        "the kernel layout cannot be proven"
    )
    assert err.reasons == [f"fc: {reason}"]
    assert skipped(model) == [("fc", Code.CHANNEL_LAST_SHARED, reason)]


def _qdq_after_transpose(h: int, w: int, pooled: bool = False) -> onnx.ModelProto:
    """onnxruntime's optimizer moves a per-tensor QuantizeLinear -> DequantizeLinear pair after the
    channel-last Transpose, between it and the flatten."""
    g = GraphBuilder(opset=13)
    x = g.input("input", [1, 2, h, w])
    feat = backbone(g, x, 2, C)
    feat = g.op("GlobalAveragePool", [feat]) if pooled else feat
    nhwc = g.op("Transpose", [feat], perm=[0, 2, 3, 1], name="to_nhwc")
    scale, zero = g.const("scale", np.array(0.05, np.float32)), g.const("zero", np.array(0, np.uint8))
    q = g.op("DequantizeLinear", [g.op("QuantizeLinear", [nhwc, scale, zero]), scale, zero])
    flat = g.op("Reshape", [q, g.const("target", np.array([1, -1], np.int64))])
    features = C if pooled else C * (h - 1) * (w - 1)
    g.output(matmul(g, flat, features, M), shape=[1, M])
    return g.build()


def test_a_channel_last_transpose_behind_a_qdq_pair_is_refused_not_misread() -> None:
    """Read as channel-first, the map [N, H, W, C] would give a kernel of H channels: exact at the
    exported size only (a map 1 x 1 only there included). Refused, naming the Transpose and what
    lies between; behind a global pool the map is 1 x 1 at every size and converts."""
    for h, w in [(5, 6), (2, 2)]:
        [(_, code, reason)] = skipped(_qdq_after_transpose(h, w))
        assert code == Code.CHANNEL_LAST_SHARED
        assert reason.startswith("Transpose 'to_nhwc' moves the channels last before QuantizeLinear ")
    assert str(refused(_qdq_after_transpose(5, 6))).startswith("no FC head can be rewritten exactly: Transpose")
    assert convert(_qdq_after_transpose(5, 6, pooled=True)).verification.passed
