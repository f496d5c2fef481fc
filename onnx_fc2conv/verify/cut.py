"""Cut a part out of a model (original nodes and weights) with onnx-graphsurgeon.

The reference for a larger size is built from cuts of the *original* model: its backbone (the
graph input to the heads' feature maps), each head (its input to its outputs), or the whole
graph with every input dim left free.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import onnx
import onnx_graphsurgeon as gs

from ..files import attribute_tensors, proto_size
from .model_types import TensorType
from .sessions import SERIALIZE_LIMIT, SPILLED, spill_weights


def cut(
    model: onnx.ModelProto,
    types: dict[str, TensorType],
    *,
    inputs: list[str],
    outputs: list[str],
    size_free: bool = False,
) -> onnx.ModelProto:
    """The part of `model` between `inputs` and `outputs`; `model` is left as it was.

    `types` holds the tensors' types (from a shape-inferred copy of `model`). The new inputs get
    a free batch dim; with `size_free` every dim is free (a backbone fed at a larger size than
    it was exported at). Over protobuf's 2 GB the weights are spilled to a temporary folder that
    `sessions.session` maps and then removes.
    """
    if proto_size(model) >= SERIALIZE_LIMIT:  # protobuf cannot copy a tensor over 2 GB: cut a stub
        folder = tempfile.mkdtemp(prefix="onnx_fc2conv_cut_")
        try:
            stub = spill_weights(model, os.path.join(folder, "weights.bin"))
            part = _cut_graph(stub, types, inputs=inputs, outputs=outputs, size_free=size_free)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        entry = part.metadata_props.add()
        entry.key, entry.value = SPILLED, folder
        return part
    with _tensor_names_kept(model):
        return _cut_graph(model, types, inputs=inputs, outputs=outputs, size_free=size_free)


@contextlib.contextmanager
def _tensor_names_kept(model: onnx.ModelProto) -> Iterator[None]:
    """onnx-graphsurgeon's exporter writes `name` into the TensorProtos it was imported from
    (weights are shared, not copied), so cutting `model` would rename the caller's Constant
    attribute tensors: convert() and verify() promise to leave their inputs untouched."""
    saved = []
    for tensor in attribute_tensors(model.graph):
        saved.append((tensor, tensor.name if tensor.HasField("name") else None))
    saved += [(t, t.name) for t in model.graph.initializer]
    try:
        yield
    finally:
        for tensor, name in saved:
            if name is None:
                tensor.ClearField("name")
            else:
                tensor.name = name


def _cut_graph(
    model: onnx.ModelProto, types: dict[str, TensorType], *, inputs: list[str], outputs: list[str], size_free: bool
) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    new_inputs = []
    for name in inputs:
        t = tensors[name]
        known = types.get(name)
        if known is not None:
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(known.elem_type)
            if known.dims is not None:
                t.shape = [
                    d if isinstance(d, int) and i > 0 and not size_free else f"{name}_d{i}"
                    for i, d in enumerate(known.dims)
                ]
        new_inputs.append(t)
    new_outputs = []
    for name in outputs:
        t = tensors[name]
        known = types.get(name)
        if t.dtype is None and known is not None:
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(known.elem_type)
        t.shape = None
        new_outputs.append(t)
    graph.inputs = new_inputs
    graph.outputs = new_outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    part = gs.export_onnx(graph, do_type_check=False)
    part.ir_version = model.ir_version
    del part.opset_import[:]
    part.opset_import.extend(model.opset_import)
    part.graph.ClearField("value_info")
    return part
