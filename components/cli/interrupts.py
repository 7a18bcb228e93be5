"""How signals end the `shipyard` command: quietly, whenever they come. While the command's modules load (half a
second), Ctrl-C exits at once with 130, where Python's default would print a traceback. Once the command runs,
Ctrl-C raises KeyboardInterrupt for the command to end as it decides (a followed log ends with 0, anything else with
130), and the threads the interruption tears down end without a traceback: the Pulumi Automation API reads a CLI's
output on threads of its own, whose pipes close under them as the interrupted call unwinds.

Handlers change only in the main thread (where Python delivers signals), each restoring what it replaced."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator

INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a command Ctrl-C ended: 130


@contextlib.contextmanager
def handling(signum: int, handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """`handler` for `signum` within, what it replaced after; off the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def exiting_on(signum: int) -> contextlib.AbstractContextManager[None]:
    """Within: `signum` ends the process at once with 128 + its number, as a shell reports it. SystemExit unwinds
    (an import too) with no traceback and runs what is pending on the way out (`finally`, context managers)."""
    return handling(signum, lambda number, _frame: sys.exit(128 + number))


def _quiet(args: threading.ExceptHookArgs) -> None:
    """A thread's end after Ctrl-C: what the interruption closed under it, never worth a traceback."""


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Ctrl-C within: KeyboardInterrupt, and from then on no thread's end prints a traceback. The quiet stays once
    interrupted: threads still tearing down end after the command returns."""
    def on_ctrl_c(signum: int, frame: Any) -> None:
        threading.excepthook = _quiet
        raise KeyboardInterrupt

    hook = threading.excepthook
    with handling(signal.SIGINT, on_ctrl_c):
        try:
            yield
        finally:
            if threading.excepthook is not _quiet:
                threading.excepthook = hook
