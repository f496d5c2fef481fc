"""Load and save models safely: external data stays inside the model's folder, writes are atomic."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

from .container import check_as_written, container_problems, input_dims_problem, structure_problem, text_problem
from .errors import CheckerError, ModelLoadError, UsageError, one_line, quoted
from .signals import signals_deferred
from .tensor_data import all_tensors, attribute_tensors, data_type_problem, proto_size, raw_data_lengths
from .tensor_data import check_tensor_sizes as _check_tensor_sizes

__all__ = ["attribute_tensors", "load_model", "proto_size", "raw_data_lengths", "save_model", "validate_model"]

log = logging.getLogger(__name__)

TWO_GB = 2**31
DEFAULT_EXTERNAL_THRESHOLD = 1 << 30  # weights above 1 GiB go to a data file beside the model


def _int_field(t: onnx.TensorProto, info: dict[str, str], key: str, location: str) -> int | None:
    text = info.get(key)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ModelLoadError(
            f"tensor {quoted(t.name)}: external data {key} {quoted(text)} in {quoted(location)} is not a byte count"
        )
    return value


def _external_extents(model: onnx.ModelProto, base: Path) -> list[tuple[int, Path, int]]:
    """(index in all_tensors(), data file, byte count) of every external tensor, checked.

    A location must be relative, must not contain `..`, and must resolve (symlinks followed)
    to a regular file inside `base`; offset and length must lie within that file.
    """
    extents: list[tuple[int, Path, int]] = []
    root = base.resolve()
    for index, t in enumerate(all_tensors(model)):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location:
            raise ModelLoadError(f"tensor {quoted(t.name)} is external but names no data file")
        leaves = f"tensor {quoted(t.name)}: external data location {quoted(location)} leaves the model's folder"
        if "\0" in location or os.path.isabs(location) or ".." in Path(location).parts:
            raise ModelLoadError(leaves)
        target = (base / location).resolve()
        if root not in target.parents:
            raise ModelLoadError(leaves + f" (it resolves to {target})")
        if not target.exists():
            raise ModelLoadError(f"tensor {quoted(t.name)}: external data file {quoted(location)} is missing")
        if not target.is_file():
            raise ModelLoadError(f"tensor {quoted(t.name)}: external data location {quoted(location)} is not a file")
        offset = _int_field(t, info, "offset", location) or 0
        length = _int_field(t, info, "length", location)
        size = target.stat().st_size
        end = offset + (length if length is not None else 0)
        if offset > size or end > size:
            raise ModelLoadError(
                f"tensor {quoted(t.name)}: external data file {quoted(location)} is shorter ({size} bytes) "
                f"than declared (offset {offset}" + (f", length {length})" if length is not None else ")")
            )
        extents.append((index, target, size - offset if length is None else length))
    return extents


def load_model(path: str | os.PathLike[str], data_files: set[Path] | None = None) -> onnx.ModelProto:
    """Read a model and its external data; every problem becomes one ModelLoadError/UsageError line.

    The external data files read are added to `data_files` when it is given.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read ({exc.strerror or one_line(exc)})") from exc
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not an ONNX file")
    if not p.is_file():
        raise UsageError(f"{p}: not a regular file")
    if st.st_size == 0:
        raise ModelLoadError(f"{p}: empty file (0 bytes)")
    try:
        with open(p, "rb") as f:
            data = f.read()
        model = onnx.ModelProto.FromString(data)
        lengths = raw_data_lengths(data)
        del data
    except OSError as exc:
        raise UsageError(f"{p}: cannot read ({(exc.strerror or one_line(exc)).lower()})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... on garbage
        raise ModelLoadError(f"{p}: not a readable ONNX model ({one_line(exc)})") from exc
    validate_model(model, str(p))
    base = p.parent
    try:
        extents = _external_extents(model, base)
        if data_files is not None:
            data_files.update(target for _, target, _ in extents)
        known = _known_lengths(len(model.graph.initializer), lengths, extents)
        try:
            onnx.load_external_data_for_model(model, str(base))
        except Exception as exc:  # OSError, ValueError, onnx.checker.ValidationError
            raise ModelLoadError(f"cannot read external data ({one_line(exc)})") from exc
        _check_tensor_sizes(model, known)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{p}: {exc}") from exc
    return model


def _known_lengths(
    initializers: int, lengths: list[int | None] | None, extents: list[tuple[int, Path, int]]
) -> dict[int, int]:
    """raw_data lengths of the initializers (by index) known without reading their bytes: from the
    wire scan, or, for external tensors, from their checked extent in the data file."""
    known: dict[int, int] = {}
    if lengths is not None and len(lengths) == initializers:
        known.update((i, n) for i, n in enumerate(lengths) if n is not None)
    known.update((i, n) for i, _, n in extents if i < initializers)
    return known


def validate_model(model: onnx.ModelProto, where: str = "model") -> None:
    """What every later step takes for granted: an IR version, a graph with nodes, a known default opset."""
    if model.ir_version <= 0:
        raise ModelLoadError(f"{where}: not an ONNX model (no ir_version)")
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{where}: IR version {model.ir_version} is newer than this onnx ({onnx.__version__}) supports "
            f"({onnx.IR_VERSION})"
        )
    if not model.HasField("graph"):
        raise ModelLoadError(f"{where}: not an ONNX model (no graph)")
    text = text_problem(model)
    if text is not None:
        raise ModelLoadError(f"{where}: {text} (ONNX strings are UTF-8)")
    if len(model.graph.node) == 0:
        raise ModelLoadError(f"{where}: the graph is empty (no nodes)")
    default = [imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")]
    if not default:
        raise ModelLoadError(f"{where}: no default-domain opset import")
    known = onnx.defs.onnx_opset_version()
    if not 1 <= default[0] <= known:
        raise ModelLoadError(
            f"{where}: opset {default[0]} is not supported (this onnx {onnx.__version__} knows opsets 1 to {known})"
        )
    problems = container_problems(model)
    if problems:
        raise ModelLoadError(f"{where}: {problems[0]} (the ONNX checker rejects this model)")
    dims = input_dims_problem(model) or data_type_problem(model)
    if dims is not None:
        raise ModelLoadError(f"{where}: {dims}")
    structure = structure_problem(model)
    if structure is not None:
        raise ModelLoadError(f"{where}: the ONNX checker rejects this model: {structure}")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (symlinks and hard links included)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return False


def output_target(output: str | os.PathLike[str]) -> Path:
    """The file an output path names: a symlink is written through (it keeps pointing at the new file)."""
    out = Path(output)
    return Path(os.path.realpath(out)) if out.is_symlink() else out


_SPECIAL_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_target(path: str | os.PathLike[str], what: str = "output") -> None:
    """An existing output must be a regular file (followed through symlinks): a device, FIFO, socket
    or folder is never replaced by a file, and a symlink loop is no path at all."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # a new file, or a dangling symlink that will be written through
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path}: the {what} path is a loop of symbolic links; nothing written") from None
        raise UsageError(f"{path}: cannot use as the {what} ({exc.strerror or one_line(exc)})") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{path}: is a directory; give the {what} file's path")
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            raise UsageError(f"{path}: the {what} is {kind}, not a regular file; it is never replaced")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: the {what} is not a regular file; it is never replaced")


def check_output_path(
    input_path: str | os.PathLike[str] | None, output: str | os.PathLike[str], in_place: bool
) -> None:
    """Refuse, before any work, an output that cannot be written or that would overwrite the input."""
    given = Path(output)
    check_regular_target(given)
    out = output_target(given)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: output folder does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{out.parent}: output folder is not writable")
    if input_path is not None and not in_place and same_file(input_path, given):
        raise UsageError(f"{given}: the output is the input; choose another path or pass --in-place")
    data = out.parent / (out.name + ".data")
    if input_path is not None and data.exists() and same_file(input_path, data):
        raise UsageError(f"{data}: the output's data file would overwrite the input; choose another output name")


def check_free_space(model: onnx.ModelProto, output: str | os.PathLike[str]) -> None:
    """Refuse, before verification's minutes, an output folder without room for the model."""
    out = output_target(output)
    needed, free = proto_size(model), shutil.disk_usage(out.parent).free
    if needed > free:
        raise UsageError(f"{out.parent}: {needed / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free; nothing written")


def save_model(
    model: onnx.ModelProto,
    output: str | os.PathLike[str],
    *,
    external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD,
    protected: set[Path] | None = None,
    check: Callable[[str], None] | None = None,
    superseded: set[Path] | None = None,
) -> Path | None:
    """Write atomically: everything goes to a temporary folder beside the output, the data file
    is moved into place first and the model last (`os.replace`). Returns the data file's path,
    if one was written.

    Weights go to `<output>.data` when the model is larger than `external_threshold` (or than
    protobuf's 2 GB limit): tensors of 1 KiB or more, every tensor when the threshold is 0. A stale
    data file of that name is replaced, never appended to.
    Saving with external data moves the weights out of `model`. `check(path)` runs on the
    temporary model before anything is moved; when it raises, nothing is written. When the
    final move of the model fails, the previous data file is put back. `superseded`: data files of
    the model being replaced (--in-place) that are removed once the new model is in place, unless
    it uses them too.
    """
    out = output_target(output)
    size = proto_size(model)
    external = size > external_threshold or size >= TWO_GB - (1 << 20)
    data_name = out.name + ".data"
    data_path = out.parent / data_name
    if external and protected and data_path.resolve() in protected:
        raise UsageError(f"{data_path}: would overwrite the input's external data; choose another output name")
    check_regular_target(out)
    if external:
        check_regular_target(data_path, "output's data file")
    try:
        check_as_written(model)
    except Exception as exc:  # ValueError, ValidationError, shape inference's own errors
        raise CheckerError(f"the converted model fails the ONNX checker: {one_line(exc)}; nothing written") from exc
    # Names first, creation second: whatever interrupts after a file exists finds its name in `finally`.
    token = secrets.token_hex(8)
    tmpdir = out.parent / f".{out.name}.{token}.tmp"
    # A big file written into a brand-new folder is markedly slower on ext4 (1.7x measured for
    # 528 MB): an inline model goes to a temporary file beside the output instead.
    tmp_model = tmpdir / out.name if external else out.parent / f".{out.name}.{token}.model.tmp"
    try:
        try:
            tmpdir.mkdir(mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot write in {out.parent}: {exc.strerror or one_line(exc)}; nothing written") from exc
        try:
            if external:
                onnx.save_model(
                    model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=min(1024, external_threshold),
                )  # fmt: skip
            else:
                onnx.save_model(model, str(tmp_model))
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or one_line(exc)}; nothing written") from exc
        external = external and (tmpdir / data_name).is_file()  # every tensor may have stayed inline
        _set_modes(tmp_model, tmpdir / data_name if external else None, out)
        if check is not None:
            check(str(tmp_model))
        with _folder_lock(out.parent), signals_deferred(str(out)):  # one writer at a time; a stop waits
            _move_into_place(tmpdir, tmp_model, out, data_path if external else None)
            _remove_superseded(superseded or set(), out, data_path if external else None)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmp_model.unlink(missing_ok=True)
    log.info("wrote %s%s", out, f" and {data_name}" if external else "")
    return data_path if external else None


def _remove_superseded(files: set[Path], out: Path, data_path: Path | None) -> None:
    """The replaced model's data files the new one does not use: orphans once it is in place."""
    keep = {p.resolve() for p in (out, data_path) if p is not None}
    for path in files:
        if path.resolve() in keep or not path.is_file():
            continue
        try:
            path.unlink()
            log.info("removed %s (the replaced model's data, unused now)", path)
        except OSError as exc:
            log.warning("could not remove %s, the replaced model's data: %s", path, exc.strerror)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Writers into one folder take turns for their renames (an exclusive flock on the folder), so
    that two runs writing one output never leave the model of one beside the data file of the other.
    Where the folder cannot be locked (no flock, a file system without it) the renames run unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("cannot lock %s: %s", folder, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another run moves its files into place
        except OSError as exc:
            log.debug("cannot lock %s: %s", folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def _set_modes(tmp_model: Path, tmp_data: Path | None, out: Path) -> None:
    """The files get the mode of the file they replace, else the umask's default (as the model
    file, which open() created); onnx creates data files 0600, unreadable to other users."""
    try:
        mode = stat.S_IMODE((out if out.is_file() else tmp_model).stat().st_mode)
        for f in (tmp_model, tmp_data):
            if f is not None:
                os.chmod(f, mode)
    except OSError as exc:
        log.warning("could not set the mode of %s: %s", out, exc)


def _move_into_place(tmpdir: Path, tmp_model: Path, out: Path, data_path: Path | None) -> None:
    """Data file first, model last; if the model cannot be moved, restore the previous data file."""
    backup: Path | None = None
    existed = data_path is not None and data_path.exists()
    try:
        if data_path is not None:
            if existed:
                backup = tmpdir / "previous.data"
                try:
                    os.link(data_path, backup)
                except OSError:  # no hard links here: the window stays (two back-to-back renames)
                    backup = None
            os.replace(tmpdir / data_path.name, data_path)
        os.replace(tmp_model, out)
    except OSError as exc:
        if data_path is not None:
            try:
                if backup is not None:
                    os.replace(backup, data_path)
                elif not existed:
                    data_path.unlink(missing_ok=True)
            except OSError:
                log.warning("could not restore %s", data_path)
        raise UsageError(f"cannot write {out}: {exc.strerror or one_line(exc)}; nothing written") from exc
