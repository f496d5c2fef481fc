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

RELAXED_RUNS = "input relaxed and nothing else changed, runs at"
FALSE_ALARM = "with --no-verify the independent check passes"


def cause_of(result: str, detail: list[str], layout: str = "") -> str:
    """One cause class per pair that did not convert, from the tool's reason, the --no-verify recheck and
    whether the export itself runs at the larger size."""
    text, first = " ".join(detail), (detail or [""])[0]
    runs_larger = RELAXED_RUNS in text
    if result == "export failed":
        return "exporter defect: the exporter raised, or wrote a model onnxruntime cannot load"
    if layout == "NHWC" and re.search(r"input \[\d+, \d+, \d+, (?!3\])\d+\]|index: [12] Got: \d+ Expected: \d+", text):
        return "NHWC input: the tool relaxed the wrong axes"
    if result == "refused":
        if runs_larger:
            return "false refusal: the export itself runs at other sizes and equals the framework"
        if "class token" in text or "each token of a sequence" in text or "pooled tokens" in text:
            return (
                "refused: a head on a fixed-length token sequence "
                "(class token or pooled tokens: attention or token mixing over a fixed count)"
            )
        if first.startswith("backbone:") and re.search(r"from running at other sizes", first):
            return "refused: a backbone node pins the size in the export (the export itself fails at the larger size)"
        if "not from a flattened feature map" in text:
            return "refused: an op between the pool/flatten and the FC layers"
        if re.search(r"bakes|pins|(cannot run|from running) at other sizes|fixed shape|runs only at its", text):
            return "refused: a backbone node pins the size in the export (the export itself fails at the larger size)"
        return "refused: other"
    if first.startswith("exit 1"):
        if FALSE_ALARM in text:
            if "(same size" in first:
                return "verification false failure: tolerance at the exported size"
            if "(larger size" in first and re.search(r"cannot run|failed to run", first):
                return "verification false failure: verified at sizes the model cannot run (not exported + k x stride)"
            return "verification false failure: other"
        if "(same size" in first:
            return "the rewrite breaks the model at the exported size (the tool's verification catches it)"
        if "(larger size" in first and not runs_larger:
            return "an undetected node pins the size (the tool's verification catches it; the export fails there too)"
        return "the tool's verification failed, and the unverified output fails too"
    if "independent check FAILED, batch 2 at the exported size" in text:
        return "written model wrong at the exported size with batch 2 (the tool passed it)"
    if "independent check FAILED, batch 2 at the larger size" in text:
        return "written model wrong at the larger size (the tool passed it)"
    if re.search(r"exit 2|timeout|did not run", text):
        return "tool error or timeout"
    return "other"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def converted_detail(info: dict) -> str:
    conv, check = info.get("converted", {}), info.get("check", {})
    parts = []
    heads = conv.get("heads") or []
    notices = conv.get("notices") or []
    parts.append("head: " + "; ".join(heads) if heads else next((n for n in notices if "no FC" in n), "no FC layer"))
    parts += [f"**{n}** (checked image by image)" for n in notices if "batch stays" in n]
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


def dense_detail(info: dict) -> str:
    """The `--dense` column: the class map, and whether its spatial mean equals the framework's logits."""
    dense = info.get("dense")
    if dense is None:
        return ""
    if dense["exit_code"] != 0:
        kind = "refused" if dense["exit_code"] == 3 else f"exit {dense['exit_code']}"
        return f"{kind}: {dense['reasons'][0]}"
    check = dense["check"]
    if not check.get("passed"):
        failed = next((check[p] for p in ("batch2", "larger") if not check.get(p, {}).get("passed", True)), check)
        return "**FAILED**: " + str(failed.get("error") or failed.get("outputs", ""))[:200]
    shapes = check["larger"]["shapes"]
    if check["linear"]:
        return f"map {shapes[0]}; its spatial mean equals the framework's logits"
    return f"map {shapes[0]}; nonlinear head: the head at every location, not compared"


def dense_kind(info: dict) -> str:
    dense = info.get("dense")
    if dense is None:
        return ""
    if dense["exit_code"] != 0:
        return "refused" if dense["exit_code"] == 3 else "failed"
    if not dense["check"].get("passed"):
        return "failed"
    return "equal" if dense["check"]["linear"] else "nonlinear"


