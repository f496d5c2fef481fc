"""`--json` prints exactly one JSON document for every outcome of every subcommand, and it validates
against onnx_fc2conv/schema/report.schema.json; `--json-file` writes the same document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from corpus import save, small_model
from json_contract import parse
from onnx import numpy_helper

import onnx_fc2conv.api as api
from onnx_fc2conv.cli import main
from onnx_fc2conv.report import SCHEMA_VERSION, tool_version

MODELS = Path(__file__).resolve().parent.parent / "models"
LENET = MODELS / "ts_lenet5.onnx"
IMAGE = MODELS / "example.png"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _doc(res, code: int, command: str) -> dict:
    assert res.exit_code == code, res.stderr
    doc = parse(res.stdout)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["tool_version"] == tool_version()
    assert doc["command"] == command and doc["exit_code"] == code
    assert doc["status"] == ("ok" if code == 0 else "interrupted" if code > 3 else "error")
    if code:
        assert res.stderr.splitlines()[0] == f"onnx-fc2conv: error: {doc['error']}"
    return doc


def _class_token(tmp_path: Path) -> Path:
    m = small_model()
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    gemm.attribute.append(onnx.helper.make_attribute("transA", 1))
    tr = onnx.helper.make_node("Transpose", [gemm.input[0]], ["t_out"], name="tr", perm=[1, 0])
    gemm.input[0] = "t_out"
    m.graph.node.insert(list(m.graph.node).index(gemm), tr)
    return save(m, tmp_path / "transa.onnx")


def _perturbed_copy(converted: Path, tmp_path: Path) -> Path:
    model = onnx.load(str(converted))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    init = next(t for t in model.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(init).copy()
    w[0] += 0.1
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return save(model, tmp_path / "bad.onnx")


# --------------------------------------------------------------------------- convert


def test_convert_ok_and_json_file(tmp_path: Path) -> None:
    out, report = tmp_path / "c.onnx", tmp_path / "report.json"
    res = run("convert", LENET, out, "--json", "--json-file", report, "--external-data-mb", "0")
    doc = _doc(res, 0, "convert")
    assert doc["files"] == {"input": str(LENET), "output": str(out), "data": str(tmp_path / "c.onnx.data")}
    assert json.loads(report.read_text()) == doc
    assert doc["geometry"]["output"]["available"] is True and doc["geometry"]["output"]["reason"] is None


def test_json_file_beside_a_text_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    res = run("convert", "--no-verify", LENET, tmp_path / "c.onnx", "--json-file", report)
    assert res.exit_code == 0 and res.stdout.splitlines()[-1] == f"wrote {tmp_path / 'c.onnx'}"
    doc = parse(report.read_text())
    assert doc["verification"] is None and doc["status"] == "ok"
    mask = os.umask(0)
    os.umask(mask)
    assert report.stat().st_mode & 0o777 == 0o666 & ~mask


def test_convert_verification_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = api._verify_models

    def perturbed(original, converted, heads, options):  # type: ignore[no-untyped-def]
        bad = onnx.ModelProto()
        bad.CopyFrom(converted)
        conv = [n for n in bad.graph.node if n.op_type == "Conv"][-1]
        init = next(t for t in bad.graph.initializer if t.name == conv.input[1])
        w = numpy_helper.to_array(init).copy()
        w[0] += 0.1
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return real(original, bad, heads, options)

    monkeypatch.setattr(api, "_verify_models", perturbed)
    doc = _doc(run("convert", LENET, tmp_path / "c.onnx", "--json"), 1, "convert")
    assert doc["error_type"] == "VerificationError" and doc["verification"]["passed"] is False
    assert not (tmp_path / "c.onnx").exists()


def test_convert_not_convertible(tmp_path: Path) -> None:
    doc = _doc(run("convert", _class_token(tmp_path), tmp_path / "c.onnx", "--json"), 3, "convert")
    assert doc["error_type"] == "NotConvertibleError" and len(doc["reasons"]) == 1


@pytest.mark.parametrize(
    ("args", "error_type", "fragment"),
    [
        (["--size", "0x5"], "UsageError", "'0x5' is not a size like 320x256"),
        (["--atol", "abc"], "UsageError", "'abc' is not a valid float"),
        (["--no-such-option"], "UsageError", "No such option '--no-such-option'"),
    ],
)
def test_convert_usage_errors(tmp_path: Path, args: list[str], error_type: str, fragment: str) -> None:
    res = run("convert", LENET, tmp_path / "c.onnx", "--json", *args)
    doc = _doc(res, 2, "convert")
    assert doc["error_type"] == error_type and fragment in doc["error"], doc["error"]
    assert doc["error"].endswith("(see onnx-fc2conv convert --help)")
    assert len(res.stderr.splitlines()) == 1


def test_convert_invalid_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    doc = _doc(run("convert", bad, tmp_path / "c.onnx", "--json"), 2, "convert")
    assert doc["error_type"] == "ModelLoadError" and doc["files"]["input"] == str(bad)


def test_unforeseen_error_is_a_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(api, "convert_file", boom)
    doc = _doc(run("convert", LENET, tmp_path / "c.onnx", "--json"), 2, "convert")
    assert doc["error"] == "ValueError: a bug (rerun with --debug)" and doc["error_type"] == "ValueError"


def test_unknown_command(tmp_path: Path) -> None:
    doc = _doc(run("frobnicate", "--json"), 2, "")
    assert "No such command 'frobnicate'" in doc["error"]


# --------------------------------------------------------------------------- inspect, verify, heatmap


def test_inspect_ok_and_error(tmp_path: Path) -> None:
    doc = _doc(run("inspect", LENET, "--json"), 0, "inspect")
    assert doc["files"] == {"input": str(LENET)}
    assert doc["inputs"] == [{"name": "input", "old_shape": [1, 1, 32, 32], "new_shape": None}]
    doc = _doc(run("inspect", tmp_path / "missing.onnx", "--json"), 2, "inspect")
    assert doc["error_type"] == "UsageError"


def test_verify_ok_failed_and_error(tmp_path: Path) -> None:
    good = tmp_path / "c.onnx"
    assert run("convert", LENET, good).exit_code == 0
    doc = _doc(run("verify", LENET, good, "--json"), 0, "verify")
    assert doc["files"] == {"original": str(LENET), "converted": str(good)} and doc["verification"]["passed"]
    res = run("verify", LENET, _perturbed_copy(good, tmp_path), "--json")
    doc = _doc(res, 1, "verify")
    assert doc["verification"]["passed"] is False and doc["error"].startswith("verification FAILED: output 'output'")
    doc = _doc(run("verify", LENET, tmp_path / "nope.onnx", "--json"), 2, "verify")
    assert "verification" not in doc


def test_verify_failed_text(tmp_path: Path) -> None:
    good = tmp_path / "c.onnx"
    assert run("convert", LENET, good).exit_code == 0
    res = run("verify", LENET, _perturbed_copy(good, tmp_path))
    assert res.exit_code == 1
    assert "  result: FAILED" in res.stdout.splitlines()
    assert res.stderr.startswith("onnx-fc2conv: error: verification FAILED: output 'output'")


def test_heatmap_ok_and_errors(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    picture = tmp_path / "h.png"
    doc = _doc(run("heatmap", MODELS / "ts_colour_demo.onnx", IMAGE, picture, "--json"), 0, "heatmap")
    assert doc["files"] == {"model": str(MODELS / "ts_colour_demo.onnx"), "image": str(IMAGE), "picture": str(picture)}
    assert doc["geometry"][doc["output_name"]]["available"] is True
    doc = _doc(run("heatmap", MODELS / "ts_colour_demo.onnx", IMAGE, picture, "--class", "9", "--json"), 2, "heatmap")
    assert "class 9 is out of range" in doc["error"]
    doc = _doc(run("heatmap", MODELS / "ts_colour_demo.onnx", IMAGE, picture, "--resize", "5", "--json"), 2, "heatmap")
    assert "'5' is not a size like 320x256 (height x width)" in doc["error"]


def test_geometry_unavailable_has_a_reason(tmp_path: Path) -> None:
    """The MLP's output map has no window geometry in the backbone sense: a record with the reason."""
    doc = _doc(run("inspect", MODELS / "dynamo_resnet_gap.onnx", "--json"), 0, "inspect")
    for record in doc["geometry"].values():
        assert set(record) == {"output", "available", "reason", "input", "stride", "receptive_field", "offset"}
        assert (record["reason"] is None) == record["available"]
    assert any(not r["available"] for r in doc["geometry"].values())


def test_same_keys_same_meaning(tmp_path: Path) -> None:
    """`inputs` is a list of {name, old_shape, new_shape} in convert and inspect."""
    converted = _doc(run("convert", "--no-verify", LENET, tmp_path / "c.onnx", "--json"), 0, "convert")
    inspected = _doc(run("inspect", LENET, "--json"), 0, "inspect")
    for doc in (converted, inspected):
        assert [set(i) for i in doc["inputs"]] == [{"name", "old_shape", "new_shape"}]
    assert converted["inputs"][0]["old_shape"] == inspected["inputs"][0]["old_shape"]
    assert set(converted["geometry"]) == set(inspected["geometry"]) == {"output"}
