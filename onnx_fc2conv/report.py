"""Turn results into plain text tables or JSON-ready dicts."""

from __future__ import annotations

import math
from importlib import metadata
from typing import TYPE_CHECKING, Any

import onnx

from .api import ConversionResult, Inspection
from .errors import NotConvertibleError, VerificationError, printable, quoted
from .geometry import Geometry
from .graph import node_id, value_info_dims
from .heads import Head, Skipped
from .rewrite import LayerRewrite
from .shapes import RelaxedInput
from .sizes import ValidSizes
from .verify import Comparison, VerificationReport

if TYPE_CHECKING:
    from .heatmap import HeatmapResult


def _dims(shape: tuple | list) -> str:
    return "[" + ", ".join(printable(str(d)) if d is not None else "?" for d in shape) + "]"


def _num(x: float) -> float | None:
    return None if (math.isinf(x) or math.isnan(x)) else x


def _measure(x: float) -> str:
    """A table cell: `-` where nothing could be measured (a model failed to run, shapes differ)."""
    return f"{x:.3g}" if math.isfinite(x) else "-"


# -- dicts ---------------------------------------------------------------------------------------


def head_dict(head: Head, layers: tuple[LayerRewrite, ...] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pattern": head.description,
        "kind": head.kind.value,
        "feature_map": head.feature,
        "feature_shape": list(head.feature_shape),
        "window": list(head.window),
        "dense": head.dense,
        "linear": head.linear,
        "outputs": list(head.outputs),
        "layers": [
            {
                "nodes": list(layer.names),
                "op": layer.op,
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                "kernel_shape": list(layer.kernel_shape),
                "parameters": layer.parameters,
                "quantization": layer.quantization or None,
            }
            for layer in head.layers
        ],
        "tail": [{"node": t.name, "op": t.op, "action": t.action.value} for t in head.tail],
    }
    if head.pool is not None:
        out["pool"] = {"node": node_id(head.pool.node), "op": head.pool.op, "source": head.pool.source.name}
    if layers is not None:
        for record, done in zip(out["layers"], layers, strict=True):
            record["old_weight_shape"] = list(done.old_weight_shape)
            record["weight_copied"] = done.weight_copied
    return out


def skipped_dict(s: Skipped) -> dict[str, str]:
    return {"node": s.node, "code": s.code.value, "reason": s.reason}


def comparison_dict(c: Comparison) -> dict[str, Any]:
    return {
        "check": c.check,
        "output": c.output,
        "input_shape": list(c.input_shape),
        "shape": list(c.shape),
        "max_abs_error": _num(c.max_abs),
        "max_rel_error": _num(c.max_rel),
        "allowed_error": _num(c.allowed),
        "ratio": _num(c.ratio),
        "status": "PASSED" if c.passed else "FAILED",
        "note": c.note,
    }


def verification_dict(v: VerificationReport) -> dict[str, Any]:
    return {
        "passed": v.passed,
        "comparisons": [comparison_dict(c) for c in v.comparisons],
        "checker": v.checker,
        "notes": list(v.notes),
    }


def relaxed_dict(r: RelaxedInput) -> dict[str, Any]:
    return {"name": r.name, "old_shape": list(r.old_shape), "new_shape": list(r.new_shape)}


def _fixes(fixes: list) -> list[dict[str, str]]:
    return [{"node": f.node, "op": f.op, "change": f.change} for f in fixes]


def conversion_payload(result: ConversionResult) -> dict[str, Any]:
    """What `convert` reports besides the common keys (see document())."""
    return {
        "heads": [head_dict(r.head, r.layers) for r in result.rewrites],
        "inputs": [relaxed_dict(r) for r in result.relaxed_inputs],
        "outputs": [{"name": o.name, "shape": _output_dims(o)} for o in result.model.graph.output],
        "backbone_fixes": _fixes(result.backbone_fixes),
        "removed_nodes": result.removed_nodes,
        "notices": list(result.notices),
        "geometry": geometry_dict(result.geometry),
        "valid_sizes": sizes_dict(result.valid_sizes),
        "verification": None if result.verification is None else verification_dict(result.verification),
    }


def sizes_dict(sizes: ValidSizes | None) -> dict[str, Any] | None:
    """The sizes the written model runs at: `minimum + k * step` per spatial axis (step 1: any)."""
    if sizes is None:
        return None
    return {
        "describe": sizes.describe(),
        "minimum": list(sizes.minimum),
        "step": list(sizes.step),
        "exported": list(sizes.exported),
    }


