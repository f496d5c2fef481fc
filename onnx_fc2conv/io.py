"""Load and save models safely: external data stays inside the model's folder, writes are atomic."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import ModelLoadError, UsageError

log = logging.getLogger(__name__)

TWO_GB = 2**31
DEFAULT_EXTERNAL_THRESHOLD = 1 << 30  # weights above 1 GiB go to a data file beside the model


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _all_tensors(model.graph)
    for f in model.functions:
        for node in f.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t


def external_files(model: onnx.ModelProto, base: Path) -> set[Path]:
    """The data files a model's external tensors point to (resolved, checked to stay under `base`)."""
    files: set[Path] = set()
    root = base.resolve()
    for t in all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location:
            raise ModelLoadError(f"tensor '{t.name}' is external but names no data file")
        if os.path.isabs(location) or ".." in Path(location).parts:
            raise ModelLoadError(f"tensor '{t.name}': external data location '{location}' leaves the model's folder")
        target = (base / location).resolve()
        if root not in target.parents:
            raise ModelLoadError(f"tensor '{t.name}': external data location '{location}' leaves the model's folder")
        if not target.is_file():
            raise ModelLoadError(f"tensor '{t.name}': external data file '{location}' is missing")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        if offset < 0 or (length is not None and offset + int(length) > size) or offset > size:
            raise ModelLoadError(f"tensor '{t.name}': external data file '{location}' is shorter than declared")
        files.add(target)
    return files


def _check_tensor_sizes(model: onnx.ModelProto) -> None:
    for t in all_tensors(model):
        if not t.HasField("raw_data") or t.data_type in (onnx.TensorProto.STRING, 0):
            continue
        count = 1
        for d in t.dims:
            count *= d
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            continue
        bits = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
        expected = (count + 1) // 2 if t.data_type in bits else count * itemsize
        if len(t.raw_data) != expected:
            raise ModelLoadError(
                f"tensor '{t.name}' holds {len(t.raw_data)} bytes but its dims {list(t.dims)} need {expected}"
            )


def load_model(path: str | os.PathLike[str], data_files: set[Path] | None = None) -> onnx.ModelProto:
    """Read a model and its external data; every problem becomes one ModelLoadError/UsageError line.

    The external data files read are added to `data_files` when it is given.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not an ONNX file")
    size = p.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{p}: empty file (0 bytes)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{p}: not a readable ONNX model ({_short(exc)})") from exc
    except Exception as exc:  # protobuf raises implementation-specific errors on garbage
        raise ModelLoadError(f"{p}: not a readable ONNX model ({_short(exc)})") from exc
    validate_model(model, str(p))
    base = p.parent
    files = external_files(model, base)
    if data_files is not None:
        data_files.update(files)
    try:
        onnx.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{p}: cannot read external data ({_short(exc)})") from exc
    _check_tensor_sizes(model)
    return model


def validate_model(model: onnx.ModelProto, where: str = "model") -> None:
    if model.ir_version <= 0:
        raise ModelLoadError(f"{where}: not an ONNX model (no ir_version)")
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{where}: the graph is empty")
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
        raise ModelLoadError(f"{where}: no default-domain opset import")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def check_output_path(
    input_path: str | os.PathLike[str] | None, output: str | os.PathLike[str], in_place: bool
) -> None:
    out = Path(output)
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give the output file's path")
    if not out.parent.exists():
        raise UsageError(f"{out.parent}: output folder does not exist")
    if input_path is not None and not in_place and same_file(input_path, out):
        raise UsageError(f"{out}: the output is the input; choose another path or pass --in-place")


def save_model(
    model: onnx.ModelProto,
    output: str | os.PathLike[str],
    *,
    external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD,
    protected: set[Path] | None = None,
    check: Callable[[str], None] | None = None,
) -> Path | None:
    """Write atomically: everything goes to a temporary folder beside the output, the data file
    is moved into place first and the model last. Returns the data file's path, if one was written.

    Weights go to `<output>.data` when the model is larger than `external_threshold` (or than
    protobuf's 2 GB limit). Saving with external data moves the weights out of `model`.
    """
    out = Path(output)
    size = model.ByteSize()
    external = size > external_threshold or size >= TWO_GB - (1 << 20)
    data_name = out.name + ".data"
    data_path = out.parent / data_name
    if external and protected and data_path.resolve() in protected:
        raise UsageError(f"{data_path}: would overwrite the input's external data; choose another output name")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp_model = tmpdir / out.name
        if external:
            onnx.save_model(
                model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                location=data_name, size_threshold=1024,
            )  # fmt: skip
        else:
            onnx.save_model(model, str(tmp_model))
        if check is not None:
            check(str(tmp_model))
        if external:
            os.replace(tmpdir / data_name, data_path)
        os.replace(tmp_model, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    log.info("wrote %s%s", out, f" and {data_name}" if external else "")
    return data_path if external else None
