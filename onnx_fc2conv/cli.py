"""`onnx-fc2conv`: a thin click layer over the Python API.

Exit codes: 0 converted (and verified); 1 verification failed, nothing written; 2 usage error or
unreadable/invalid model; 3 FC layers that cannot be rewritten exactly, nothing written;
128 + N stopped by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129), nothing written.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import api, report
from .errors import VerificationError, printable
from .outcome import Done, Invocation, _Failure, execute, finish_failure
from .shapes import DimNames
from .verify import Tolerance

log = logging.getLogger("onnx_fc2conv")

_DEFAULT_TOL = Tolerance()


class Size(click.ParamType):
    """`HxW` (or `DxHxW`, `L`): positive integers joined by `x`."""

    name = "HxW"

    def __init__(self, rank: int | None = None) -> None:
        self.rank = rank

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        try:
            dims = tuple(int(p) for p in text.lower().split("x"))
        except ValueError:
            dims = ()
        if not dims or any(d < 1 for d in dims):
            self.fail(f"'{printable(text)}' is not a size like 320x256 (positive integers)", param, ctx)
        if self.rank is not None and len(dims) != self.rank:
            self.fail(f"'{printable(text)}' is not a size like 320x256 (height x width)", param, ctx)
        return dims


class FloatList(click.ParamType):
    """`r,g,b`: comma-separated finite numbers."""

    name = "r,g,b"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            numbers = ()
        if not numbers or not all(math.isfinite(v) for v in numbers):
            self.fail(f"'{printable(str(value))}' is not a comma-separated list of numbers", param, ctx)
        return numbers


class _Commands(click.Group):
    """Usage errors that click finds while parsing are outcomes too: one line on stderr, exit 2,
    and with `--json` a JSON document like any other."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            self._usage_error(argv, exc)
        except click.Abort:
            self._usage_error(argv, click.ClickException("interrupted"), code=130)
        sys.exit(code if isinstance(code, int) else 0)

    def _usage_error(self, argv: list[str], exc: click.ClickException, code: int = 2) -> None:
        command = next((a for a in argv if a in self.commands), None)
        json_file = None
        for i, arg in enumerate(argv):
            if arg == "--json-file" and i + 1 < len(argv):
                json_file = argv[i + 1]
            elif arg.startswith("--json-file="):
                json_file = arg.split("=", 1)[1]
        run = Invocation(command or "", {}, as_json="--json" in argv, json_file=json_file)
        hint = f" (see onnx-fc2conv {command + ' ' if command else ''}--help)"
        message = printable(" ".join(exc.format_message().split())) + hint
        finish_failure(run, _Failure(message, code, "UsageError"))


