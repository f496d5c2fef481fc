"""docs/compatibility.md from the sweep's results.json (one record per architecture-exporter pair)."""

from __future__ import annotations

import datetime
import re
from collections import Counter, defaultdict
from pathlib import Path

from catalog import ARCHS, EXPORTERS, find

RESULTS = ("converted", "refused", "failed", "export failed", "skipped")
LABELS = {
    "converted": "converted + verified",
    "refused": "refused",
    "failed": "failed",
    "export failed": "export failed",
    "skipped": "skipped",
}

# cause classes, first match wins; matched against the refusal reasons or the failure lines
CAUSES = (
    ("class-token / attention head", r"Gather|class.token|token"),
    ("baked spatial size (backbone)", r"bakes the spatial size|spatial size into|fixed size|baked"),
    ("unknown shapes", r"shape of its input is unknown|unknown shape|shape inference"),
    (
        "head pattern not recognised",
        r"not from a flattened feature map|not a keepdims|not a .*reduce|mixes|per-feature",
    ),
    ("unsupported op after the FC layers", r"after the FC|not elementwise|LayerNormalization"),
    ("baked batch", r"batch"),
    ("independent check: wrong values", r"independent check FAILED.*allowed"),
    ("independent check: model does not run / wrong shape", r"independent check FAILED"),
    ("tool's own verification failed", r"tool's own check FAILED|exit 1"),
    ("tool error", r"exit 2|timeout"),
    ("exporter failed", r"."),
)


def cause_of(result: str, detail: list[str]) -> str:
    text = " ".join(detail)
    if result == "export failed":
        return "exporter failed"
    for name, pattern in CAUSES:
        if re.search(pattern, text, re.IGNORECASE):
            return name
    return "other"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def converted_detail(info: dict) -> str:
    conv, check = info.get("converted", {}), info.get("check", {})
    parts = []
    heads = conv.get("heads") or []
    parts.append("head: " + "; ".join(heads) if heads else (conv.get("notices") or ["no FC layer"])[0])
    larger = check.get("larger", {})
    shapes = [o.get("shape") for o in larger.get("outputs", [])]
    size = larger.get("size", [])
    hw = "x".join(map(str, size[1:3] if info.get("export", {}).get("layout") == "NHWC" else size[2:4]))
    parts.append(f"at {hw}: {', '.join(str(s) for s in shapes)}")
    ratios = [
        o["of_allowed"] for p in ("batch2", "larger") for o in check.get(p, {}).get("outputs", []) if "of_allowed" in o
    ]
    if ratios:
        parts.append(f"max error {max(ratios):.2g} of allowed")
    if any(o.get("weak") for p in ("batch2", "larger") for o in check.get(p, {}).get("outputs", [])):
        parts.append("**weak check**: the reference barely depends on the image")
    if larger.get("note"):
        parts.append("larger size not compared, " + larger["note"])
    if any(o.get("unchecked") for o in larger.get("outputs", [])) and not larger.get("note"):
        parts.append("some outputs have no framework reference at the larger size")
    for fix in conv.get("fixes", [])[:3]:
        parts.append(f"backbone fix: {fix}")
    if not check.get("export", {}).get("passed", True):
        parts.append(f"the export itself differs from the framework ({check['export'].get('error', '')})")
    return "; ".join(parts)


def other_detail(record: dict, limit: int = 4) -> str:
    lines = record["detail"]
    shown = [line if len(line) <= 300 else line[:297] + "..." for line in lines[:limit]]
    more = f"<br>(+{len(lines) - limit} more)" if len(lines) > limit else ""
    return "<br>".join(shown) + more


def summary_rows(results: dict) -> list[str]:
    rows = ["| family | exporter | pairs | " + " | ".join(LABELS[r] for r in RESULTS) + " |"]
    rows.append("|---|---|---|" + "---|" * len(RESULTS))
    total: Counter = Counter()
    for family, exporters in EXPORTERS.items():
        for exporter in exporters:
            counts = Counter(
                r["result"] for k, r in results.items() if k.startswith(f"{family}/") and k.endswith(f"/{exporter}")
            )
            if not counts:
                continue
            total.update(counts)
            cells = " | ".join(str(counts.get(r, 0)) for r in RESULTS)
            rows.append(f"| {family} | {exporter} | {sum(counts.values())} | {cells} |")
    cells = " | ".join(f"**{total.get(r, 0)}**" for r in RESULTS)
    rows.append(f"| **all** | | **{sum(total.values())}** | {cells} |")
    return rows


