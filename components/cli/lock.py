"""`shipyard lock status` / `lock release`: the host locks (`components.hostlock`: the proxy's, and the image
store's) on the destination's hosts - who holds them, and ending a holder whose deployer is gone but whose SSH
session lingers (Kamal's `lock status` and `lock release`)."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import hostlock
from ..errors import ConfigError
from . import output
from .stack import StackContext

COLUMNS = ("stack", "doing", "mode", "pid", "machine", "since")


def rows(per_host: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """One row per holder, or a `free` row for a host nobody holds (pure)."""
    out = []
    for host, holders in per_host.items():
        out += [(host, *(_mode(h) if c == "mode" else h.get(c) for c in COLUMNS)) for h in holders] \
            or [(host, "free", *([None] * 5))]
    return out


def _mode(holder: dict[str, Any]) -> str | None:
    """`shared`/`exclusive`, and which lock when it is not the proxy's (`shared, images`)."""
    lock = holder.get("lock", "host")
    return holder.get("mode") if lock == "host" else f"{holder.get('mode')}, {lock}"


def _hosts(ctx: StackContext, host: str | None) -> tuple[str, ...]:
    every = ctx.hosts()
    if host is not None and host not in every:
        raise ConfigError("--host", f"{host!r} is not a host of stack {ctx.name}: use one of {', '.join(every)}")
    return (host,) if host else every


def _each(ctx: StackContext, args: argparse.Namespace, call) -> dict[str, list[dict[str, Any]]]:
    chosen = _hosts(ctx, args.host)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(chosen, pool.map(lambda h: call(ctx.target(h)), chosen)))


def _print(per_host: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    if args.json:
        print(output.to_json(per_host))
    else:
        print(output.table(("HOST", "HOLDER", "DOING", "MODE", "PID", "MACHINE", "SINCE"), rows(per_host), args.paint))


def status(ctx: StackContext, args: argparse.Namespace) -> int:
    _print(_each(ctx, args, hostlock.holders), args)
    return 0


def release(ctx: StackContext, args: argparse.Namespace) -> int:
    ended = _each(ctx, args, hostlock.release)
    if not args.json:
        output.progress("ended these holders' sessions:" if any(ended.values()) else "nobody held the lock")
    _print(ended, args)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lock", help="the host lock on the destination's hosts", description=__doc__)
    actions = p.add_subparsers(dest="lock", metavar="ACTION", required=True)
    for name, handler, text in (("status", status, "who holds the host lock"),
                                ("release", release, "end the sessions holding the host lock")):
        a = actions.add_parser(name, parents=[common], help=text)
        a.add_argument("--host", help="only this host; default: every host of the destination")
        a.set_defaults(handler=handler)
