"""rules/backbone_own_shape: Reshape and Expand targets that hold a tensor's own dims at the exported
size (folded by a static export) become Identity or `Shape(T)`; a Reshape whose -1 would take the
spatial dims into the batch at other sizes is refused, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
from builders import assert_close, big_input, convert, ops, rand, run
from rule_support import backbone_refusals, refused, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5
ONE = np.array([1.0], np.float32)
ZERO = np.array([0.0], np.float32)


def _same_as(converted: onnx.ModelProto, oracle: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """The converted model's [N, M, 1, 1] equals the size-free oracle's [N, M] at `shape`."""
    x = big_input(shape)
    expected = run(oracle, {"input": x})["fc"]
    got = run(converted, {"input": x})["fc"]
    assert got.shape == (*expected.shape, 1, 1)
    assert_close(got.reshape(expected.shape), expected)


# a map that is 1 x 1 only at the exported size (3 x 3 input, two 2 x 2 convs), joined to a pooled branch
_ONE_BY_ONE = """
    g (float[{batch}, 3, {h}, {w}] input) => (float[{batch}, 5] fc) {{
        c1 = Conv <kernel_shape = [2, 2]> (input, w1)
        c2 = Conv <kernel_shape = [2, 2]> (c1, w2)
        {body}
        {pool}
        cat = Concat <axis = 1> (r2, p)
        gap = GlobalAveragePool (cat)
        flat = Flatten <axis = 1> (gap)
        fc = Gemm <transB = 1> (flat, w, b)
    }}
"""


def _weights(**shapes: tuple[int, ...] | np.ndarray) -> dict[str, np.ndarray]:
    """Seeded arrays by name, so a model and its oracle share them."""
    return {k: v if isinstance(v, np.ndarray) else rand(v, i, scale=0.5) for i, (k, v) in enumerate(shapes.items())}


_POOL = "p = MaxPool <kernel_shape = [2, 2]> (c1)"
_WEIGHTS = _weights(w1=(C, 3, 2, 2), w2=(C, C, 2, 2), w=(M, 2 * C), b=(M,))


def test_reshape_to_its_own_shape_on_a_map_one_by_one_at_the_exported_size_becomes_identity() -> None:
    """tf2onnx's `[-1, C, 1, 1]` on a map that is 1 x 1 only at the exported size: at other sizes its
    -1 would take the spatial dims into the batch (and the Concat would fail). Both Reshapes of the
    chain become Identity (the second shows only once the first is fixed)."""
    body = "r = Reshape (c2, t)\n a = Relu (r)\n r2 = Reshape (a, t)"
    model = text_model(
        _ONE_BY_ONE.format(batch="N", h=3, w=3, body=body, pool=_POOL), t=np.array([-1, C, 1, 1]), **_WEIGHTS
    )
    result = convert(model)
    assert [(f.node, f.change) for f in result.backbone_fixes] == [
        ("r", "target [-1, 4, 1, 1] is its input's own shape: Identity"),
        ("r2", "target [-1, 4, 1, 1] is its input's own shape: Identity"),
    ]
    assert ops(result.model)[:5] == ["Conv", "Conv", "Identity", "Relu", "Identity"]
    oracle = text_model(_ONE_BY_ONE.format(batch="N", h="H", w="W", body="r2 = Relu (c2)", pool=_POOL), **_WEIGHTS)
    _same_as(result.model, oracle, (2, 3, 7, 6))


def test_reshape_whose_minus_one_takes_the_spatial_dims_into_the_batch_is_refused() -> None:
    body = "r = Reshape (c2, flat_t)\n a = Relu (r)\n r2 = Reshape (a, t)"
    model = text_model(
        _ONE_BY_ONE.format(batch="N", h=3, w=3, body=body, pool=_POOL),
        flat_t=np.array([-1, C]),
        t=np.array([-1, C, 1, 1]),
        **_WEIGHTS,
    )
    reason = (
        "Reshape 'r' keeps the batch at the exported size only: its target [-1, 4] holds 4 elements "
        "per image, the exported [4, 1, 1]; at other sizes its -1 takes the spatial dims into the batch"
    )
    assert refused(model).reasons == [reason]
    assert backbone_refusals(model) == [("r", Code.BAKED_SIZE, reason)]


def test_reshape_to_its_own_shape_that_holds_at_every_size_is_left_alone() -> None:
    """`[-1, C, 1, 1]` after a global pool: 1 x 1 at every size, nothing to fix."""
    body = "gp = GlobalAveragePool (c2)\n r2 = Reshape (gp, t)"
    pool = "p = GlobalMaxPool (c1)"
    model = text_model(
        _ONE_BY_ONE.format(batch="N", h=3, w=3, body=body, pool=pool), t=np.array([-1, C, 1, 1]), **_WEIGHTS
    )
    result = convert(model)
    assert result.backbone_fixes == []
    assert ops(result.model).count("Reshape") == 1


_GROUP_NORM = """
    g (float[{batch}, 3, {h}, {w}] input) => (float[{batch}, 5] fc) {{
        c = Conv <kernel_shape = [2, 2]> (input, w1)
        f = Reshape (c, t1)
        n = InstanceNormalization (f, one, zero)
        {back}
        m = Mul (u, gain)
        gap = GlobalAveragePool (m)
        flat = Flatten <axis = 1> (gap)
        fc = Gemm <transB = 1> (flat, w, b)
    }}
