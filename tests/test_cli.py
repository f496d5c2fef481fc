"""The command line: exit codes, one-line errors, JSON, options; and verification that is not vacuous."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import GraphBuilder, backbone, gemm, image_model, ops
from click.testing import CliRunner
from json_contract import parse
from onnx import numpy_helper

import onnx_fc2conv
from onnx_fc2conv import rewrite
from onnx_fc2conv.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"
LENET = MODELS / "ts_lenet5.onnx"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    first = stderr.splitlines()[0]
    assert first.startswith("onnx-fc2conv: error: ")
    return first


def _class_token_file(tmp_path: Path) -> Path:
    g = GraphBuilder()
    x = g.input("input", [1, 3, 8])
    tokens = g.op("Transpose", [x], perm=[0, 2, 1])
    cls = g.op("Gather", [tokens, g.const("idx", np.array(0, np.int64))], axis=1, name="take_cls")
    g.output(gemm(g, cls, 3, 5, name="head"))
    path = tmp_path / "vit.onnx"
    onnx.save(g.build(), str(path))
    return path


# ------------------------------------------------------------------------------------------------
# exit 0


def test_convert_exit_0_text(tmp_path) -> None:
    out = tmp_path / "out.onnx"
    res = invoke("convert", LENET, out)
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert "head 1: Flatten -> Gemm -> Gemm -> Gemm" in lines
    assert "input 'input': [1, 1, 32, 32] -> [batch, 1, height, width]" in lines
    assert "output 'output': [batch, 10, out_height, out_width]" in lines
    assert "  result: PASSED" in lines
    assert lines[-1] == f"wrote {out}"
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert ops(written).count("Conv") == 5 and "Gemm" not in ops(written)


def test_convert_json_fields(tmp_path) -> None:
    out = tmp_path / "out.onnx"
    res = invoke("convert", LENET, out, "--json")
    assert res.exit_code == 0, res.stderr
    data = parse(res.stdout)
    assert data["status"] == "ok" and data["exit_code"] == 0 and data["command"] == "convert"
    assert data["files"] == {"input": str(LENET), "output": str(out), "data": None}
    assert set(data) >= {"heads", "inputs", "outputs", "backbone_fixes", "removed_nodes", "notices", "verification"}
    head = data["heads"][0]
    assert head["pattern"] == "Flatten -> Gemm -> Gemm -> Gemm"
    assert [layer["kernel_shape"] for layer in head["layers"]] == [[120, 16, 5, 5], [84, 120, 1, 1], [10, 84, 1, 1]]
    assert [layer["old_weight_shape"] for layer in head["layers"]] == [[120, 400], [84, 120], [10, 84]]
    assert data["inputs"] == [
        {"name": "input", "old_shape": [1, 1, 32, 32], "new_shape": ["batch", 1, "height", "width"]}
    ]
    assert data["outputs"] == [{"name": "output", "shape": ["batch", 10, "out_height", "out_width"]}]
    verification = data["verification"]
    assert verification["passed"] is True and verification["checker"] == "passed"
    assert {c["status"] for c in verification["comparisons"]} == {"PASSED"}
    assert [c["check"] for c in verification["comparisons"]].count("larger size") == 2
    for c in verification["comparisons"]:
        assert set(c) == {
            "check", "output", "input_shape", "shape", "max_abs_error", "max_rel_error", "allowed_error", "ratio",
            "status", "note",
        }  # fmt: skip
        assert c["max_abs_error"] is not None and c["max_abs_error"] <= 1e-4
        assert c["allowed_error"] > 0 and 0 <= c["ratio"] <= 1
        assert c["ratio"] == pytest.approx(c["max_abs_error"] / c["allowed_error"])


def test_convert_size_option(tmp_path) -> None:
    res = invoke("convert", LENET, tmp_path / "out.onnx", "--json", "--size", "80x96", "--size", "40x36")
    assert res.exit_code == 0, res.stderr
    larger = [c for c in parse(res.stdout)["verification"]["comparisons"] if c["check"] == "larger size"]
    assert [c["input_shape"] for c in larger] == [[2, 1, 80, 96], [2, 1, 40, 36]]  # at batch 2
    # LeNet: 80 x 96 -> 17 x 21 map -> 13 x 17 windows of 5 x 5
    assert larger[0]["shape"] == [2, 10, 13, 17]


def test_convert_no_verify(tmp_path) -> None:
    out = tmp_path / "out.onnx"
    res = invoke("convert", LENET, out, "--no-verify")
    assert res.exit_code == 0
    assert "verification: skipped (--no-verify)" in res.stdout.splitlines()
    assert out.exists()
    res = invoke("convert", LENET, tmp_path / "out2.onnx", "--no-verify", "--json")
    assert parse(res.stdout)["verification"] is None


def test_convert_dim_names(tmp_path) -> None:
    out = tmp_path / "out.onnx"
    res = invoke("convert", LENET, out, "--batch-name", "n", "--height-name", "h", "--width-name", "w")
    assert res.exit_code == 0, res.stderr
    written = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 1, "h", "w"]


def test_no_fc_model_exit_0_with_notice(tmp_path) -> None:
    g = GraphBuilder()
    x = g.input("input", [1, 3, 6, 5])
    g.output(g.op("GlobalAveragePool", [backbone(g, x, 3, 4)]))
    src, out = tmp_path / "fcn.onnx", tmp_path / "out.onnx"
    onnx.save(g.build(), str(src))
    res = invoke("convert", src, out)
    assert res.exit_code == 0, res.stderr
    assert (
        "notice: no FC layer found: the model is already fully convolutional; only its input was relaxed"
        in res.stdout.splitlines()
    )
    written = onnx.load(str(out))
    dims = [d.dim_param or d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    res = invoke("inspect", src)
    assert "no FC layer: the model is already fully convolutional" in res.stdout


def test_help_shows_default_tolerances() -> None:
    for command in ("convert", "verify"):
        res = invoke(command, "--help")
        assert res.exit_code == 0
        text = " ".join(res.stdout.split())
        assert "--rtol" in text and "[default: 0.0001]" in text
        assert "--atol" in text and "[default: 1e-05]" in text
    assert "Exit codes" in invoke("--help").stdout


# ------------------------------------------------------------------------------------------------
# exit 3, 2, 1


def test_class_token_head_exit_3(tmp_path) -> None:
    src, out = _class_token_file(tmp_path), tmp_path / "out.onnx"
    res = invoke("convert", src, out)
    assert res.exit_code == 3
    assert _one_line_error(res.stderr) == (
        "onnx-fc2conv: error: no FC head can be rewritten exactly: "
        "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    )
    assert res.stdout == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["vit.onnx"]
    res = invoke("convert", src, out, "--json")
    assert res.exit_code == 3
    data = parse(res.stdout)
    assert data["status"] == "error" and data["exit_code"] == 3
    assert data["reasons"] == [
        "head: Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    ]
    res = invoke("inspect", src)
    assert res.exit_code == 0
    assert (
        "skipped 'head': Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
        in res.stdout.splitlines()
    )


@pytest.mark.parametrize("problem", ["garbage", "empty", "missing", "directory"])
def test_unreadable_input_exit_2(problem: str, tmp_path) -> None:
    src = tmp_path / "in.onnx"
    if problem == "garbage":
        src.write_bytes(b"\x08\x07not a model at all\xff\xfe" * 10)
    elif problem == "empty":
        src.write_bytes(b"")
    elif problem == "directory":
        src.mkdir()
    out = tmp_path / "out.onnx"
    res = invoke("convert", src, out)
    assert res.exit_code == 2
    _one_line_error(res.stderr)
    assert not out.exists()


def test_output_equal_to_input_exit_2(tmp_path) -> None:
    src = tmp_path / "m.onnx"
    shutil.copy(LENET, src)
    before = src.read_bytes()
    res = invoke("convert", src, src)
    assert res.exit_code == 2
    assert _one_line_error(res.stderr) == (
        f"onnx-fc2conv: error: {src}: the output is the input; choose another path or pass --in-place"
    )
    assert src.read_bytes() == before


def test_bad_size_option_exit_2(tmp_path) -> None:
    res = invoke("convert", LENET, tmp_path / "out.onnx", "--size", "80by96")
    assert res.exit_code == 2
    assert "80by96" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out.onnx").exists()


_real_kernel_from_weight = rewrite.kernel_from_weight


def _broken_kernel(weight, layer, perm):
    """A rewrite bug: the kernel is off by a little in one element."""
    kernel = _real_kernel_from_weight(weight, layer, perm).copy()
    kernel.reshape(-1)[3] += 0.25
    return kernel


def test_convert_verification_failure_exit_1(tmp_path, monkeypatch) -> None:
    """A wrong kernel is caught by verification: exit 1, nothing written."""
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(image_model(lambda g, x, k: gemm(g, x, k, 5, trans_b=0)), str(src))
    monkeypatch.setattr(rewrite, "kernel_from_weight", _broken_kernel)
    res = invoke("convert", src, out)
    assert res.exit_code == 1
    first = _one_line_error(res.stderr)
    assert first.startswith("onnx-fc2conv: error: verification FAILED: output 'output' (same size")
    assert "  result: FAILED" in res.stderr.splitlines()
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    res = invoke("convert", src, out, "--json")
    data = parse(res.stdout)
    assert res.exit_code == 1 and data["exit_code"] == 1 and data["verification"]["passed"] is False
    assert "FAILED" in {c["status"] for c in data["verification"]["comparisons"]}


# ------------------------------------------------------------------------------------------------
# verify: not vacuous


def _perturbed(converted: onnx.ModelProto, delta: float = 1e-2) -> onnx.ModelProto:
    """The converted model with one filter (output channel 0) of its last Conv kernel changed."""
    bad = onnx.ModelProto()
    bad.CopyFrom(converted)
    conv = [n for n in bad.graph.node if n.op_type == "Conv"][-1]
    for i, t in enumerate(bad.graph.initializer):
        if t.name == conv.input[1]:
            w = numpy_helper.to_array(t).copy()
            w[0] += delta  # one filter, not one element: a single element may meet a dead ReLU
            bad.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
    return bad


@pytest.mark.parametrize("name", ["ts_lenet5.onnx", "keras_flatten.onnx", "question_mlp.onnx"])
def test_verify_detects_one_perturbed_weight(name: str) -> None:
    original = onnx.load(str(MODELS / name))
    converted = onnx_fc2conv.convert(original).model
    good = onnx_fc2conv.verify(original, converted)
    assert good.passed and good.comparisons
    report = onnx_fc2conv.verify(original, _perturbed(converted))
    assert not report.passed
    assert report.checker == "passed"  # the model is valid; only its numbers are wrong
    failed = {c.check for c in report.failures}
    assert failed == {"same size", "larger size"}
    assert all(c.max_abs > 1e-4 for c in report.failures)


def test_cli_verify_exit_codes(tmp_path) -> None:
    conv_path, bad_path = tmp_path / "conv.onnx", tmp_path / "bad.onnx"
    assert invoke("convert", LENET, conv_path).exit_code == 0
    res = invoke("verify", LENET, conv_path)
    assert res.exit_code == 0, res.stderr
    assert "  result: PASSED" in res.stdout.splitlines()
    onnx.save(_perturbed(onnx.load(str(conv_path))), str(bad_path))
    res = invoke("verify", LENET, bad_path)
    assert res.exit_code == 1
    assert "  result: FAILED" in res.stdout.splitlines()
    assert any(line.strip().startswith("FAILED") for line in res.stdout.splitlines())
    res = invoke("verify", LENET, bad_path, "--json")
    assert res.exit_code == 1
    data = parse(res.stdout)
    assert data["status"] == "error" and data["exit_code"] == 1 and data["error"].startswith("verification FAILED")
    assert data["verification"]["passed"] is False and data["verification"]["checker"] == "passed"
    res = invoke("verify", LENET, tmp_path / "nope.onnx")
    assert res.exit_code == 2
    _one_line_error(res.stderr)


def test_inspect_json(tmp_path) -> None:
    res = invoke("inspect", MODELS / "keras_flatten.onnx", "--json")
    assert res.exit_code == 0
    data = parse(res.stdout)
    assert data["opset"] == 13 and data["head_candidates"] == 1 and data["skipped"] == []
    assert data["heads"][0]["pattern"] == "Transpose -> Reshape -> Gemm -> Gemm"
    assert data["heads"][0]["kind"] == "nhwc"


def test_console_script_subprocess(tmp_path) -> None:
    """The installed entry point, once: exit 3 for a class-token head with a one-line stderr."""
    src, out = _class_token_file(tmp_path), tmp_path / "out.onnx"
    script = shutil.which("onnx-fc2conv")
    cmd = [script] if script else [sys.executable, "-m", "onnx_fc2conv"]
    proc = subprocess.run([*cmd, "convert", str(src), str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [
        "onnx-fc2conv: error: no FC head can be rewritten exactly: "
        "Gemm 'head' reads 'take_cls_out' from Gather 'take_cls', not from a flattened feature map"
    ]
    assert not out.exists()
    proc = subprocess.run([*cmd, "convert", str(MODELS / "dynamo_view_head.onnx"), str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0
    assert proc.stderr == ""  # no onnxruntime log noise from the expected probe failures
    assert out.exists()
