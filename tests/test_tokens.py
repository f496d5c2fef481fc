"""tokens.py: a transformer's classifier that reads the class token, and FC layers on a token
sequence, are refused in one line that names the classifier (not one line per attention layer)."""

from __future__ import annotations

import numpy as np
from rule_support import refused, skipped, text_model

from onnx_fc2conv.rules.base import Code

C, M = 4, 5

# patches of 2 x 2 -> 4 tokens, a class token in front (5), position embedding, one attention-like
# projection over the tokens (Reshape to [T, C] -> Gemm -> back), a final LayerNorm
_VIT = """
    g (float[1, 3, 4, 4] input) => (float[1, 5] fc) {{
        patches = Conv <kernel_shape = [2, 2], strides = [2, 2]> (input, patch_w)
        flat = Reshape (patches, t_flat)
        tokens = Transpose <perm = [0, 2, 1]> (flat)
        seq = Concat <axis = 1> (cls, tokens)
        pos_seq = Add (seq, pos)
        rows = Reshape (pos_seq, t_rows)
        proj = Gemm <transB = 1> (rows, proj_w, proj_b)
        back = Reshape (proj, t_seq)
        mixed = Add (pos_seq, back)
        normed = LayerNormalization <axis = -1> (mixed, ln_scale, ln_bias)
        {read}
        fc = Gemm <transB = 1> (token, w, b)
    }}
"""
_WEIGHTS = {
    "patch_w": (C, 3, 2, 2), "t_flat": np.array([1, C, 4]), "cls": (1, 1, C), "pos": (1, 5, C),
    "t_rows": np.array([5, C]), "proj_w": (C, C), "proj_b": (C,), "t_seq": np.array([1, 5, C]),
    "ln_scale": (C,), "ln_bias": (C,), "w": (M, C), "b": (M,),
}  # fmt: skip


def test_class_token_head_is_refused_in_one_line() -> None:
    model = text_model(_VIT.format(read="token = Gather <axis = 1> (normed, zero)"), zero=np.array(0), **_WEIGHTS)
    reason = (
        "Gemm 'fc' reads the class token: Gather 'token' takes token 0 of the sequence 'normed' [1, 5, 4], "
        "a fixed count of 5 tokens that the attention runs over, not a feature map"
    )
    err = refused(model)
    assert err.reasons == [f"fc: {reason}"]
    assert str(err) == f"no FC head can be rewritten exactly: {reason}"
    # the projection inside the attention is not listed as an FC head
    assert skipped(model) == [("fc", Code.TOKEN_SEQUENCE, reason)]


def test_class_token_read_by_slice_and_squeeze() -> None:
    read = "first = Slice (normed, s0, s1, s_axis)\n token = Squeeze (first, s_axis)"
    weights = {"s0": np.array([0]), "s1": np.array([1]), "s_axis": np.array([1])}
    model = text_model(_VIT.format(read=read), **weights, **_WEIGHTS)
    [(node, code, reason)] = skipped(model)
    assert (node, code) == ("fc", Code.TOKEN_SEQUENCE)
    assert reason.startswith("Gemm 'fc' reads the class token: Slice 'first' takes token 0 of the sequence 'normed'")


def test_a_head_on_the_pooled_tokens_is_refused_in_one_line() -> None:
    """MLP-Mixer and LeViT: the classifier reads the mean over the tokens (through a BatchNorm)."""
    read = (
        "pooled = ReduceMean <axes = [1], keepdims = 0> (normed)\n token = BatchNormalization (pooled, g, be, mu, var)"
    )
    weights = {"g": (C,), "be": (C,), "mu": (C,), "var": np.ones(C, np.float32)}
    model = text_model(_VIT.format(read=read), **weights, **_WEIGHTS)
    reason = (
        "Gemm 'fc' reads the pooled tokens: ReduceMean 'pooled' pools the sequence 'normed' [1, 5, 4], a fixed "
        "count of 5 tokens that the attention or token mixing runs over, not a feature map"
    )
    assert skipped(model) == [("fc", Code.TOKEN_SEQUENCE, reason)]


def test_a_mean_over_one_token_is_not_taken_for_a_fixed_token_count() -> None:
    read = "one = Slice (normed, s0, s1, s_axis)\n token = ReduceMean <axes = [1], keepdims = 0> (one)"
    weights = {"s0": np.array([0]), "s1": np.array([1]), "s_axis": np.array([1])}
    model = text_model(_VIT.format(read=read), **weights, **_WEIGHTS)
    found = skipped(model)
    assert found and not any("reads the pooled tokens" in reason for _, _, reason in found)


def test_fc_layers_on_token_rows_without_class_token_are_one_line() -> None:
    """A per-token classifier: every FC candidate reads the [1, 5, C] sequence as [5, C] rows."""
    text = _VIT.format(read="token = Reshape (normed, t_rows)").replace("float[1, 5] fc", "float[5, 5] fc")
    model = text_model(text, **_WEIGHTS)
    reason = (
        "Gemm 'fc' acts on each token of a sequence [1, 5, 4] (and 1 more FC layer on it): a fixed count "
        "of 5 tokens, not a feature map"
    )
    assert skipped(model) == [("fc", Code.TOKEN_SEQUENCE, reason)]
    assert refused(model).reasons == [f"fc: {reason}"]


def test_pooled_cnn_head_is_not_taken_for_tokens() -> None:
    """A rank-2 head behind a global pool keeps its own path (no token line)."""
    model = text_model(
        """
        g (float[1, 3, 4, 4] input) => (float[1, 5] fc) {
            c = Conv <kernel_shape = [2, 2]> (input, conv_w)
            pooled = GlobalAveragePool (c)
            flat = Flatten <axis = 1> (pooled)
            fc = Gemm <transB = 1> (flat, w, b)
        }
        """,
        conv_w=(C, 3, 2, 2),
        w=(M, C),
        b=(M,),
    )
    assert skipped(model) == []