def dense_summary(results: dict) -> list[str]:
    counts = Counter(dense_kind(r["info"]) for r in results.values())
    tried = sum(v for k, v in counts.items() if k)
    return [
        f"`--dense` on the {tried} converted global-pool models: {counts['equal']} linear heads whose class "
        f"map's spatial mean equals the framework's logits at both sizes, {counts['nonlinear']} nonlinear heads "
        f"(a map of the head at every location, by design not equal), {counts['refused']} refused, "
        f"{counts['failed']} failed.",
    ]


def other_detail(record: dict, limit: int = 4) -> str:
    lines = record["detail"]
    shown = [line if len(line) <= 300 else line[:297] + "..." for line in lines[:limit]]
    more = f"<br>(+{len(lines) - limit} more)" if len(lines) > limit else ""
    return "<br>".join(shown) + more


def batch_kept(record: dict) -> bool:
    return any("batch stays" in n for n in record["info"].get("converted", {}).get("notices", []))


def summary_rows(results: dict) -> list[str]:
    """Counts per family and exporter; 'batch kept at 1' counts converted pairs whose batch stays fixed."""
    rows = ["| family | exporter | pairs | " + " | ".join(LABELS[r] for r in RESULTS) + " | batch kept at 1 |"]
    rows.append("|---|---|---|" + "---|" * (len(RESULTS) + 1))
    total: Counter = Counter()
    for family, exporters in EXPORTERS.items():
        for exporter in exporters:
            mine = [r for k, r in results.items() if k.startswith(f"{family}/") and k.endswith(f"/{exporter}")]
            if not mine:
                continue
            counts = Counter(r["result"] for r in mine)
            counts["batch"] = sum(r["result"] == "converted" and batch_kept(r) for r in mine)
            total.update(counts)
            cells = " | ".join(str(counts.get(r, 0)) for r in (*RESULTS, "batch"))
            rows.append(f"| {family} | {exporter} | {len(mine)} | {cells} |")
    cells = " | ".join(f"**{total.get(r, 0)}**" for r in (*RESULTS, "batch"))
    rows.append(f"| **all** | | **{len(results)}** | {cells} |")
    return rows


def cause_rows(results: dict) -> list[str]:
    by_cause: dict[str, list[str]] = defaultdict(list)
    for key, record in results.items():
        if record["result"] in ("refused", "failed", "export failed"):
            family, name, exporter = key.split("/")
            layout = record["info"].get("export", {}).get("layout", "")
            by_cause[cause_of(record["result"], record["detail"], layout)].append(f"{family} {name} ({exporter})")
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
        "random affine parameters (gains 0.2-0.5, so deep residual networks stay out of the chaotic regime where "
        "float32 rounding alone moves the logits by percents) and statistics measured on a batch of random "
        "images, then perturbed, so no BN is the identity and the outputs depend on the image. Keras kernels are "
        "He-scaled and biases non-zero.",
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
        "marked weak. Where the written model keeps a batch of 1 (the tool says so), it is checked image by "
        "image and counted under *batch kept at 1*.",
        "- **refused**: exit 3; the reasons are the tool's, one per offending node (the first four shown). "
        "**failed**: the tool's own verification failed (exit 1), an error (exit 2), a timeout, or the "
        "independent check failed. Where the tool's verification failed, the model is converted again with "
        "`--no-verify` and checked independently, which tells a false alarm from a wrong model. "
        "**export failed**: the exporter raised, or wrote a model onnxruntime cannot load.",
        "- For every refusal and failure of a global-pool model, the export itself (input relaxed to symbolic "
        "height and width, nothing else changed) is run at the larger size against the framework: when it "
        "runs and is equal, nothing in the exported graph truly pins the size.",
        "",
        "## Summary",
        "",
        *summary_rows(results),
        "",
        *dense_summary(results),
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
            "| architecture | input | exporter | result | details | `--dense` |",
            "|---|---|---|---|---|---|",
        ]
        order = {a.name: i for i, a in enumerate(ARCHS) if a.family == family}
        exporters = EXPORTERS[family]
        for key in sorted(keys, key=lambda k: (order.get(k.split("/")[1], 999), exporters.index(k.split("/")[2]))):
            _, name, exporter = key.split("/")
            record = results[key]
            arch = find(family, name)
            size = f"{arch.size[0]}x{arch.size[1]}"
            detail = converted_detail(record["info"]) if record["result"] == "converted" else other_detail(record)
            if arch.note:
                detail += f" ({arch.note})"
            result = LABELS[record["result"]]
            dense = cell(dense_detail(record["info"]))
            lines.append(f"| {name} | {size} | {exporter} | {result} | {cell(detail)} | {dense} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
