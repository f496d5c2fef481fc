"""`--exported-size HxW`: the input size a flattened head was made for, when the model declares its
input's height and width symbolic (torch's dynamic_axes on H and W, a dynamo Dim, tf2onnx or paddle
with None in the spatial dims).

A Flatten or Reshape before an FC layer fits one feature-map size, and the weight's K = C x h x w does
not say which h x w (5 x 5, 1 x 25 and 25 x 1 all give 400): such a model runs at several input sizes
and computes something different at each. Only the user knows the size it was made for. The image
input's symbolic spatial dims are pinned to it before anything reads the model, so analysis, the
rewrite and the original that verification runs all see the export as if it had static spatial dims
(the batch stays as exported).
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from .errors import UsageError
from .graph import import_graph, node_label, shape, static_tail
from .layout import trace_layout
from .rules.base import Code, Refusal


def _text(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def pin(model: onnx.ModelProto, size: tuple[int, ...]) -> str | None:
    """Pin the symbolic spatial dims of `model`'s image inputs (axes by data flow) to `size`, in
    place; the notice says which (None: they were fixed at `size` already). A usage error when an
    input's spatial dims are fixed at another size, its rank differs, or the model has no image input."""
    graph = import_graph(model)
    declared = {vi.name: vi for vi in model.graph.input}
    pinned: list[str] = []
    images = 0
    for tensor in graph.inputs:
        vi = declared.get(tensor.name)
        layout = trace_layout(tensor) if vi is not None and vi.type.HasField("tensor_type") else None
        if vi is None or layout is None:
            continue
        if len(layout.spatial) != len(size):
            raise UsageError(
                f"--exported-size {_text(size)} has {len(size)} dims; input '{vi.name}' has "
                f"{len(layout.spatial)} spatial dims"
            )
        dims = vi.type.tensor_type.shape.dim
        images += 1
        names = []
        for axis, value in zip(layout.spatial, size, strict=True):
            if dims[axis].HasField("dim_value"):
                if dims[axis].dim_value != value:
                    raise UsageError(
                        f"--exported-size {_text(size)}: input '{vi.name}' has a fixed {dims[axis].dim_value} "
                        f"on axis {axis}"
                    )
                continue
            names.append(f"'{dims[axis].dim_param}'" if dims[axis].dim_param else f"axis {axis}")
            dims[axis].dim_value = value  # replaces the dim_param (a oneof)
        if names:
            pinned.append(f"input '{vi.name}' ({', '.join(names)})")
    if not images:
        raise UsageError(f"--exported-size {_text(size)}: the model has no image input (none reaches a Conv or pool)")
    if not pinned:
        return None
    return f"symbolic spatial dims read at the exported size {_text(size)}: {'; '.join(pinned)}"


def refuse_symbolic_map(flatten: gs.Node, fc_label: str) -> None:
    """The refusal of a flatten whose input map has a symbolic size: the FC fits one, which only
    the size the model was exported at tells."""
    src = flatten.inputs[0]
    dims = shape(src) or ()
    if len(dims) >= 3 and static_tail(src) is None:
        raise Refusal(
            Code.SYMBOLIC_SIZE,
            f"{node_label(flatten)} before {fc_label}: its input '{src.name}' has the symbolic size "
            f"{list(dims[2:])} and {fc_label} fits one: name the input size the model was exported at "
            "(--exported-size HxW)",
        )
