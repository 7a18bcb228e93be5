"""Ctrl-C ends the `shipyard` command quietly whenever it comes. While the command's modules load (half a second),
it exits at once with 130, as Python's default would with a traceback. Once the command runs, it raises
KeyboardInterrupt for the command to end as it decides (a followed log ends with 0, anything else with 130), and the
threads the interruption tears down end without a traceback: the Pulumi Automation API reads a CLI's output on
threads of its own, whose pipes close under them as the interrupted call unwinds.

Both only in the main thread (where Python delivers signals), each restoring what it replaced."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator

INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command Ctrl-C ended


def _swap(handler: Callable[..., Any]) -> Any:
    """Install `handler` for SIGINT; what it replaced (None off the main thread, where nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Ctrl-C within: exit 130 at once. SystemExit unwinds an import with no traceback."""
    previous = _swap(lambda *_: sys.exit(INTERRUPTED))
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _quiet(args: threading.ExceptHookArgs) -> None:
    """A thread's end after Ctrl-C: what the interruption closed under it, never worth a traceback."""


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Ctrl-C within: KeyboardInterrupt, and from then on no thread's end prints a traceback. The quiet stays once
    interrupted: threads still tearing down end after the command returns."""
    interrupted = threading.Event()

    def on_ctrl_c(signum: int, frame: Any) -> None:
        interrupted.set()
        threading.excepthook = _quiet
        raise KeyboardInterrupt

    hook = threading.excepthook
    previous = _swap(on_ctrl_c)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if not interrupted.is_set():
            threading.excepthook = hook
