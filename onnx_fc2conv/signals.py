"""SIGINT, SIGTERM and SIGHUP stop the tool the same way: an exception that runs every cleanup on its
way out (temporary files go, nothing half-written stays), then exit 128 + the signal's number."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. `written` names the output when it arrived during the final renames,
    which are never cut in half: the output is then complete."""

    def __init__(self, signum: int, written: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.written = written

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Stops:
    """What the handler needs to know: whether a step that must not be cut in half is running, and
    the signal that arrived meanwhile. Process-wide by nature, as signal handlers are."""

    def __init__(self) -> None:
        self.deferring = 0
        self.pending: int | None = None


_STOPS = _Stops()


def _raise(signum: int, frame: FrameType | None) -> None:
    if _STOPS.deferring:
        _STOPS.pending = _STOPS.pending or signum
        return
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def raising_on_signals() -> Iterator[None]:
    """While active, each stop signal raises Interrupted (main thread only; elsewhere a no-op).
    The previous handlers come back afterwards."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred(written: str) -> Iterator[None]:
    """Hold the stop signals during a step that must not be cut in half (the renames that put an
    output in place): one that arrives meanwhile is raised afterwards, as `Interrupted(written=...)`
    when the step completed. Only while raising_on_signals() is active; otherwise a no-op."""
    if not _main_thread() or signal.getsignal(SIGNALS[0]) is not _raise:
        yield
        return
    _STOPS.deferring += 1
    completed = False
    try:
        yield
        completed = True
    finally:
        _STOPS.deferring -= 1
        signum = _STOPS.pending if not _STOPS.deferring else None
        if signum is not None:
            _STOPS.pending = None
            raise Interrupted(signum, written=written if completed else None)