def inspection_payload(ins: Inspection) -> dict[str, Any]:
    """What `inspect` reports: the inputs' new shapes are those of a conversion (null: not computed)."""
    return {
        "opset": ins.opset,
        "inputs": [{"name": k, "old_shape": list(v), "new_shape": None} for k, v in ins.input_shapes.items()],
        "head_candidates": ins.candidates,
        "heads": [head_dict(h) for h in ins.heads],
        "skipped": [skipped_dict(s) for s in ins.skipped],
        "backbone_fixes": _fixes(ins.backbone_fixes),
        "backbone_refusals": [skipped_dict(r) for r in ins.backbone_refusals],
        "geometry": geometry_dict(ins.geometry),
    }


def geometry_record(name: str, g: Geometry | str | None) -> dict[str, Any]:
    """One output's window geometry; the same keys whether or not it is known (`available`)."""
    if isinstance(g, Geometry):
        record = g.as_dict()
        record.update(available=True, reason=None, output=name)
        return record
    return {
        "output": name,
        "available": False,
        "reason": g or "unknown",
        "input": None,
        "stride": None,
        "receptive_field": None,
        "offset": None,
    }


def geometry_dict(geometry: dict[str, Geometry | str]) -> dict[str, Any]:
    return {name: geometry_record(name, g) for name, g in geometry.items()}


def _interval(start: int, stop: int) -> str:
    return f"[{start}, {stop})"


def box_text(box: tuple[tuple[int, int], ...]) -> str:
    """`rows [a, b), cols [c, d)`: the one box convention, start included and stop excluded (as in
    the JSON and the API, and as a slice `image[a:b, c:d]`)."""
    axes = ("rows", "cols") if len(box) == 2 else tuple(f"axis {i}" for i in range(len(box)))
    return ", ".join(f"{axis} {_interval(a, b)}" for axis, (a, b) in zip(axes, box, strict=True))


def geometry_lines(geometry: dict[str, Geometry | str]) -> list[str]:
    lines = []
    for name, g in geometry.items():
        if not isinstance(g, Geometry):
            lines.append(f"geometry of {quoted(name)}: none ({printable(g)})")
            continue
        x = "x".join
        names = ("rows", "cols") if len(g.stride) == 2 else tuple(f"axis {i}" for i in range(len(g.stride)))
        spans = ", ".join(
            f"{axis} [{s}*{v}{o:+d}, {s}*{v}{o + r:+d})"
            for axis, v, s, o, r in zip(names, "ijk", g.stride, g.offset, g.receptive_field, strict=False)
        )
        lines.append(
            f"geometry of {quoted(name)}: output stride {x(map(str, g.stride))}, receptive field "
            f"{x(map(str, g.receptive_field))}, offset {x(map(str, g.offset))}"
        )
        lines.append(f"  cell (i, j) sees input {spans} (stop excluded; beyond the image is padding)")
    return lines


def _output_dims(vi: onnx.ValueInfoProto) -> list:
    return list(value_info_dims(vi) or ())


# -- text ----------------------------------------------------------------------------------------


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def head_lines(index: int, head: Head, layers: tuple[LayerRewrite, ...] | None = None) -> list[str]:
    mode = " (dense: head before the pool)" if head.dense else ""
    lines = [
        f"head {index}: {head.description}{mode}",
        f"  feature map {quoted(head.feature)} {_dims(head.feature_shape)}, window {'x'.join(map(str, head.window))}",
    ]
    rows = [["layer", "old op", "in", "out", "conv kernel", "params"]]
    for i, layer in enumerate(head.layers):
        old = layer.op
        if layers is not None:
            old += f" {_dims(layers[i].old_weight_shape)}"
        if layer.quantization:
            old += f" ({layer.quantization})"
        rows.append(
            [
                str(i + 1),
                old,
                str(layer.in_features),
                str(layer.out_features),
                _dims(layer.kernel_shape),
                f"{layer.parameters:,}",
            ]
        )
    lines += _table(rows)
    if head.tail:
        lines.append(
            "  then: "
            + ", ".join(f"{t.op}" + ("" if t.action.value == "keep" else f" ({t.action.value})") for t in head.tail)
        )
    lines.append("  outputs: " + ", ".join(head.outputs))
    return [printable(line) for line in lines]


def verification_lines(v: VerificationReport) -> list[str]:
    rows = [["status", "check", "output", "input", "shape", "max abs", "allowed", "ratio"]]
    for c in v.comparisons:
        rows.append(
            [
                "PASSED" if c.passed else "FAILED",
                c.check,
                c.output,
                _dims(c.input_shape),
                _dims(c.shape),
                _measure(c.max_abs),
                _measure(c.allowed),
                _measure(c.ratio) + (f"  ({c.note})" if c.note else ""),
            ]
        )
    lines = ["verification (onnxruntime):", *_table(rows), f"  onnx checker: {v.checker}"]
    lines += [f"  note: {n}" for n in v.notes]
    lines.append(f"  result: {'PASSED' if v.passed else 'FAILED'}")
    return [printable(line) for line in lines]


