"""Names of the converted model's output dims, after the input dims each one is computed from.

onnxruntime's symbolic shape inference runs on the weight-free model with a private symbol on
every relaxed input dim, and each output dim comes back as an expression of those symbols:

- exactly an input's batch: the input's own batch name (`N` where the original named it so);
- computed from one spatial dim: `out_<name>` with the configured name (`out_height`, `out_width`);
- computed from several: `out_<a>_<b>` (a flattened map: `out_height_width`);
- a fixed number the original declared there too: that number.

Where onnx's own inference (whose dims the written model declares) lost an output altogether, the
symbolic one gives its rank and its fixed dims. Two different expressions never share a name (the
second `out_height` of another size is `out_height_2`), and no output dim takes a name an input
dim has. Where the inference cannot follow a dim (an op it does not know makes one up), the dim is
named by its position: axis 0 the batch, the trailing spatial axes of a map `out_<name>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from .graph import set_value_info_dims, value_info_dims
from .shapes import DimNames, RelaxedInput, skeleton_at, symbolic_inference

# a symbol in an inferred expression (`floor(fc2conv_dim1/2) - 3`), not a function name
_SYMBOL = re.compile(r"\b[A-Za-z_]\w*\b(?!\s*\()")
_PRIVATE = "fc2conv_dim"


@dataclass(frozen=True)
class _Role:
    """What a private symbol stands for: an input dim's name and its part in an output's name."""

    name: str  # the input dim's own name, taken by an output dim that is exactly this dim
    part: str  # the configured name: `batch`, `height`, ...
    batch: bool


class _Namer:
    """One name per distinct expression; names the inputs use are taken."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.owner: dict[str, str] = {}
        for vi in model.graph.input:
            for d in value_info_dims(vi) or ():
                if isinstance(d, str):
                    self.owner[d] = f"input:{d}"
        self.by_expression: dict[str, str] = {}

    def name(self, base: str, expression: str) -> str:
        if expression in self.by_expression:
            return self.by_expression[expression]
        name, k = base, 1
        while name in self.owner:
            k += 1
            name = f"{base}_{k}"
        self.owner[name] = expression
        self.by_expression[expression] = name
        return name


def name_outputs(
    model: onnx.ModelProto,
    relaxed: list[RelaxedInput],
    names: DimNames,
    before: dict[str, tuple],
    head_ranks: dict[str, int],
) -> None:
    """Name the unknown dims of every output (see module docstring). `before`: each output's dims
    before the inputs were relaxed; `head_ranks`: each head output's spatial rank."""
    roles, probe = _roles(relaxed, names)
    inferred = _inferred_outputs(model, probe) if roles else {}
    namer = _Namer(model)
    positional = _Positional(relaxed, names, head_ranks)
    for out in model.graph.output:
        dims = value_info_dims(out)
        if dims is None:
            continue
        found = inferred.get(out.name)
        lost = found is not None and all(d is None for d in dims)  # onnx's inference kept only a rank
        if lost:
            dims = (None,) * len(found)
        if found is not None and len(found) != len(dims):
            found = None
        declared = before.get(out.name, ())
        new = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                new.append(dim)
                continue
            expression = found[axis] if found is not None else None
            if isinstance(expression, int):
                fixed = lost or (len(declared) == len(dims) and declared[axis] == expression)
                new.append(expression if fixed else dim)
                continue
            name = _from_expression(expression, roles, namer) if expression else None
            new.append(name or positional.name(out.name, axis, len(dims), dim))
        if new != list(dims):
            set_value_info_dims(out, new)


def _roles(relaxed: list[RelaxedInput], names: DimNames) -> tuple[dict[str, _Role], dict[str, list]]:
    """A private symbol per relaxed input dim name (inputs sharing a name share it) and the
    inputs' dims with those symbols in place."""
    roles: dict[str, _Role] = {}
    symbol_of: dict[str, str] = {}
    probe: dict[str, list] = {}
    for r in relaxed:
        dims = list(r.new_shape)
        parts = {axis: part for axis, part in zip(r.spatial_axes, names.spatial(len(r.spatial_axes)), strict=True)}
        if r.batch_axis is not None:
            parts[r.batch_axis] = names.batch
        for axis, part in parts.items():
            own = dims[axis]
            if not isinstance(own, str):
                continue
            if own not in symbol_of:
                symbol_of[own] = f"{_PRIVATE}{len(symbol_of)}"
                roles[symbol_of[own]] = _Role(own, part, axis == r.batch_axis)
            dims[axis] = symbol_of[own]
        probe[r.name] = dims
    return roles, probe


def _inferred_outputs(model: onnx.ModelProto, probe: dict[str, list]) -> dict[str, tuple]:
    inferred = symbolic_inference(skeleton_at(model, probe))
    if inferred is None:
        return {}
    return {o.name: value_info_dims(o) or () for o in inferred.graph.output}


def _from_expression(expression: str, roles: dict[str, _Role], namer: _Namer) -> str | None:
    """The name for a dim inferred as `expression`, or None when it involves a symbol that is no
    input dim (one the inference made up)."""
    symbols = list(dict.fromkeys(_SYMBOL.findall(expression)))
    if not symbols or any(s not in roles for s in symbols):
        return None
    if expression.strip() in roles and roles[expression.strip()].batch:
        return roles[expression.strip()].name
    parts = list(dict.fromkeys(roles[s].part for s in symbols))
    return namer.name("out_" + "_".join(parts), expression.replace(" ", ""))


class _Positional:
    """Names by position for dims the inference could not follow."""

    def __init__(self, relaxed: list[RelaxedInput], names: DimNames, head_ranks: dict[str, int]) -> None:
        batches = [r.new_shape[r.batch_axis] for r in relaxed if r.batch_axis is not None]
        self.batch = next((b for b in batches if isinstance(b, str)), None)
        self.rank = len(relaxed[0].spatial_axes) if relaxed else 0
        self.names = names
        self.head_ranks = head_ranks

    def name(self, output: str, axis: int, rank: int, dim: object) -> object:
        spatial = self.head_ranks.get(output)
        if spatial is None and rank == self.rank + 2:
            spatial = self.rank
        if axis == 0 and self.batch is not None:
            return self.batch
        start = rank - (spatial or 0)
        if spatial and start >= 2 and axis >= start:  # a map [batch, C, *spatial]
            return f"out_{self.names.spatial(spatial)[axis - start]}"
        return dim
