"""The heatmap command: a class map drawn over an image, written as a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from json_contract import parse

from onnx_fc2conv.cli import main

PIL = pytest.importorskip("PIL.Image")

MODELS = Path(__file__).resolve().parent.parent / "models"
IMAGE = MODELS / "example.png"


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_heatmap_writes_a_png_of_the_image_size(tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    result = _run("heatmap", str(MODELS / "ts_vgg_small.onnx"), str(IMAGE), str(out), "--top", "3")
    assert result.exit_code == 0, result.output
    with PIL.open(IMAGE) as src, PIL.open(out) as picture:
        assert picture.format == "PNG"
        assert picture.size == src.size
    lines = result.output.strip().splitlines()
    # 192 x 256 image, stride 16, receptive field 94: (192 - 64) / 16 + 1 = 9 rows, (256 - 64) / 16 + 1 = 13 cols
    assert "map 9x13 over a 192x256 image" in lines[0]
    assert len(lines) == 4 and all(line.lstrip().startswith("cell (") for line in lines[1:])


def test_heatmap_resize_class_and_json(tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    result = _run(
        "heatmap",
        str(MODELS / "ts_vgg_small.onnx"),
        str(IMAGE),
        str(out),
        "--resize",
        "96x128",
        "--class",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = parse(result.stdout)
    assert payload["class"] == 4
    assert payload["image_size"] == [96, 128]
    assert payload["map_shape"] == [3, 5]
    assert payload["geometry"][payload["output_name"]]["stride"] == [16, 16]
    first = payload["cells"][0]
    assert len(first["classes"]) == 3 and len(first["box"]) == 2
    with PIL.open(out) as picture:
        assert picture.size == (128, 96)


def test_heatmap_on_a_nhwc_model(tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    result = _run("heatmap", str(MODELS / "keras_flatten.onnx"), str(IMAGE), str(out), "--resize", "64x80")
    assert result.exit_code == 0, result.output
    with PIL.open(out) as picture:
        assert picture.size == (80, 64)


def test_heatmap_errors_are_one_line(tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    not_an_image = tmp_path / "x.png"
    not_an_image.write_bytes(b"not a picture")
    result = CliRunner().invoke(main, ["heatmap", str(MODELS / "ts_vgg_small.onnx"), str(not_an_image), str(out)])
    assert result.exit_code == 2
    assert "not a readable image" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    bad_class = CliRunner().invoke(
        main, ["heatmap", str(MODELS / "ts_vgg_small.onnx"), str(IMAGE), str(out), "--class", "99"]
    )
    assert bad_class.exit_code == 2 and "class 99 is out of range" in bad_class.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("cls", "region"),
    [(0, ((40, 110), (40, 110))), (1, ((90, 170), (150, 230))), (2, ((20, 75), (90, 170)))],
)
def test_colour_demo_finds_each_shape(tmp_path: Path, cls: int, region: tuple) -> None:
    """models/example.png holds a yellow disc, a green square and a red triangle: each class map peaks there."""
    result = _run(
        "heatmap",
        str(MODELS / "ts_colour_demo.onnx"),
        str(IMAGE),
        str(tmp_path / "h.png"),
        "--class",
        str(cls),
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = parse(result.stdout)
    best = max(payload["cells"], key=lambda c: dict((k["class"], k["score"]) for k in c["classes"]).get(cls, -1))
    (r0, r1), (c0, c1) = best["box"]
    centre = ((r0 + r1) / 2, (c0 + c1) / 2)
    (top, bottom), (left, right) = region
    assert top <= centre[0] <= bottom and left <= centre[1] <= right, (cls, best)