def conversion_text(result: ConversionResult, output: str | None = None) -> str:
    lines: list[str] = []
    for i, r in enumerate(result.rewrites, 1):
        lines += head_lines(i, r.head, r.layers)
    lines += [f"notice: {n}" for n in result.notices]
    for f in result.backbone_fixes:
        lines.append(f"backbone: {printable(f.op)} {quoted(f.node)}: {printable(f.change)}")
    for r in result.relaxed_inputs:
        lines.append(f"input {quoted(r.name)}: {_dims(r.old_shape)} -> {_dims(r.new_shape)}")
    for o in result.model.graph.output:
        lines.append(f"output {quoted(o.name)}: {_dims(_output_dims(o))}")
    lines += geometry_lines({k: g for k, g in result.geometry.items() if isinstance(g, Geometry)})
    if result.valid_sizes is not None:
        lines.append(f"valid sizes: {result.valid_sizes.describe()} (recorded in the model's metadata_props)")
    if result.verification is not None:
        lines += verification_lines(result.verification)
    else:
        lines.append("verification: skipped (--no-verify)")
    if output:
        lines.append(f"wrote {output}")
    return "\n".join(printable(line) for line in lines)


def inspection_text(ins: Inspection) -> str:
    lines = [f"opset {ins.opset}; inputs: " + ", ".join(f"{quoted(k)} {_dims(v)}" for k, v in ins.input_shapes.items())]
    if not ins.candidates:
        lines.append("no FC layer: the model is already fully convolutional")
    for i, head in enumerate(ins.heads, 1):
        lines += head_lines(i, head)
    for s in ins.skipped:
        lines.append(f"skipped {quoted(s.node)}: {printable(s.reason)}")
    for f in ins.backbone_fixes:
        lines.append(f"backbone: {printable(f.op)} {quoted(f.node)}: {printable(f.change)}")
    lines += [f"refused: {printable(r.reason)}" for r in ins.backbone_refusals]
    lines += geometry_lines(ins.geometry)
    return "\n".join(printable(line) for line in lines)


def heatmap_payload(result: HeatmapResult) -> dict[str, Any]:
    return {
        "output_name": result.output,
        "class": result.class_index,
        "map_shape": list(result.map_shape),
        "image_size": list(result.image_size),
        "geometry": {result.output: geometry_record(result.output, result.geometry or result.geometry_reason)},
        "cells": [
            {
                "cell": list(c.cell),
                "box": [list(b) for b in c.box] if c.box else None,
                "classes": [{"class": k, "score": v} for k, v in c.classes],
            }
            for c in result.cells
        ],
    }


def heatmap_text(result: HeatmapResult, path: str) -> str:
    h, w = result.image_size
    lines = [
        f"class {result.class_index} from {quoted(result.output)}: map {result.map_shape[0]}x{result.map_shape[1]} "
        f"over a {h}x{w} image -> {path}"
    ]
    for c in result.cells:
        where = f" {box_text(c.box)}" if c.box else ""
        best = ", ".join(f"class {k} {v:.3g}" for k, v in c.classes)
        lines.append(f"  cell {c.cell}{where}: {best}")
    return "\n".join(printable(line) for line in lines)


# -- the JSON document ---------------------------------------------------------------------------

SCHEMA_VERSION = 1  # raised when a key changes meaning or goes away (schema/report.schema.json)


def tool_version() -> str:
    try:
        return metadata.version("onnx-fc2conv")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def document(
    command: str,
    files: dict[str, str | None],
    payload: dict[str, Any] | None = None,
    *,
    exit_code: int = 0,
    error: str | None = None,
    error_type: str | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The one JSON document a subcommand prints, whatever the outcome: the common keys, then the
    command's own (`payload`). `error` (one line, as on stderr) is there exactly when it failed."""
    status = "ok" if error is None else ("interrupted" if interrupted else "error")
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": tool_version(),
        "command": command,
        "status": status,
        "exit_code": exit_code,
        "files": dict(files),
    }
    if error is not None:
        doc["error"] = error
        doc["error_type"] = error_type or "Error"
    doc.update(payload or {})
    return doc


def failure_payload(exc: BaseException) -> dict[str, Any]:
    """What a failure adds: the reason per refused candidate (exit 3), the comparisons (exit 1)."""
    out: dict[str, Any] = {}
    if isinstance(exc, NotConvertibleError):
        out["reasons"] = [printable(r) for r in exc.reasons]
    if isinstance(exc, VerificationError) and isinstance(exc.report, VerificationReport):
        out["verification"] = verification_dict(exc.report)
    return out