def _setup_logging(quiet: bool, debug: bool) -> None:
    """Progress lines on a terminal; quiet when stderr is piped (warnings still show)."""
    level = logging.DEBUG if debug else (logging.INFO if sys.stderr.isatty() and not quiet else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onnx-fc2conv: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _common(fn: Callable) -> Callable:
    fn = click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress lines, even on a terminal.")(fn)
    fn = click.option(
        "--json-file",
        type=click.Path(dir_okay=False, writable=True),
        help="Also write the JSON report (as --json prints it) to this file.",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout (also on failure).")(fn)
    return fn


_exported_size = click.option(
    "--exported-size",
    type=Size(),
    help="The input size a flattened head was made for, where the input's height and width are symbolic.",
)


def _verify_options(fn: Callable) -> Callable:
    fn = click.option("--seed", default=0, show_default=True, help="Seed of the random verification inputs.")(fn)
    fn = click.option(
        "--size",
        "sizes",
        multiple=True,
        type=Size(),
        help="Larger input size to verify at (repeatable). Default: two non-square sizes about 1.25-1.75x.",
    )(fn)
    fn = click.option(
        "--atol",
        default=_DEFAULT_TOL.atol,
        show_default=True,
        help="Absolute tolerance (fp32; x100 for fp16, x1000 for bf16).",
    )(fn)
    fn = click.option(
        "--rtol",
        default=_DEFAULT_TOL.rtol,
        show_default=True,
        help="Relative tolerance (fp32; x100 for fp16, x500 for bf16).",
    )(fn)
    return fn


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnx-fc2conv")
def main() -> None:
    """Make classifier CNNs fully convolutional: FC heads become exact convolutions.

    Exit codes: 0 done; 1 verification failed (nothing written); 2 usage error or
    unreadable model; 3 FC layers that cannot be rewritten exactly (nothing written);
    128 + N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP; nothing written).
    """


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=True))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(dir_okay=True))
@click.option("--dense", is_flag=True, help="Global-pool heads: apply the head before the pool (a class map).")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Prove the result equal with onnxruntime.")
@_verify_options
@click.option("--batch-name", default="batch", show_default=True, help="Batch dim name if the original has none.")
@click.option("--height-name", default="height", show_default=True, help="Height dim name if the original has none.")
@click.option("--width-name", default="width", show_default=True, help="Width dim name if the original has none.")
@click.option(
    "--external-data-mb",
    default=1024,
    show_default=True,
    type=click.IntRange(min=0),
    help="Write weights to OUTPUT.data when the model exceeds this size (always above 2 GB).",
)
@click.option("--in-place", is_flag=True, help="Allow OUTPUT to be INPUT (replaced atomically).")
@click.option("--batch-head", is_flag=True, help="Head layers run as one Gemm for a batch at the original size.")
@click.option(
    "--output-stride", type=click.IntRange(min=1), help="A denser map: S/2 or S/4 by dilation (docs/denser-maps.md)."
)
@click.option("--input-size", type=Size(), help="Write static shapes at this input size (verified there).")
@click.option("--batch", type=click.IntRange(min=1), help="With --input-size: the static batch (default 1).")
@_exported_size
@_common
def convert(
    input_path: str,
    output_path: str,
    dense: bool,
    verify: bool,
    rtol: float,
    atol: float,
    sizes: tuple[tuple[int, ...], ...],
    seed: int,
    batch_name: str,
    height_name: str,
    width_name: str,
    external_data_mb: int,
    in_place: bool,
    batch_head: bool,
    output_stride: int | None,
    input_size: tuple[int, ...] | None,
    batch: int | None,
    exported_size: tuple[int, ...] | None,
    as_json: bool,
    json_file: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Rewrite the FC head of INPUT into convolutions and write OUTPUT."""
    _setup_logging(quiet, debug)
    files: dict[str, str | None] = {"input": input_path, "output": output_path, "data": None}
    run = Invocation("convert", files, as_json, json_file, debug)

    def action() -> Done:
        options = api.ConvertOptions(
            dense=dense,
            verify=verify,
            dim_names=DimNames(batch=batch_name, height=height_name, width=width_name),
            tolerance=Tolerance(rtol=rtol, atol=atol),
            sizes=sizes or None,
            seed=seed,
            external_threshold=external_data_mb << 20,
            in_place=in_place,
            batch_head=batch_head,
            output_stride=output_stride,
            input_size=input_size,
            batch=batch,
            exported_size=exported_size,
        )
        result = api.convert_file(input_path, output_path, options)
        data = result.data_file
        files["data"] = str(data) if data else None
        written = output_path + (f" (+ {data.name})" if data else "")
        return Done(report.conversion_payload(result), report.conversion_text(result, written))

    execute(run, action)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=True))
@click.option("--dense", is_flag=True, help="Show global-pool heads as dense mode would rewrite them.")
@_exported_size
@_common
def inspect(
    input_path: str,
    dense: bool,
    exported_size: tuple[int, ...] | None,
    as_json: bool,
    json_file: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Show the FC heads of INPUT, what they would become, and why any cannot be rewritten."""
    _setup_logging(quiet, debug)
    run = Invocation("inspect", {"input": input_path}, as_json, json_file, debug)

    def action() -> Done:
        found = api.inspect(input_path, api.ConvertOptions(dense=dense, exported_size=exported_size))
        return Done(report.inspection_payload(found), report.inspection_text(found))

    execute(run, action)


@main.command()
@click.argument("original", type=click.Path(dir_okay=True))
@click.argument("converted", type=click.Path(dir_okay=True))
@_verify_options
@_exported_size
@_common
def verify(
    original: str,
    converted: str,
    rtol: float,
    atol: float,
    sizes: tuple[tuple[int, ...], ...],
    seed: int,
    exported_size: tuple[int, ...] | None,
    as_json: bool,
    json_file: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Check CONVERTED against ORIGINAL with onnxruntime (exit 1 when they differ)."""
    _setup_logging(quiet, debug)
    run = Invocation("verify", {"original": original, "converted": converted}, as_json, json_file, debug)

    def action() -> Done:
        options = api.ConvertOptions(
            tolerance=Tolerance(rtol=rtol, atol=atol), sizes=sizes or None, seed=seed, exported_size=exported_size
        )
        result = api.verify(original, converted, options)
        done = Done({"verification": report.verification_dict(result)}, "\n".join(report.verification_lines(result)))
        if not result.passed:
            done.failure = VerificationError(result.failure_line(), result)
        return done

    execute(run, action)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=True))
@click.argument("image_path", metavar="IMAGE", type=click.Path(dir_okay=True))
@click.argument("output_path", metavar="PICTURE", type=click.Path(dir_okay=True))
@click.option("--resize", "resize", type=Size(rank=2), help="Resize the image to this size before the model.")
@click.option(
    "--mean", type=FloatList(), help="Per-channel mean, on 0..1 pixels (one per channel). Default: ImageNet's."
)
@click.option("--std", type=FloatList(), help="Per-channel std (one per channel). Default: ImageNet's.")
@click.option("--class", "class_index", type=int, help="Class to draw. Default: the class of the strongest cell.")
@click.option("--output-name", help="Model output to draw. Default: the first [N, M, h, w] output.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=0), help="Strongest cells to list.")
@click.option("--dense", is_flag=True, help="When MODEL still has its FC head: convert it in dense mode.")
@click.option(
    "--output-stride", type=click.IntRange(min=1), help="A denser map: S/2 or S/4 by dilation (docs/denser-maps.md)."
)
@_common
def heatmap(
    model_path: str,
    image_path: str,
    output_path: str,
    resize: tuple[int, int] | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    class_index: int | None,
    output_name: str | None,
    top: int,
    dense: bool,
    output_stride: int | None,
    as_json: bool,
    json_file: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Overlay one class's score map on IMAGE and write PICTURE (.png, .jpg or .jpeg).

    MODEL may be converted already or not (it is then converted in memory, verified).
    """
    from .heatmap import HeatmapOptions, picture_format, render

    _setup_logging(quiet, debug)
    files = {"model": model_path, "image": image_path, "picture": output_path}
    run = Invocation("heatmap", files, as_json, json_file, debug)

    def action() -> Done:
        picture_format(output_path)  # before any work
        options = HeatmapOptions(
            size=resize,
            mean=mean,
            std=std,
            class_index=class_index,
            output_name=output_name,
            top=top,
        )
        result = api.convert(model_path, api.ConvertOptions(dense=dense, output_stride=output_stride))
        drawn = render(result.model, image_path, output_path, options)
        return Done(report.heatmap_payload(drawn), report.heatmap_text(drawn, output_path))

    execute(run, action)
