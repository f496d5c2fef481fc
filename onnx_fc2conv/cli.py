"""`onnx-fc2conv`: a thin click layer over the Python API.

Exit codes: 0 converted (and verified); 1 verification failed, nothing written; 2 usage error or
unreadable/invalid model; 3 FC layers that cannot be rewritten exactly, nothing written.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from . import api, report
from .errors import Fc2ConvError, NotConvertibleError, VerificationError, one_line, printable
from .shapes import DimNames
from .signals import Interrupted, raising_on_signals
from .verify import Tolerance, VerificationReport

log = logging.getLogger("onnx_fc2conv")

_DEFAULT_TOL = Tolerance()
_LINE_LIMIT = 2000  # an error line longer than this is cut (a model's names can be any length)


def _parse_size(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a size like 320x256") from None
    if not dims or any(d < 1 for d in dims):
        raise click.BadParameter(f"'{text}' is not a size like 320x256")
    return dims


def _sizes(values: tuple[str, ...]) -> tuple[tuple[int, ...], ...] | None:
    return tuple(_parse_size(v) for v in values) or None


def _setup_logging(quiet: bool, debug: bool) -> None:
    """Progress lines on a terminal; quiet when stderr is piped (warnings still show)."""
    level = logging.DEBUG if debug else (logging.INFO if sys.stderr.isatty() and not quiet else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onnx-fc2conv: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _fail(exc: Fc2ConvError, as_json: bool) -> None:
    """One line on stderr (plus one per refused candidate), the documented exit code."""
    click.echo(f"onnx-fc2conv: error: {one_line(exc, _LINE_LIMIT)}", err=True)
    reasons = [printable(r) for r in exc.reasons] if isinstance(exc, NotConvertibleError) else []
    if len(reasons) > 1:
        for reason in reasons:
            click.echo(f"  - {reason}", err=True)
    if as_json:
        payload: dict[str, Any] = {"status": "error", "exit_code": exc.exit_code, "error": one_line(exc, _LINE_LIMIT)}
        if reasons:
            payload["reasons"] = reasons
        if isinstance(exc, VerificationError) and isinstance(exc.report, VerificationReport):
            payload["verification"] = report.verification_dict(exc.report)
        click.echo(json.dumps(payload, indent=2))
    elif isinstance(exc, VerificationError) and isinstance(exc.report, VerificationReport):
        click.echo("\n".join(report.verification_lines(exc.report)), err=True)
    sys.exit(exc.exit_code)


def _log_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    log.debug("%s: %s", category.__name__, one_line(Exception(str(message))))


def _guard(as_json: bool, debug: bool, action: Callable[[], None]) -> None:
    try:
        with raising_on_signals(), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _log_warning  # onnx's warnings (unknown external data keys, ...)
            action()
    except Fc2ConvError as exc:
        if debug:
            raise
        _fail(exc, as_json)
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        done = f"{stop.written} was written whole before stopping" if stop.written else "nothing written"
        click.echo(f"onnx-fc2conv: interrupted ({stop.name}); {done}", err=True)
        sys.exit(stop.exit_code)
    except MemoryError:
        click.echo("onnx-fc2conv: error: out of memory; nothing written", err=True)
        sys.exit(2)
    except OSError as exc:  # a file the tool reads or writes: say which and why, in one line
        if debug:
            raise
        where = f"{printable(str(exc.filename))}: " if exc.filename else ""
        click.echo(f"onnx-fc2conv: error: {where}{exc.strerror or one_line(exc)}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug or an unforeseen model: still one line, no traceback
        if debug:
            raise
        click.echo(f"onnx-fc2conv: error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug)", err=True)
        sys.exit(2)


def _common(fn: Callable) -> Callable:
    fn = click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress lines, even on a terminal.")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report on stdout.")(fn)
    return fn


def _verify_options(fn: Callable) -> Callable:
    fn = click.option("--seed", default=0, show_default=True, help="Seed of the random verification inputs.")(fn)
    fn = click.option(
        "--size",
        "sizes",
        multiple=True,
        metavar="HxW",
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnx-fc2conv")
def main() -> None:
    """Make classifier CNNs fully convolutional: FC heads become exact convolutions.

    Exit codes: 0 done; 1 verification failed (nothing written); 2 usage error or
    unreadable model; 3 FC layers that cannot be rewritten exactly (nothing written).
    """


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=True))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(dir_okay=True))
@click.option("--dense", is_flag=True, help="Global-pool heads: apply the head before the pool (a class map).")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Prove the result equal with onnxruntime.")
@_verify_options
@click.option("--batch-name", default="batch", show_default=True, help="Name of the symbolic batch dim.")
@click.option("--height-name", default="height", show_default=True, help="Name of the symbolic input height.")
@click.option("--width-name", default="width", show_default=True, help="Name of the symbolic input width.")
@click.option(
    "--external-data-mb",
    default=1024,
    show_default=True,
    type=click.IntRange(min=0),
    help="Write weights to OUTPUT.data when the model exceeds this size (always above 2 GB).",
)
@click.option("--in-place", is_flag=True, help="Allow OUTPUT to be INPUT (replaced atomically).")
@_common
def convert(
    input_path: str,
    output_path: str,
    dense: bool,
    verify: bool,
    rtol: float,
    atol: float,
    sizes: tuple[str, ...],
    seed: int,
    batch_name: str,
    height_name: str,
    width_name: str,
    external_data_mb: int,
    in_place: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Rewrite the FC head of INPUT into convolutions and write OUTPUT."""
    _setup_logging(quiet, debug)

    def run() -> None:
        options = api.ConvertOptions(
            dense=dense,
            verify=verify,
            dim_names=DimNames(batch=batch_name, height=height_name, width=width_name),
            tolerance=Tolerance(rtol=rtol, atol=atol),
            sizes=_sizes(sizes),
            seed=seed,
            external_threshold=external_data_mb << 20,
            in_place=in_place,
        )
        result, data = api.convert_file(input_path, output_path, options)
        written = output_path + (f" (+ {data.name})" if data else "")
        if as_json:
            click.echo(json.dumps(report.conversion_dict(result, output_path), indent=2))
        else:
            click.echo(report.conversion_text(result, written))

    _guard(as_json, debug, run)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=True))
