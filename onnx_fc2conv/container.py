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
from google.protobuf.message import Message
from onnx import helper

from .errors import one_line, quoted
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


def _invalid_text(message: Message, path: str) -> str | None:
    """The path of the first string field that is not UTF-8 (protobuf does not check them when it
    parses; reading one gives bytes or raises later). Payload bytes are never read."""
    for field in message.DESCRIPTOR.fields:
        name = field.name
        if field.type == FieldDescriptor.TYPE_BYTES or name in _TYPED:
            continue
        repeated = _is_repeated(field)
        if not repeated and field.message_type is not None and not message.HasField(name):
            continue
        try:
            value = getattr(message, name)
        except UnicodeDecodeError:
            return f"{path}.{name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            # protobuf hands invalid UTF-8 back as bytes (or raises, depending on the version)
            bad = [i for i, v in enumerate(value if repeated else [value]) if isinstance(v, bytes)]
            if bad:
                return f"{path}.{name}[{bad[0]}]" if repeated else f"{path}.{name}"
        elif field.message_type is not None:
            for i, item in enumerate(value if repeated else [value]):
                where = _invalid_text(item, f"{path}.{name}[{i}]" if repeated else f"{path}.{name}")
                if where is not None:
                    return where
    return None


def text_problem(model: onnx.ModelProto) -> str | None:
    """Why the model's text cannot be read: ONNX strings (names, doc strings, external data
    locations, attribute strings) are UTF-8."""
    where = _invalid_text(model, "model")
    return None if where is None else f"{where} is not valid UTF-8 text"


def input_dims_problem(model: onnx.ModelProto) -> str | None:
    """A graph input with a negative or zero dim, or a dim that is neither a size nor a name (cleared)."""
    initializers = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in initializers or not vi.type.tensor_type.HasField("shape"):
            continue
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                return f"input {quoted(vi.name)} has a negative dim ({dim.dim_value}) at axis {axis}"
            if dim.HasField("dim_value") and dim.dim_value == 0:
                return f"input {quoted(vi.name)} has a zero dim at axis {axis}: it holds no values"
            if not dim.HasField("dim_value") and not dim.dim_param:
                return f"input {quoted(vi.name)} has an unknown dim at axis {axis} (neither a size nor a name)"
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


def light_copy(model: onnx.ModelProto, keep_elements: int = _LIGHT_KEEP_ELEMENTS) -> onnx.ModelProto:
    """Every field of the model, except that large (or external) initializers of the main graph
    become graph inputs of the same type and dims (declared once): those over `keep_elements`
    elements. The IR version is the model's own."""
    out = without_initializers(model)
    graph = out.graph
    declared = {vi.name for vi in graph.input}
    for t in model.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        if count <= keep_elements and t.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            declared.add(t.name)
    return out


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of every field of `model` except the main graph's initializers (no weight is copied)."""
    out = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(out, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(out.graph, field, value)
    return out


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf < 5
        repeated = field.label == field.LABEL_REPEATED
    return bool(repeated)


def _copy_field(target: onnx.ModelProto | onnx.GraphProto, field: FieldDescriptor, value: object) -> None:
    if _is_repeated(field):
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


def structure_problem(model: onnx.ModelProto) -> str | None:
    """What the ONNX checker (without shape inference) says against the graph: nodes that do not
    fit their op's schema (inputs, attributes), names used before they are produced, ... .
    Initializers are declared as inputs: their payloads are checked on their own, with better words."""
    try:
        onnx.checker.check_model(light_copy(model, keep_elements=0))
    except Exception as exc:  # ValidationError, or protobuf's own errors on odd fields
        return one_line(exc)
    return None
