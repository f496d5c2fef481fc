"""What the ONNX checker says about a model as a file, without a second copy of its weights.

`onnx.checker.check_model(full_check=True)` serializes the whole model. Shape inference and the
node checks run on a light copy instead, in which large initializers are declared as graph inputs
(their dims and type are all those checks need). What that copy hides is checked here in Python on
every tensor: the IR version's rules about initializers, duplicate names, and tensors that hold
their values in more than one field. The byte count of each payload against its dims is checked
when a model is loaded (tensor_data.check_tensor_sizes).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import helper

from .errors import quoted
from .tensor_data import all_tensors

# Initializers up to this many elements stay whole in the light copy (shape targets, axes, ...).
_LIGHT_KEEP_ELEMENTS = 4096

_TYPED = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _stored_in(t: onnx.TensorProto) -> list[str]:
    """The payload fields a tensor uses (the checker wants exactly one, or none when external)."""
    fields = [name for name in _TYPED if len(getattr(t, name))]
    if t.HasField("raw_data") and (not fields or len(t.raw_data)):  # only a suspect tensor's bytes are read
        fields.insert(0, "raw_data")
    return fields


def _duplicates(names: Iterator[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def container_problems(model: onnx.ModelProto) -> list[str]:
    """Why the checker would reject the model for what a light copy hides; [] when nothing.

    IR versions 1-2 cannot carry opset imports; IR 3 wants every initializer among the graph
    inputs; initializer names and metadata keys must be unique; a tensor holds its values in one
    field (external tensors in none).
    """
    problems: list[str] = []
    ir = model.ir_version
    if 0 < ir < 3 and len(model.opset_import):
        problems.append(f"IR version {ir} cannot carry opset imports (IR 3 introduced them)")
    graph = model.graph
    if 0 < ir < 4:
        inputs = {vi.name for vi in graph.input}
        missing = next((t.name for t in graph.initializer if t.name not in inputs), None)
        if missing is not None:
            problems.append(f"IR version {ir} needs every initializer among the graph inputs; {quoted(missing)} is not")
    twice = _duplicates(t.name for t in graph.initializer)
    if twice is not None:
        problems.append(f"initializer {quoted(twice)} is defined twice")
    key = _duplicates(p.key for p in model.metadata_props)
    if key is not None:
        problems.append(f"metadata key {quoted(key)} appears twice")
    for t in all_tensors(model):
        fields = _stored_in(t)
        if t.data_location == onnx.TensorProto.EXTERNAL and fields:
            problems.append(f"tensor {quoted(t.name)} is external but also holds values in {fields[0]}")
            break
        if len(fields) > 1:
            problems.append(f"tensor {quoted(t.name)} holds its values twice, in {' and '.join(fields)}")
            break
    return problems


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every field of the model, except that large initializers of the main graph become graph inputs
    of the same type and dims (declared once). The IR version is the model's own."""
    out = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(out, field, value)
    graph = out.graph
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(graph, field, value)
    declared = {vi.name for vi in graph.input}
    for t in model.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        if count <= _LIGHT_KEEP_ELEMENTS:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            declared.add(t.name)
    return out


def _copy_field(target: onnx.ModelProto | onnx.GraphProto, field: FieldDescriptor, value: object) -> None:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf < 5
        repeated = field.label == field.LABEL_REPEATED
    if repeated:
        getattr(target, field.name).extend(value)
    elif field.message_type is not None:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def check_as_written(model: onnx.ModelProto) -> None:
    """Raise ValueError (or the checker's ValidationError) when the model, written as a file, would
    fail `onnx.checker.check_model(full_check=True)`."""
    problems = container_problems(model)
    if problems:
        raise ValueError(problems[0])
    onnx.checker.check_model(light_copy(model), full_check=True)