@click.option("--dense", is_flag=True, help="Show global-pool heads as dense mode would rewrite them.")
@_common
def inspect(input_path: str, dense: bool, as_json: bool, quiet: bool, debug: bool) -> None:
    """Show the FC heads of INPUT, what they would become, and why any cannot be rewritten."""
    _setup_logging(quiet, debug)

    def run() -> None:
        found = api.inspect(input_path, api.ConvertOptions(dense=dense))
        if as_json:
            click.echo(json.dumps(report.inspection_dict(found), indent=2))
        else:
            click.echo(report.inspection_text(found))

    _guard(as_json, debug, run)


@main.command()
@click.argument("original", type=click.Path(dir_okay=True))
@click.argument("converted", type=click.Path(dir_okay=True))
@_verify_options
@_common
def verify(
    original: str,
    converted: str,
    rtol: float,
    atol: float,
    sizes: tuple[str, ...],
    seed: int,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Check CONVERTED against ORIGINAL with onnxruntime (exit 1 when they differ)."""
    _setup_logging(quiet, debug)

    def run() -> None:
        options = api.ConvertOptions(tolerance=Tolerance(rtol=rtol, atol=atol), sizes=_sizes(sizes), seed=seed)
        result = api.verify(original, converted, options)
        if as_json:
            click.echo(json.dumps(report.verification_dict(result), indent=2))
        else:
            click.echo("\n".join(report.verification_lines(result)))
        if not result.passed:
            sys.exit(1)

    _guard(as_json, debug, run)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of numbers") from None


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=True))
@click.argument("image_path", metavar="IMAGE", type=click.Path(dir_okay=True))
@click.argument("output_path", metavar="OUTPUT_PNG", type=click.Path(dir_okay=True))
@click.option("--resize", "resize", metavar="HxW", help="Resize the image to this size before the model.")
@click.option("--mean", default="0.485,0.456,0.406", show_default=True, help="Per-channel mean (on 0..1 pixels).")
@click.option("--std", default="0.229,0.224,0.225", show_default=True, help="Per-channel std.")
@click.option("--class", "class_index", type=int, help="Class to draw. Default: the class of the strongest cell.")
@click.option("--output-name", help="Model output to draw. Default: the first [N, M, h, w] output.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=0), help="Strongest cells to list.")
@click.option("--dense", is_flag=True, help="When MODEL still has its FC head: convert it in dense mode.")
@_common
def heatmap(
    model_path: str,
    image_path: str,
    output_path: str,
    resize: str | None,
    mean: str,
    std: str,
    class_index: int | None,
    output_name: str | None,
    top: int,
    dense: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Overlay one class's score map on IMAGE and write OUTPUT_PNG.

    MODEL may be converted already or not (it is then converted in memory, verified).
    """
    from .heatmap import HeatmapOptions, render

    _setup_logging(quiet, debug)

    def run() -> None:
        size = _parse_size(resize) if resize else None
        if size is not None and len(size) != 2:
            raise click.BadParameter("--resize takes HxW")
        options = HeatmapOptions(
            size=size,  # type: ignore[arg-type]
            mean=_floats(mean),
            std=_floats(std),
            class_index=class_index,
            output_name=output_name,
            top=top,
        )
        result = api.convert(model_path, api.ConvertOptions(dense=dense))
        drawn = render(result.model, image_path, output_path, options)
        if as_json:
            click.echo(json.dumps(report.heatmap_dict(drawn, output_path), indent=2))
        else:
            click.echo(report.heatmap_text(drawn, output_path))

    _guard(as_json, debug, run)
