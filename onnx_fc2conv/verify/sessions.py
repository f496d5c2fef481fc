"""onnxruntime sessions for verification: building them (over 2 GB too) and running them.

Every failure to load or run is turned into one line (`errors.one_line`): onnxruntime names the
node and the shapes it could not handle, and that is what the user sees.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort

from ..container import without_initializers
from ..errors import ModelLoadError, one_line
from ..files import proto_size


class RunError(RuntimeError):
    """A model failed to run on the verification inputs: `what` and onnxruntime's one-line `reason`."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} cannot run: {reason}")
        self.what = what
        self.reason = reason


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    """A CPU session for verification: the graph as written, weights mapped where they are large.

    Optimisation stops at ORT_ENABLE_BASIC (constant folding, redundant nodes): fusions and the
    NCHWc layout only change how a node is computed, and the layout optimizer would copy every
    Conv kernel. Prepacking is off: it copies each Gemm/MatMul weight once more.
    """
    ort.set_default_logger_severity(4)  # failures are reported by us, in one line
    opts = ort.SessionOptions()
    # Fatal only: probing whether the original backbone or head runs at a larger size or batch
    # fails by design for size-baked models; at level 3 onnxruntime printed each such expected
    # failure to stderr, breaking the one-line-error contract of the CLI.
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.add_session_config_entry("session.disable_prepacking", "1")
    try:
        with _session_source(model, opts) as source:
            return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load the model: {one_line(exc)}") from exc


# Above this a model's weights are mapped from a file: serialized bytes would be one more copy.
MAP_THRESHOLD = 1 << 26
_LARGE_TENSOR = 1 << 20
SPILLED = "onnx_fc2conv.spilled_weights"  # metadata key: the folder a stub's weights were spilled to
_ALIGN = 1 << 16  # external data offsets on a page-aligned boundary: onnxruntime can map them


def spilled_folder(model: onnx.ModelProto) -> str | None:
    """The folder holding the weights of a stub made by `mapped`, or None for a whole model."""
    return next((p.value for p in model.metadata_props if p.key == SPILLED), None)


def map_weights(model: onnx.ModelProto, folder: str, name: str) -> onnx.ModelProto:
    """A stub of `model` whose large weights live in `folder/name.bin`, or `model` itself when small.

    Sessions built from the stub (and from cuts of it, cut.py) map the weights instead of
    copying them; `folder` must outlive those sessions' construction (the mappings outlive it).
    A caller that passes its only reference to `model` gets its memory back on return.
    """
    if proto_size(model) < MAP_THRESHOLD or spilled_folder(model) is not None:
        return model
    stub = spill_weights(model, os.path.join(folder, f"{name}.bin"))
    entry = stub.metadata_props.add()
    entry.key, entry.value = SPILLED, folder
    return stub


