"""Usage errors are usage errors: exit 2 with one line naming the option, never the catch-all; the
picture's format follows its name; pictures get the permissions models get."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnx_fc2conv.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"
VGG = MODELS / "ts_vgg_small.onnx"
DEMO = MODELS / "ts_colour_demo.onnx"
IMAGE = MODELS / "example.png"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fc2conv: error: "), res.stderr
    assert "rerun with --debug" not in lines[0] and "Traceback" not in res.output
    return lines[0].removeprefix("onnx-fc2conv: error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--size", "0x5"],
            "Invalid value for '--size': '0x5' is not a size like 320x256 (positive integers) "
            "(see onnx-fc2conv convert --help)",
        ),
        (
            ["--size", "64by64"],
            "Invalid value for '--size': '64by64' is not a size like 320x256 (positive integers) "
            "(see onnx-fc2conv convert --help)",
        ),
    ],
)
def test_convert_size(tmp_path: Path, args: list[str], message: str) -> None:
    assert one_line(run("convert", VGG, tmp_path / "c.onnx", *args)) == message
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def picture_dir(tmp_path: Path) -> Iterator[Path]:
    pytest.importorskip("PIL")
    yield tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mean", "1,2"], "--mean has 2 values; the model's image has 3 channels"),
        (["--std", "0.2,0.2,0.2,0.2"], "--std has 4 values; the model's image has 3 channels"),
        (["--std", "0,1,1"], "--std 0.0,1.0,1.0: values must be finite and positive"),
        (
            ["--mean", "a,b"],
            "Invalid value for '--mean': 'a,b' is not a comma-separated list of numbers "
            "(see onnx-fc2conv heatmap --help)",
        ),
        (
            ["--resize", "16x16"],
            "the image (16x16) is smaller than one window of the model (64x64): use a larger image or --resize",
        ),
        (
            ["--resize", "64"],
            "Invalid value for '--resize': '64' is not a size like 320x256 (height x width) "
            "(see onnx-fc2conv heatmap --help)",
        ),
    ],
)
def test_heatmap_options(picture_dir: Path, args: list[str], message: str) -> None:
    assert one_line(run("heatmap", VGG, IMAGE, picture_dir / "h.png", *args)) == message
    assert list(picture_dir.iterdir()) == []


def test_one_mean_for_every_channel(picture_dir: Path) -> None:
    assert run("heatmap", DEMO, IMAGE, picture_dir / "h.png", "--mean", "0.5", "--std", "0.25").exit_code == 0


@pytest.mark.parametrize(
    ("name", "magic"), [("h.png", b"\x89PNG"), ("h.jpg", b"\xff\xd8\xff"), ("H.JPEG", b"\xff\xd8")]
)
def test_picture_format_follows_the_name(picture_dir: Path, name: str, magic: bytes) -> None:
    res = run("heatmap", DEMO, IMAGE, picture_dir / name)
    assert res.exit_code == 0, res.stderr
    assert (picture_dir / name).read_bytes().startswith(magic)


def test_unknown_picture_format_refused(picture_dir: Path) -> None:
    line = one_line(run("heatmap", DEMO, IMAGE, picture_dir / "h.gif"))
    assert (
        line == f"{picture_dir / 'h.gif'}: the picture's name must end in .png, .jpg or .jpeg (its format follows it)"
    )
    assert list(picture_dir.iterdir()) == []


def test_picture_mode_like_a_model(picture_dir: Path) -> None:
    previous = os.umask(0o022)
    try:
        out = picture_dir / "h.png"
        assert run("heatmap", DEMO, IMAGE, out).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o644
        out.chmod(0o600)
        assert run("heatmap", DEMO, IMAGE, out).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o600, "a replaced picture keeps its mode"
        assert sorted(p.name for p in picture_dir.iterdir()) == ["h.png"]
    finally:
        os.umask(previous)
