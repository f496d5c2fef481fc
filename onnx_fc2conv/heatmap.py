"""Run a fully convolutional model on an image and overlay one class's score map on it.

Pillow is an optional dependency (`pip install 'onnx-fc2conv[image]'`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import UsageError, one_line, quoted
from .files import check_regular_target
from .geometry import Geometry, output_geometry
from .graph import import_graph, shape

log = logging.getLogger(__name__)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


@dataclass(frozen=True)
class HeatmapOptions:
    """How to prepare the image and what to draw. `mean`/`std`: one value per image channel (or one
    for all); None: ImageNet's (its first value for a one-channel model)."""

    size: tuple[int, int] | None = None  # resize the image to (height, width) first
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_index: int | None = None  # default: the class of the strongest cell
    output_name: str | None = None  # default: the first output that is a map
    top: int = 5
    alpha: float = 0.5


@dataclass(frozen=True)
class CellScore:
    """One cell of the map: its input box (start included, stop excluded) and its best classes."""

    cell: tuple[int, int]
    box: tuple[tuple[int, int], ...] | None  # ((row0, row1), (col0, col1)), stop exclusive
    classes: tuple[tuple[int, float], ...]  # (class, score), best first


@dataclass
class HeatmapResult:
    """What was drawn: the output and class, the map's and the picture's size, the strongest cells."""

    output: str
    class_index: int
    map_shape: tuple[int, int]
    image_size: tuple[int, int]  # (height, width) of the picture written
    geometry: Geometry | None
    cells: list[CellScore] = field(default_factory=list)
    geometry_reason: str | None = None  # why there is no geometry


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("the heatmap command needs Pillow: pip install 'onnx-fc2conv[image]'") from None
    return Image


def _layout(model: onnx.ModelProto) -> tuple[str, int, int]:
    """The image input's name, its channel axis (the fixed one of axes 1 to 3) and channel count."""
    for tensor in import_graph(model).inputs:
        name, dims = tensor.name, shape(tensor) or ()
        if len(dims) != 4:
            continue
        spatial = [a for a in range(1, 4) if not isinstance(dims[a], int)]
        if len(spatial) != 2:
            raise UsageError(f"input {quoted(name)} {list(dims)} has fixed spatial dims: convert the model first")
        channel = next(a for a in range(1, 4) if a not in spatial)
        return name, channel, int(dims[channel])
    raise UsageError("the model has no image input [N, C, H, W] (or [N, H, W, C])")


