"""`shipyard accessory reboot` and `shipyard prune` (`REBOOT`, `PRUNE`: each command's description)."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import hosts, naming
from ..errors import ConfigError, HostError, StackError
from ..hosts import docker_errors
from ..providers.container import after_rollout, prune_images
from . import output
from .stack import StackContext

REBOOT_DEADLINE_S = 60

REBOOT = ("`shipyard accessory reboot NAME` (Kamal's `accessory reboot`): the accessory's container stopped and "
          "started again on each of its hosts - same container, same data. Kamal's `accessory logs NAME` is "
          "`shipyard logs --role NAME` (typed either way); its accessories' state is in `shipyard details`.")
PRUNE = ("`shipyard prune` (Kamal's `prune all`): on every host of the destination, its stopped app containers "
         "beyond `retain_containers` per role, and its images no container of it uses, removed - as every rollout "
         "does; nothing of another destination is touched.")


def _labels(ctx: StackContext) -> dict[str, str]:
    return {naming.SERVICE: ctx.cfg.service, naming.DESTINATION: ctx.cfg.destination, naming.OWNER_LABEL: ctx.owner}


def reboot(ctx: StackContext, args: argparse.Namespace) -> int:
    cfg = ctx.cfg
    if args.name not in cfg.accessories:
        raise ConfigError("NAME", f"{args.name!r} is no accessory of stack {ctx.name}: use one of "
                                  f"{', '.join(cfg.accessories) or '(none)'}")
    running = (ctx.outputs.get("accessories") or {}).get(args.name) or {}
    if not running:
        raise StackError(ctx.name, f"accessory {args.name} is not deployed: run `shipyard deploy` first")

    def one(item: tuple[str, dict[str, Any]]) -> None:
        host, acc = item
        t = ctx.target(host)
        c = hosts.client(t)
        with docker_errors(t, f"rebooting accessory {args.name} ({acc['container']})"):
            c.restart(acc["id"], timeout=30)
            deadline = time.monotonic() + REBOOT_DEADLINE_S
            while not c.inspect_container(acc["id"])["State"].get("Running"):
                if time.monotonic() > deadline:
                    raise HostError(host, f"accessory {args.name} did not run again within {REBOOT_DEADLINE_S}s: "
                                          f"see `shipyard logs --role {naming.accessory_role(args.name)}`")
                time.sleep(0.5)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, running.items()))
    output.progress(f"{ctx.name}: accessory {args.name} rebooted on {', '.join(running)}")
    return 0


def prune(ctx: StackContext, args: argparse.Namespace) -> int:
    cfg, current = ctx.cfg, ctx.outputs.get("containers") or {}
    labels = _labels(ctx)

    def one(host: str) -> int:
        t = ctx.target(host)
        c = hosts.client(t)
        base = {"owner": ctx.owner, "destination": cfg.destination, "labels": labels, "target": t.to_dict(),
                "lock": {"stack": ctx.owner, "timeout": cfg.lock_timeout}, "retain": cfg.retain_containers}
        with docker_errors(t, f"pruning what destination {cfg.destination} keeps"):
            listing = c.containers(all=True, filters={"label": ctx.label_filters()})
            removed: set[str] = set()
            for role, now in (current.get(host) or {}).items():
                proxied = cfg.role_proxy(role) is not None if role in cfg.servers else False
                props = {**base, "role": role, "proxy": proxied, "stop_timeout": None if proxied else cfg.drain_timeout}
                removed |= after_rollout(c, props, now["id"], [i for i in listing if i["Id"] not in removed])
            used = {i.get("ImageID") for i in listing if i["Id"] not in removed}
            prune_images(c, base, used)
        return len(removed)
    chosen = tuple(current)
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = dict(zip(chosen, pool.map(one, chosen)))
    output.progress(f"{ctx.name}: removed {sum(counts.values())} container(s) beyond retention "
                    f"({cfg.retain_containers} per role and host) and the images none of them uses")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("accessory", help="an accessory of the destination", description=REBOOT)
    actions = p.add_subparsers(dest="accessory", metavar="ACTION", required=True)
    a = actions.add_parser("reboot", parents=[common], help="stop and start accessory NAME again (its data stays)")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(handler=reboot)
    p = sub.add_parser("prune", parents=[common], help="remove containers beyond retention and unused images",
                       description=PRUNE)
    p.set_defaults(handler=prune)