"""


def test_reshape_round_trip_back_to_the_start_is_rebuilt_from_shape() -> None:
    """GroupNorm(1) as a static dynamo export writes it: `[0, 1, -1]`, InstanceNormalization, then
    back to the exported `[1, C, H, W]`; the way back becomes `Shape(c)`, as a dynamic export has it."""
    weights = _weights(w1=(C, 3, 2, 2), t1=np.array([0, 1, -1]), one=ONE, zero=ZERO, gain=(C, 1, 1), w=(M, C), b=(M,))
    back = "u = Reshape (n, t2)"
    model = text_model(_GROUP_NORM.format(batch=1, h=5, w=4, back=back), t2=np.array([1, C, 4, 3]), **weights)
    result = convert(model)
    assert [(f.node, f.change) for f in result.backbone_fixes] == [
        ("u", "target [1, 4, 4, 3] now Shape(c), the tensor its reshape round trip started from")
    ]
    assert ops(result.model)[:5] == ["Conv", "Reshape", "InstanceNormalization", "Shape", "Reshape"]
    dynamic = "s = Shape (c)\n u = Reshape (n, s)"
    oracle = text_model(_GROUP_NORM.format(batch="N", h="H", w="W", back=dynamic), **weights)
    _same_as(result.model, oracle, (2, 3, 9, 7))


_GATE = """
    g (float[{batch}, 3, {h}, {w}] input) => (float[{batch}, 5] fc) {{
        c = Conv <kernel_shape = [2, 2]> (input, w1)
        p = GlobalAveragePool (c)
        s = Sigmoid (p)
        {gate}
        m = Mul (c, e)
        gap = GlobalAveragePool (m)
        flat = Flatten <axis = 1> (gap)
        fc = Gemm <transB = 1> (flat, w, b)
    }}
"""


def test_expand_against_the_operand_it_is_broadcast_with_follows_its_shape() -> None:
    """ECA's `y.expand_as(x)` exported statically: Expand to the exported `[1, C, H, W]` of x."""
    weights = _weights(w1=(C, 3, 2, 2), w=(M, C), b=(M,))
    model = text_model(_GATE.format(batch=1, h=5, w=4, gate="e = Expand (s, t)"), t=np.array([1, C, 4, 3]), **weights)
    result = convert(model)
    assert [(f.node, f.change) for f in result.backbone_fixes] == [
        ("e", "target [1, 4, 4, 3] now Shape(c), the operand it is expanded against")
    ]
    assert ops(result.model)[:6] == ["Conv", "GlobalAveragePool", "Sigmoid", "Shape", "Expand", "Mul"]
    oracle = text_model(_GATE.format(batch="N", h="H", w="W", gate="e = Identity (s)"), **weights)
    _same_as(result.model, oracle, (2, 3, 9, 7))


def test_expand_to_its_own_shape_becomes_identity() -> None:
    weights = _weights(w1=(C, 3, 2, 2), w=(M, C), b=(M,))
    gate = "q = Mul (s, c)\n e = Expand (q, t)"
    model = text_model(_GATE.format(batch=1, h=5, w=4, gate=gate), t=np.array([1, C, 4, 3]), **weights)
    result = convert(model)
    assert [(f.node, f.change) for f in result.backbone_fixes] == [
        ("e", "target [1, 4, 4, 3] is its input's own shape: Identity")
    ]
    assert "Expand" not in ops(result.model)
    oracle = text_model(_GATE.format(batch="N", h="H", w="W", gate="e = Mul (s, c)"), **weights)
    _same_as(result.model, oracle, (2, 3, 9, 7))
