"""Cut a part out of a model (original nodes and weights) with onnx-graphsurgeon.

The reference for a larger size is built from cuts of the *original* model: its backbone (the
graph input to the heads' feature maps), each head (its input to its outputs), or the whole
graph with every input dim left free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import onnx
import onnx_graphsurgeon as gs

from ..files import attribute_tensors
from ..graph import constant
from .model_types import TensorType
from .sessions import SPILLED, spilled_folder


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
    it was exported at). A cut of a stub (`sessions.map_weights`) refers to the same weight file:
    its session maps only the weights the part uses.
    """
    with _tensor_names_kept(model):
        part = _cut_graph(model, types, inputs=inputs, outputs=outputs, size_free=size_free)
    folder = spilled_folder(model)
    if folder is not None:
        entry = part.metadata_props.add()
        entry.key, entry.value = SPILLED, folder
    return part


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
        if known is not None:  # inferred, not as declared: a stale value_info may name another type
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(known.elem_type)
        t.shape = None
        new_outputs.append(t)
    graph.inputs = new_inputs
    graph.outputs = new_outputs
    _batch_read_from_first(graph, new_inputs[0])
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    part = gs.export_onnx(graph, do_type_check=False)
    part.ir_version = model.ir_version
    del part.opset_import[:]
    part.opset_import.extend(model.opset_import)
    part.graph.ClearField("value_info")
    return part


def _batch_read_from_first(graph: gs.Graph, first: gs.Tensor) -> None:
    """A part that reads only the batch of a graph input it does not have reads it from its first
    input instead: a map cut from the image keeps the image's batch on axis 0. Dynamo writes
    `Shape(x, start=0, end=1)` for `view(x.size(0), -1)` when the spatial dims are symbolic;
    TorchScript `Shape(x) -> Gather(0)` for a batch read at the top of `forward`."""
    kept = {id(t) for t in graph.inputs}
    for node in graph.nodes:
        source = node.inputs[0] if node.op == "Shape" and node.inputs else None
        if source is None or id(source) in kept or source.inputs or isinstance(source, gs.Constant):
            continue
        if _reads_only_batch(node):
            node.inputs[0] = first


def _reads_only_batch(shape_node: gs.Node) -> bool:
    """The Shape's result is used only for its first element (start=0, end=1; or every reader a
    Gather of index 0 or a Slice [0:1])."""
    if int(shape_node.attrs.get("start", 0)) != 0:
        return False
    if shape_node.attrs.get("end") == 1:
        return True
    readers = shape_node.outputs[0].outputs
    return bool(readers) and all(_first_element(reader) for reader in readers)


def _first_element(node: gs.Node) -> bool:
    values = [constant(t) for t in node.inputs[1:]]
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
        return values[0] is not None and values[0].size == 1 and int(values[0].reshape(-1)[0]) == 0
    if node.op == "Slice" and len(values) >= 2 and all(v is not None for v in values[:2]):
        axes, steps = (values[k] if len(values) > k else None for k in (2, 3))
        starts, ends = values[0].reshape(-1), values[1].reshape(-1)
        single = starts.size == 1 and all(
            v is None or v.reshape(-1).tolist() == [w] for v, w in ((axes, 0), (steps, 1))
        )
        return single and int(starts[0]) == 0 and int(ends[0]) == 1
    return False
