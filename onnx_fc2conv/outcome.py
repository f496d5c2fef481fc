"""One run of a subcommand and its outcome: what it prints (text, or one JSON document), the one
error line on stderr, and the exit code.

Every outcome ends here: success; the tool's own errors (exit 1, 2, 3); a stop signal (128 + its
number); an OSError of a file; a usage error found by click; and bugs (the catch-all, exit 2,
"(rerun with --debug)").
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from . import report
from .errors import Fc2ConvError, NotConvertibleError, VerificationError, one_line, printable
from .signals import Interrupted, raising_on_signals
from .verify import VerificationReport

log = logging.getLogger("onnx_fc2conv")

LINE_LIMIT = 2000  # an error line longer than this is cut (a model's names can be any length)
PREFIX = "onnx-fc2conv: "


@dataclass(frozen=True)
class Invocation:
    """A subcommand as called: its name, the files it names and where its report goes."""

    command: str
    files: dict[str, str | None]
    as_json: bool = False
    json_file: str | None = None
    debug: bool = False


@dataclass
class Done:
    """A run that finished: its JSON payload and text. `failure`: it finished and still failed
    (`verify` on models that differ), with that exit code."""

    payload: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    failure: Fc2ConvError | None = None


@dataclass(frozen=True)
class _Failure:
    line: str  # without the prefix
    exit_code: int
    error_type: str
    interrupted: bool = False
    details: tuple[str, ...] = ()  # lines after the error line (refused candidates, a failed table)
    payload: dict[str, Any] = field(default_factory=dict)


def _log_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    log.debug("%s: %s", category.__name__, one_line(Exception(str(message))))


def execute(run: Invocation, action: Callable[[], Done]) -> None:
    """Run `action` and report its outcome; exits with the documented code unless it is 0."""
    try:
        with raising_on_signals(), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _log_warning  # onnx's warnings (unknown external data keys, ...)
            done = action()
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        result = f"{stop.written} was written whole before stopping" if stop.written else "nothing written"
        finish_failure(run, _Failure(f"interrupted ({stop.name}); {result}", stop.exit_code, "Interrupted", True))
    except Exception as exc:
        if run.debug:
            raise
        finish_failure(run, failure_of(exc))
    if done.failure is not None:
        failure = failure_of(done.failure)
        if done.text is not None and not run.as_json:
            click.echo(done.text)
        finish_failure(run, _Failure(failure.line, failure.exit_code, failure.error_type, payload=done.payload))
    _emit(run, report.document(run.command, run.files, done.payload), done.text)


def failure_of(exc: BaseException) -> _Failure:
    """The error line, exit code and details of an exception."""
    if isinstance(exc, Fc2ConvError):
        details: tuple[str, ...] = ()
        reasons = exc.reasons if isinstance(exc, NotConvertibleError) else []
        if len(reasons) > 1:
            details = tuple(f"  - {printable(r)}" for r in reasons)
        if isinstance(exc, VerificationError) and isinstance(exc.report, VerificationReport):
            details = tuple(report.verification_lines(exc.report))
        line = one_line(exc, LINE_LIMIT)
        return _Failure(line, exc.exit_code, type(exc).__name__, details=details, payload=report.failure_payload(exc))
    if isinstance(exc, click.ClickException):
        return _Failure(printable(exc.format_message()), 2, "UsageError")
    if isinstance(exc, MemoryError):
        return _Failure("out of memory; nothing written", 2, "MemoryError")
    if isinstance(exc, OSError):  # a file the tool reads or writes: say which and why
        where = f"{printable(str(exc.filename))}: " if exc.filename else ""
        return _Failure(f"{where}{exc.strerror or one_line(exc)}", 2, type(exc).__name__)
    # a bug or an unforeseen model: still one line, no traceback
    return _Failure(f"{type(exc).__name__}: {one_line(exc)} (rerun with --debug)", 2, type(exc).__name__)


def finish_failure(run: Invocation, failure: _Failure) -> NoReturn:
    label = "" if failure.interrupted else "error: "
    click.echo(f"{PREFIX}{label}{failure.line}", err=True)
    if not run.as_json:
        for line in failure.details:
            click.echo(line, err=True)
    doc = report.document(
        run.command,
        run.files,
        failure.payload,
        exit_code=failure.exit_code,
        error=failure.line,
        error_type=failure.error_type,
        interrupted=failure.interrupted,
    )
    _emit(run, doc, None)
    sys.exit(failure.exit_code)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number (a score of a broken model, say) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _emit(run: Invocation, doc: dict[str, Any], text: str | None) -> None:
    rendered = json.dumps(_finite(doc), indent=2, allow_nan=False)
    if run.as_json:
        click.echo(rendered)
    elif text is not None:
        click.echo(text)
    if run.json_file:
        try:
            with open(run.json_file, "w", encoding="utf-8") as f:
                f.write(rendered + "\n")
        except OSError as exc:
            click.echo(f"{PREFIX}error: {run.json_file}: cannot write the JSON report ({exc.strerror})", err=True)
            sys.exit(2)