def cause_rows(results: dict) -> list[str]:
    by_cause: dict[str, list[str]] = defaultdict(list)
    for key, record in results.items():
        if record["result"] in ("refused", "failed", "export failed"):
            family, name, exporter = key.split("/")
            by_cause[cause_of(record["result"], record["detail"])].append(f"{family} {name} ({exporter})")
    rows = ["| cause | pairs | architectures |", "|---|---|---|"]
    for cause, cases in sorted(by_cause.items(), key=lambda kv: -len(kv[1])):
        rows.append(f"| {cause} | {len(cases)} | {', '.join(cases)} |")
    return rows


def write_doc(results: dict, path: Path, tool_version: str) -> None:
    versions: dict[str, str] = {}
    for record in results.values():
        versions.update(record["info"].get("export", {}).get("versions", {}))
    today = datetime.date.today().isoformat()
    lines = [
        "# Compatibility",
        "",
        f"Public architectures with seeded random weights, exported with every exporter each framework has, "
        f"converted with `onnx-fc2conv convert` ({tool_version}) and checked against the framework itself. "
        f"Generated on {today} by a run of the sweep (by hand, not in CI):",
        "",
        "```bash",
        "python benchmarks/compat.py          # exports are cached under /work/compat-cache; --help for options",
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        "",
        "How each pair is built and judged:",
        "",
        "- Nothing is downloaded: `weights=None` / `pretrained=False`, 10 classes, seeded weights. BatchNorm gets "
        "random affine parameters and statistics measured on a batch of random images, then perturbed, so no BN "
        "is the identity and the outputs depend on the image. Keras kernels are He-scaled and biases non-zero.",
        "- Inputs are small where the architecture allows (64 px; VGG and AlexNet 224 so that their adaptive pool "
        "is the identity; Inception 96-128; Xception 96). torch exports at batch 1 with a fixed shape (the "
        "default), tf2onnx and paddle2onnx with a symbolic batch. Exporters at their default opset "
        "(paddle2onnx: 13).",
        "- **converted + verified**: `onnx-fc2conv convert` exits 0 (its own verification passed) *and* the "
        "independent check passes: the converted model in onnxruntime against the framework's own forward pass "
        "at the exported size with batch 2, and at a larger non-square size (exported + 64 x 32) with batch 2. "
        "There the reference is the framework's forward pass (global-pool heads: the framework runs at any size) "
        "or, for flattened heads (AlexNet, VGG), the framework's head on every window of its backbone's feature "
        "map (the framework's own modules, so padding in the backbone is accounted for). A comparison passes "
        "when `max|a - b| <= 1e-5 + 1e-3 * max|b|`; a check whose reference barely varies between images is "
        "marked weak.",
        "- **refused**: exit 3; the reasons are the tool's, one per offending node. **failed**: the tool's own "
        "verification failed (exit 1), an error (exit 2), a timeout, or the independent check failed. "
        "**export failed**: the exporter itself raised (its last error line is given).",
        "",
        "## Summary",
        "",
        *summary_rows(results),
        "",
        "## What blocks conversion, by cause",
        "",
        *cause_rows(results),
    ]
    for family in EXPORTERS:
        keys = [k for k in results if k.startswith(f"{family}/")]
        if not keys:
            continue
        lines += [
            "",
            f"## {family}",
            "",
            "| architecture | input | exporter | result | details |",
            "|---|---|---|---|---|",
        ]
        order = {a.name: i for i, a in enumerate(ARCHS) if a.family == family}
        for key in sorted(keys, key=lambda k: (order.get(k.split("/")[1], 999), k)):
            _, name, exporter = key.split("/")
            record = results[key]
            arch = find(family, name)
            size = f"{arch.size[0]}x{arch.size[1]}"
            detail = converted_detail(record["info"]) if record["result"] == "converted" else other_detail(record)
            if arch.note:
                detail += f" ({arch.note})"
            result = LABELS[record["result"]]
            lines.append(f"| {name} | {size} | {exporter} | {result} | {cell(detail)} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
