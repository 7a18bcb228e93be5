"""`shipyard maintenance` / `shipyard live` (Kamal's `kamal app maintenance` / `kamal app live`): the destination's
routes (or one role's) answer 503 with the error page from `error_pages` (kamal-proxy's own otherwise) and
`--message`, after in-flight requests drain; `live` routes requests to the app again. No container is stopped or
restarted, and a deploy meanwhile leaves the routes in maintenance."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

from .. import hosts, naming
from ..errors import ConfigError, HostError
from . import output
from .stack import StackContext


def routes(ctx: StackContext, role: str | None) -> list[tuple[str, str, str]]:
    """(role, host, route name) of every proxied role of the destination, or of `role`."""
    cfg = ctx.cfg
    proxied = [r for r in cfg.servers if cfg.role_proxy(r)]
    if role is not None and role not in proxied:
        raise ConfigError("--role", f"{role!r} has no route in stack {ctx.name}: use one of "
                                    f"{', '.join(proxied) or '(none: no role runs behind the proxy)'}")
    return [(r, h, cfg.route_name(r)) for r in ([role] if role else proxied) for h in cfg.servers[r].hosts]


def _each(ctx: StackContext, chosen: list[tuple[str, str, str]], argv_of, doing: str) -> None:
    def one(item: tuple[str, str, str]) -> None:
        role, host, route = item
        code, out = hosts.exec_in(ctx.target(host), naming.PROXY_CONTAINER, argv_of(role, route), timeout=120)
        if code != 0:
            raise HostError(host, f"kamal-proxy did not {doing} route {route}: {out}")
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in pool.map(one, chosen):
            pass


def maintenance(ctx: StackContext, args: argparse.Namespace) -> int:
    chosen = routes(ctx, args.role)

    def argv(role: str, route: str) -> list[str]:
        drain = args.drain_timeout if args.drain_timeout is not None else ctx.cfg.role_proxy(role).drain_timeout
        return ["kamal-proxy", "stop", route, f"--drain-timeout={int(drain * 1000)}ms",
                *([f"--message={args.message}"] if args.message else [])]
    _each(ctx, chosen, argv, "stop")
    output.progress(f"{ctx.name}: in maintenance ({', '.join(sorted({r for r, _, _ in chosen}))}); "
                    f"`shipyard live -s {ctx.name}{' --role ' + args.role if args.role else ''}` ends it")
    return 0


def live(ctx: StackContext, args: argparse.Namespace) -> int:
    chosen = routes(ctx, args.role)
    _each(ctx, chosen, lambda _role, route: ["kamal-proxy", "resume", route], "resume")
    output.progress(f"{ctx.name}: live ({', '.join(sorted({r for r, _, _ in chosen}))})")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("maintenance", parents=[common], help="answer 503 with the error page (no container stops)",
                       description=__doc__)
    p.add_argument("--role", help="only this role's routes; default: every proxied role")
    p.add_argument("--message", help="the message shown in the page")
    p.add_argument("--drain-timeout", type=float, help="seconds in-flight requests get; default: proxy.drain_timeout")
    p.set_defaults(handler=maintenance)
    p = sub.add_parser("live", parents=[common], help="end maintenance: route requests to the app again",
                       description=__doc__)
    p.add_argument("--role", help="only this role's routes; default: every proxied role")
    p.set_defaults(handler=live)
