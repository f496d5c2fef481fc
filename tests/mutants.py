"""Mutants of the golden models for the fuzz test: byte-level (flipped, cut, spliced bytes; names made
invalid UTF-8 or given control characters) and structured (dims cleared, nodes dropped or changed,
attributes, initializers, IR version, opset, external data locations, ...). Deterministic per seed.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper

MODELS = Path(__file__).resolve().parent.parent / "models"
GOLDEN = sorted(MODELS.glob("*.onnx"))

Mutator = Callable[[bytes, random.Random], bytes]


@dataclass(frozen=True)
class Mutant:
    path: Path  # the mutated model (its golden data file copied beside it)
    description: str


# --------------------------------------------------------------------------- byte level


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def splice(data: bytes, rng: random.Random) -> bytes:
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 64))
    at = rng.randrange(len(data))
    return data[:at] + data[a:b] + data[at:]


def _strings(model: onnx.ModelProto) -> list[str]:
    """Strings stored in the model that can be patched in place: names, doc strings, locations."""
    found = [model.graph.name, model.doc_string, model.producer_name]
    for node in model.graph.node:
        found += [node.name, node.doc_string, *node.input, *node.output]
    for t in model.graph.initializer:
        found.append(t.name)
        found += [e.value for e in t.external_data]
    found += [vi.name for vi in (*model.graph.input, *model.graph.output)]
    return sorted({s for s in found if len(s.encode()) >= 2})


def _patch_string(data: bytes, rng: random.Random, replacement: Callable[[int], bytes]) -> bytes:
    strings = _strings(onnx.ModelProto.FromString(data))
    if not strings:
        return flip_bytes(data, rng)
    old = rng.choice(strings).encode()
    return data.replace(old, replacement(len(old)), rng.randint(1, 3))


def invalid_utf8_string(data: bytes, rng: random.Random) -> bytes:
    return _patch_string(data, rng, lambda n: (b"\xff\xfe" * n)[:n])


def control_chars_in_string(data: bytes, rng: random.Random) -> bytes:
    chars = [b"\n", b"\r", b"\x1b", b"\x00", b"\t"]
    return _patch_string(data, rng, lambda n: (b"x" + rng.choice(chars) + b"onnx-fc2conv: error: fake" * n)[:n])


# --------------------------------------------------------------------------- structured


def _structured(edit: Callable[[onnx.ModelProto, random.Random], None]) -> Mutator:
    def mutate(data: bytes, rng: random.Random) -> bytes:
        model = onnx.ModelProto.FromString(data)
        edit(model, rng)
        return model.SerializeToString()

    mutate.__name__ = edit.__name__
    return mutate


def _input_shape(model: onnx.ModelProto) -> onnx.TensorShapeProto:
    return model.graph.input[0].type.tensor_type.shape


def clear_input_dims(model: onnx.ModelProto, rng: random.Random) -> None:
    if rng.random() < 0.5:
        _input_shape(model).ClearField("dim")
    else:
        model.graph.input[0].type.tensor_type.ClearField("shape")


def odd_input_dim(model: onnx.ModelProto, rng: random.Random) -> None:
    dims = _input_shape(model).dim
    if not dims:
        return
    choice = rng.choice(["zero", "negative", "cleared", "huge", "param"])
    dim = dims[rng.randrange(len(dims))]
    if choice == "cleared":
        dim.Clear()
    elif choice == "param":
        dim.dim_param = rng.choice(["", "h", "batch", "N\n2"])
    else:
        dim.dim_value = {"zero": 0, "negative": -3, "huge": 1 << 40}[choice]


def drop_node(model: onnx.ModelProto, rng: random.Random) -> None:
    del model.graph.node[rng.randrange(len(model.graph.node))]


def change_op(model: onnx.ModelProto, rng: random.Random) -> None:
    node = rng.choice(list(model.graph.node))
    node.op_type = rng.choice(["Relu", "Conv", "Gemm", "MatMul", "Flatten", "Reshape", "Softmax", "NoSuchOp"])


def change_int_attribute(model: onnx.ModelProto, rng: random.Random) -> None:
    attrs = [a for n in model.graph.node for a in n.attribute if a.type in (1, 2, 7)]
    if not attrs:
        return
    a = rng.choice(attrs)
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.randint(-3, 10)
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([0.0, -1.0, 1e30, float("nan")])
    else:
        a.ClearField("ints")
        a.ints.extend(rng.randint(-2, 6) for _ in range(rng.randint(0, 5)))


def rewire(model: onnx.ModelProto, rng: random.Random) -> None:
    node = rng.choice(list(model.graph.node))
    names = [o for n in model.graph.node for o in n.output] + [i.name for i in model.graph.input]
    if node.input and rng.random() < 0.5:
        node.input[rng.randrange(len(node.input))] = rng.choice([*names, "nowhere"])
    elif node.output:
        node.output[0] = rng.choice(names)


def initializer_edit(model: onnx.ModelProto, rng: random.Random) -> None:
    if not model.graph.initializer:
        return
    t = rng.choice(list(model.graph.initializer))
    choice = rng.choice(["dtype", "dims", "duplicate", "drop", "two fields"])
    if choice == "dtype":
        t.data_type = rng.choice([0, 2, 6, 7, 8, 9, 10, 11, 16, 40])
    elif choice == "dims":
        t.ClearField("dims")
        t.dims.extend(rng.randint(0, 9) for _ in range(rng.randint(0, 4)))
    elif choice == "duplicate":
        model.graph.initializer.append(t)
    elif choice == "drop":
        model.graph.initializer.remove(t)
    else:
        t.float_data.append(1.0)


def versions(model: onnx.ModelProto, rng: random.Random) -> None:
    if rng.random() < 0.5:
        model.ir_version = rng.randint(0, 13)
    else:
        model.opset_import[0].version = rng.randint(0, 26)


def input_type(model: onnx.ModelProto, rng: random.Random) -> None:
    model.graph.input[0].type.tensor_type.elem_type = rng.choice([0, TensorProto.INT64, TensorProto.STRING, 10, 16])


def outputs(model: onnx.ModelProto, rng: random.Random) -> None:
    choice = rng.choice(["drop", "rename", "extra"])
    if choice == "drop":
        del model.graph.output[:]
    elif choice == "rename":
        model.graph.output[0].name = "not_produced"
    else:
        model.graph.output.append(helper.make_tensor_value_info(model.graph.input[0].name, TensorProto.FLOAT, None))


def external_location(model: onnx.ModelProto, rng: random.Random) -> None:
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not external:
        model.graph.initializer[0].data_location = TensorProto.EXTERNAL if model.graph.initializer else 0
        return
    t = rng.choice(external)
    key = rng.choice(["location", "offset", "length", "checksum", "unknown\nkey"])
    entry = next((e for e in t.external_data if e.key == key), None)
    if entry is None:
        entry = t.external_data.add()
        entry.key = key
    entry.value = rng.choice(
        ["", "../x.data", "/etc/passwd", "a\nonnx-fc2conv: error: forged", "missing.bin", "-1", "99999999"]
    )


def doc_and_metadata(model: onnx.ModelProto, rng: random.Random) -> None:
    model.doc_string = "line one\nonnx-fc2conv: error: forged\x1b[31m"
    for value in ("a", "b"):
        entry = model.metadata_props.add()
        entry.key, entry.value = rng.choice(["k", "k\n"]), value


MUTATORS: list[Mutator] = [
    flip_bytes,
    truncate,
    splice,
    invalid_utf8_string,
    control_chars_in_string,
    *(
        _structured(edit)
        for edit in (
            clear_input_dims,
            odd_input_dim,
            drop_node,
            change_op,
            change_int_attribute,
            rewire,
            initializer_edit,
            versions,
            input_type,
            outputs,
            external_location,
            doc_and_metadata,
        )
    ),
]


def make_mutant(index: int, seed: int, folder: Path) -> Mutant:
    """Mutant number `index` of the run seeded `seed`, written under `folder` (created)."""
    rng = random.Random(seed * 1_000_003 + index)
    golden = rng.choice(GOLDEN)
    mutator = MUTATORS[index % len(MUTATORS)]
    folder.mkdir(parents=True, exist_ok=True)
    data = golden.with_name(golden.name + ".data")
    if data.exists():
        shutil.copyfile(data, folder / data.name)
    path = folder / golden.name
    path.write_bytes(mutator(golden.read_bytes(), rng))
    return Mutant(path, f"#{index} {mutator.__name__} of {golden.name}")
