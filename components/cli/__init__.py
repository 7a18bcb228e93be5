"""`shipyard`: operate a destination day to day - details, logs, exec, versions, rollback, audit, deploy - and
review apps, each for one stack (`-s/--stack`, default: the selected stack).

Argparse (standard library): subcommands with shared options through parent parsers are all this needs, and the
project takes no dependency for it. Every error ends the command with one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

import signal

from . import interrupts

with interrupts.exiting_on(signal.SIGINT):  # Ctrl-C while these load: exit 130, no traceback
    from ..errors import DeployError
    from . import audit, deploy, details, execute, logs, maintenance, output, review, upkeep, versions

GROUPS = (details, logs, execute, versions, audit, deploy, review, maintenance, upkeep)


class _Parser(argparse.ArgumentParser):
    """Argparse's, saying what shipyard calls the Kamal options it was given."""

    def error(self, message: str):  # type: ignore[override]
        from .aliases import DESTINATION, OPTIONS
        theirs = {**{k: "-s/--stack" for k in DESTINATION}, **OPTIONS}
        given = sorted({w.split("=")[0] for w in message.split() if w.split("=")[0] in theirs}, key=message.find)
        if given and message.startswith("unrecognized arguments"):
            message += f" (Kamal's {', '.join(f'{w} is {theirs[w]}' for w in given)} here)"
        super().error(message)


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-s", "--stack", help="the stack (destination) to act on; default: the selected stack")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="shipyard", description=__doc__.split("\n\n")[0],
                 epilog="Kamal's commands are read as shipyard's that do the same (`shipyard app logs -r web -d "
                        "staging` is `shipyard logs --role web -s staging`). A stack's aliases (Kamal's `aliases`, "
                        "or `shipyard:aliases`) are commands too: `shipyard NAME [ARGS]` runs the alias NAME of the "
                        "stack (-s/--stack, default: the selected stack).")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    for group in GROUPS:
        group.register(sub, common)
    lock = _lock_module()
    if lock is not None:
        lock.register(sub, common)
    ap.commands = frozenset(sub.choices)  # type: ignore[attr-defined]  # any other first word: an alias
    return ap


def _lock_module():
    """`lock status` / `lock release` when the host lock exists in this version."""
    try:
        from . import lock
    except ImportError:
        return None
    return lock


def _options_last(argv: list[str]) -> list[str]:
    """`shipyard -s staging details` as `shipyard details -s staging`: the options every command takes, given before
    the command, go after its words (before a `--`, which hands the rest to the container) - right after `exec`,
    whose command takes every word after it."""
    front: list[str] = []
    while argv and (argv[0] in ("-s", "--stack") and len(argv) > 1 or argv[0].startswith("--stack=")
                    or argv[0] == "--json"):
        n = 2 if argv[0] in ("-s", "--stack") else 1
        # as `--stack=NAME`: after a Kamal command, `-s` may be another option (`app logs -s 5m`: since)
        front, argv = front + ([f"--stack={argv[1]}"] if n == 2 else argv[:1]), argv[n:]
    if not front:
        return argv
    cut = 1 if argv[:1] == ["exec"] else argv.index("--") if "--" in argv else len(argv)
    return argv[:cut] + front + argv[cut:]


def run(argv: Sequence[str] | None = None) -> int:
    argv = _options_last(list(sys.argv[1:] if argv is None else argv))
    ap = parser()
    if argv and not argv[0].startswith("-"):
        from .aliases import as_shipyard, resolve
        argv = as_shipyard(argv, ap.commands) or resolve(argv)  # type: ignore[attr-defined]
    args = ap.parse_args(argv)
    args.paint = output.Painter(output.colour_enabled(sys.stdout) and not args.json)
    handler: Callable[..., int] = args.handler
    if getattr(args, "stackless", False):
        return handler(args)
    from .stack import open_stack
    return handler(open_stack(args.stack), args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with interrupts.running():
            code = run(argv)
    except DeployError as exc:
        print(f"shipyard: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = interrupts.INTERRUPTED
    except Exception as exc:  # a bug of ours: still one line, the traceback only on request
        if os.environ.get("SHIPYARD_DEBUG"):
            raise
        print(f"shipyard: unexpected {type(exc).__name__}: {exc} (SHIPYARD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        code = 1
    finally:
        from .. import hosts
        hosts.close_all()
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
