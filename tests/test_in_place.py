"""`--in-place` leaves no orphaned data file."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from corpus import leftovers, save, save_external, small_model

from onnx_fc2conv import verify
from onnx_fc2conv.cli import main


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    ("location", "external_mb", "expected"),
    [
        ("weights.bin", "1024", {"model.onnx"}),
        ("weights.bin", "0", {"model.onnx", "model.onnx.data"}),
        ("model.onnx.data", "1024", {"model.onnx"}),
        ("model.onnx.data", "0", {"model.onnx", "model.onnx.data"}),
    ],
)
def test_in_place_leaves_no_orphaned_data_file(tmp_path: Path, location: str, external_mb: str, expected: set) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = save_external(small_model(), folder / "model.onnx", location=location)
    original = save(small_model(), tmp_path / "original.onnx")
    res = run("convert", "--in-place", "--external-data-mb", external_mb, path, path)
    assert res.exit_code == 0, res.stderr
    assert {p.name for p in folder.iterdir()} == expected
    assert leftovers(folder) == []
    assert verify(str(original), str(path)).passed


def test_in_place_failure_keeps_the_data_file(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = save_external(small_model(), folder / "model.onnx", location="weights.bin")
    res = run("convert", "--in-place", "--size", "1x1", path, path)  # too small to verify at: nothing changes
    assert res.exit_code != 0
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "weights.bin"}