def picture_format(path: str | os.PathLike[str]) -> str:
    """The picture's format, from its name: PNG (.png) or JPEG (.jpg, .jpeg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in PICTURE_FORMATS:
        raise UsageError(f"{path}: the picture's name must end in .png, .jpg or .jpeg (its format follows it)")
    return PICTURE_FORMATS[suffix]


def _normalisation(given: tuple[float, ...] | None, default: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    """Per-channel values: `given` must hold one per channel or one for all; finite (std: positive)."""
    values = tuple(default[:channels]) if given is None else tuple(given)
    if len(values) not in (1, channels):
        raise UsageError(f"--{what} has {len(values)} values; the model's image has {channels} channels")
    if not all(math.isfinite(v) for v in values) or (what == "std" and min(values) <= 0):
        raise UsageError(
            f"--{what} {','.join(map(str, values))}: values must be finite" + (" and positive" if what == "std" else "")
        )
    return np.array(values, np.float32)


def _check_size(geometry: Geometry | None, height: int, width: int) -> None:
    """An image smaller than one window (the receptive field less its padding) gives no map."""
    if geometry is None or len(geometry.receptive_field) != 2:
        return
    least = [max(1, r + 2 * min(o, 0)) for r, o in zip(geometry.receptive_field, geometry.offset, strict=True)]
    if height < least[0] or width < least[1]:
        raise UsageError(
            f"the image ({height}x{width}) is smaller than one window of the model ({least[0]}x{least[1]}): "
            "use a larger image or --resize"
        )


def _colormap(v: np.ndarray) -> np.ndarray:
    """A blue-cyan-yellow-red ramp for values in [0, 1] -> uint8 RGB."""
    stops = np.array([[0, 0, 128], [0, 160, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float64)
    pos = np.clip(v, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    t = (pos - lo)[..., None]
    return (stops[lo] * (1 - t) + stops[lo + 1] * t).astype(np.uint8)


def render(
    model: onnx.ModelProto,
    image_path: str | os.PathLike[str],
    output_png: str | os.PathLike[str],
    options: HeatmapOptions,
) -> HeatmapResult:
    """Score map of one class over the image, written as a PNG or JPEG (after the picture's name);
    returns what was drawn."""
    picture_format(output_png)
    image_lib = _pillow()
    name, channel_axis, channels = _layout(model)
    if channels not in (1, 3):
        raise UsageError(f"the model's image input has {channels} channels; pictures are read as 1 (grey) or 3 (RGB)")
    mean = _normalisation(options.mean, IMAGENET_MEAN, channels, "mean")
    std = _normalisation(options.std, IMAGENET_STD, channels, "std")
    try:
        img = image_lib.open(image_path)
        img = img.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{image_path}: not a readable image ({one_line(exc)})") from exc
    if options.size is not None:
        img = img.resize((options.size[1], options.size[0]), image_lib.BILINEAR)
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    x = ((pixels - mean) / std)[None]  # NHWC
    if channel_axis == 1:
        x = x.transpose(0, 3, 1, 2)
    geometries = output_geometry(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = {o.name: o for o in sess.get_outputs()}
    out_name = options.output_name or next((o.name for o in sess.get_outputs() if len(o.shape) == 4), None)
    if out_name is None or out_name not in outputs:
        raise UsageError(
            "the model has no class-map output [N, M, h, w]" if out_name is None else f"no output {quoted(out_name)}"
        )
    geo = geometries.get(out_name)
    _check_size(geo if isinstance(geo, Geometry) else None, *pixels.shape[:2])
    try:
        (scores,) = sess.run([out_name], {name: np.ascontiguousarray(x)})
    except Exception as exc:
        raise UsageError(f"the model failed on this image: {one_line(exc, 200)}") from exc
    scores = scores[0].astype(np.float64)  # [M, h, w]
    if scores.ndim != 3:
        raise UsageError(f"output {quoted(out_name)} has shape {list(scores.shape)}, not a class map")
    best_per_class = scores.reshape(scores.shape[0], -1).max(axis=1)
    cls = options.class_index if options.class_index is not None else int(best_per_class.argmax())
    if not 0 <= cls < scores.shape[0]:
        raise UsageError(f"class {cls} is out of range: the model has {scores.shape[0]} classes")
    geometry = geo if isinstance(geo, Geometry) else None
    height, width = pixels.shape[:2]
    overlay = _overlay(scores[cls], geometry, (height, width), image_lib)
    base = np.asarray(img.convert("RGB"), dtype=np.float64)
    blended = (base * (1 - options.alpha) + overlay * options.alpha).astype(np.uint8)
    _write_picture(image_lib.fromarray(blended), Path(output_png))
    return HeatmapResult(
        out_name,
        cls,
        scores.shape[1:],
        (height, width),
        geometry,
        _top_cells(scores, cls, geometry, options.top),
        geo if isinstance(geo, str) else None,
    )


def _overlay(score: np.ndarray, geometry: Geometry | None, size: tuple[int, int], image_lib) -> np.ndarray:
    """Colour the map, one cell per stride step, centred on each cell's window."""
    lo, hi = float(score.min()), float(score.max())
    norm = (score - lo) / (hi - lo) if hi > lo else np.zeros_like(score)
    colours = image_lib.fromarray(_colormap(norm))
    height, width = size
    if geometry is None:
        return np.asarray(colours.resize((width, height), image_lib.NEAREST), dtype=np.float64)
    sy, sx = geometry.stride
    cy = geometry.offset[0] + geometry.receptive_field[0] / 2 - sy / 2
    cx = geometry.offset[1] + geometry.receptive_field[1] / 2 - sx / 2
    canvas = image_lib.new("RGB", (width, height), (0, 0, 128))
    canvas.paste(colours.resize((score.shape[1] * sx, score.shape[0] * sy), image_lib.NEAREST), (round(cx), round(cy)))
    return np.asarray(canvas, dtype=np.float64)


def _top_cells(scores: np.ndarray, cls: int, geometry: Geometry | None, top: int) -> list[CellScore]:
    """The cells where the drawn class scores highest, each with its three best classes."""
    strongest = scores[cls]
    order = np.argsort(strongest.reshape(-1))[::-1][:top]
    cells = []
    for flat in order:
        i, j = np.unravel_index(int(flat), strongest.shape)
        ranked = np.argsort(scores[:, i, j])[::-1][:3]
        cells.append(
            CellScore(
                (int(i), int(j)),
                geometry.box((int(i), int(j))) if geometry else None,
                tuple((int(c), float(scores[c, i, j])) for c in ranked),
            )
        )
    return cells


def _write_picture(picture, path: Path) -> None:
    """Atomically, like a model: a temporary file beside it, then a rename. It gets the mode of the
    picture it replaces, else 0666 less the umask (0644 usually; mkstemp's 0600 hid it from others)."""
    check_regular_target(path, "picture")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: output folder does not exist")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"  # named first: `finally` finds it
    try:
        try:
            picture.save(tmp, format=picture_format(path))  # type: ignore[attr-defined]
            if path.is_file():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            os.replace(tmp, path)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or one_line(exc)}; nothing written") from exc
    finally:
        tmp.unlink(missing_ok=True)