@contextlib.contextmanager
def mapped(model: onnx.ModelProto, name: str) -> Iterator[onnx.ModelProto]:
    """`map_weights` into a temporary folder removed on exit."""
    if proto_size(model) < MAP_THRESHOLD or spilled_folder(model) is not None:
        yield model
        return
    folder = tempfile.mkdtemp(prefix="onnx_fc2conv_weights_")
    try:
        yield map_weights(model, folder, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mapped_load(load: Callable[[], onnx.ModelProto], name: str) -> Iterator[onnx.ModelProto]:
    """The model `load()` returns, its weights moved to a temporary file (removed on exit): the
    loaded copy is freed before this yields, only its stub stays in memory."""
    folder = tempfile.mkdtemp(prefix="onnx_fc2conv_weights_")
    try:
        yield map_weights(load(), folder, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _session_source(model: onnx.ModelProto | str, opts: ort.SessionOptions) -> Iterator[str | bytes]:
    """What InferenceSession is given: a path, the serialized model, or a stub whose weights it maps.

    A stub (`map_weights`, or a cut of one) names the folder of its weights. A large model given
    whole is spilled to a temporary folder first, removed once the session is built (the mapping
    stays valid). Handing the weights over as OrtValues (`add_external_initializers`) was
    measured to cost three copies of each weight per session; mapping costs none.
    """
    if isinstance(model, str):
        yield model
        return
    with mapped(model, "weights") as stub:
        folder = spilled_folder(stub)
        if folder is not None:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        yield stub.SerializeToString()


def spill_weights(model: onnx.ModelProto, data_path: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers point into `data_path` (written here)."""
    stub = without_initializers(model)
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if t.data_location != onnx.TensorProto.DEFAULT or not t.HasField("raw_data"):
                stub.graph.initializer.append(t)
                continue
            data = t.raw_data  # one tensor's bytes at a time
            if len(data) < _LARGE_TENSOR:
                stub.graph.initializer.append(t)
                continue
            offset = f.seek(0, os.SEEK_END)
            offset += -offset % _ALIGN
            f.seek(offset)
            f.write(data)
            ext = stub.graph.initializer.add()
            ext.name, ext.data_type = t.name, t.data_type
            ext.dims.extend(t.dims)
            ext.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", os.path.basename(data_path)), ("offset", offset), ("length", len(data))):
                entry = ext.external_data.add()
                entry.key, entry.value = key, str(value)
            del data
    return stub


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Every output of `sess` by name; RunError names `what` failed and onnxruntime's reason."""
    try:
        outs = sess.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RunError(what, runtime_reason(exc)) from exc
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


_NODE_FAILED = re.compile(r"Non-zero status code returned while running (\S+) node\. Name:'(.*?)' Status Message: (.*)")
_SOURCE = re.compile(r"^\S+:\d+ ")  # onnxruntime's source file and line
_CONDITION = re.compile(r"^.*? was false\. ")  # the function and the condition that failed


def runtime_reason(exc: BaseException) -> str:
    """onnxruntime's run-time error in one line: the node, its op and what it said about the shapes.

    `Non-zero status code returned while running Reshape node. Name:'r' Status Message:
    /src/reshape_helper.h:91 ReshapeHelper(...) size == size was false. The input tensor cannot be
    reshaped ... Input shape:{1,3,5,5}, requested shape:{1,60}` becomes `Reshape node 'r': The
    input tensor cannot be reshaped ... Input shape:{1,3,5,5}, requested shape:{1,60}`.
    """
    text = one_line(exc, limit=4000)
    found = _NODE_FAILED.search(text)
    if found is None:
        return text[:300]
    op, node, message = found.groups()
    message = _SOURCE.sub("", message)
    message = _CONDITION.sub("", message) if " was false. " in message else message
    return f"{op} node '{node}': {message}"[:300]


def run_in_chunks(
    sess: ort.InferenceSession, feeds: dict[str, np.ndarray], what: str, chunk: int
) -> dict[str, np.ndarray]:
    """`sess` on a batch of images, `chunk` images per run, the outputs concatenated.

    For a model whose batch is fixed at `chunk` (or that fails at the whole batch): the result a
    model that treats each image on its own gives for the whole batch. A last, partial chunk is
    filled up with copies of its last image, whose outputs are dropped. Inputs without the
    batch's leading dim are fed unchanged.
    """
    n = max(v.shape[0] for v in feeds.values() if v.ndim)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        part = {}
        for name, value in feeds.items():
            if value.ndim and value.shape[0] == n:
                piece = value[start : start + count]
                if count < chunk:
                    piece = np.concatenate([piece, np.repeat(piece[-1:], chunk - count, axis=0)])
                value = piece
            part[name] = value
        outs = run(sess, part, what)
        for name, value in outs.items():
            if value.ndim == 0 or value.shape[0] != chunk:
                raise RunError(what, f"output '{name}' {list(value.shape)} has no batch axis to split by image")
        parts.append({name: value[:count] for name, value in outs.items()})
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
