"""`shipyard versions` and `shipyard rollback` (`VERSIONS`, `ROLLBACK`: each command's description)."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import hosts, naming
from ..errors import ConfigError, StackError
from ..hosts import docker_errors
from . import deploy, details, output
from .stack import StackContext

VERSIONS = ("`shipyard versions`: the versions each role keeps on each host (the running one and the stopped, "
            "retained ones a rollback can return to).")
ROLLBACK = ("`shipyard rollback VERSION`: redeploy a retained version - `shipyard:version` set to it and `pulumi up` "
            "through the Automation API; the image is reused (same tag, labels and source), nothing is built or "
            "pushed - then show the details.")


def collect(ctx: StackContext) -> list[dict[str, Any]]:
    """Every container of the destination's roles (not accessories) on every host, newest first per role and
    host."""
    recorded = details.current_ids(ctx.outputs)

    def one_host(host: str) -> list[dict[str, Any]]:
        target = ctx.target(host)
        with docker_errors(target, "listing the destination's containers"):
            found = hosts.client(target).containers(all=True, filters={"label": ctx.label_filters()})
        rows = []
        for item in found:
            kind, role = details.role_of(item.get("Labels") or {})
            if kind != "role":
                continue
            rows.append({"role": role, "host": host, "version": item["Labels"].get(naming.VERSION),
                         "state": item["State"], "created": item.get("Created"), "container": item["Names"][0][1:],
                         "image_id": item.get("ImageID"), "current": item["Id"] in recorded})
        return rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = [r for per_host in pool.map(one_host, ctx.cfg.all_hosts()) for r in per_host]
    rows.sort(key=lambda r: (r["role"], r["host"], -(r["created"] or 0)))
    return rows


def missing_for(rows: list[dict[str, Any]], wanted: dict[str, tuple[str, ...]], version: str) -> list[str]:
    """`role@host (has v3, v2)` for each role and host of the config that keeps no container of `version`."""
    missing = []
    for role, role_hosts in wanted.items():
        for host in role_hosts:
            have = list(dict.fromkeys(r["version"] for r in rows if r["role"] == role and r["host"] == host))
            if version not in have:
                missing.append(f"{role}@{host} (has {', '.join(have) or 'nothing'})")
    return missing


def resolve(rows: list[dict[str, Any]], given: str) -> str:
    """The retained version `given` names (pure): itself, or - as Kamal users give a commit, whole or short - the
    one version that is a prefix of it or that it is a prefix of (7 characters at least)."""
    versions = list(dict.fromkeys(r["version"] for r in rows if r["version"]))
    if given in versions:
        return given
    found = [v for v in versions if len(given) >= 7 and len(v) >= 7 and (given.startswith(v) or v.startswith(given))]
    if len(found) > 1:
        raise ConfigError("VERSION", f"{given} names several retained versions ({', '.join(found)}): give more of it")
    return found[0] if found else given


def show(ctx: StackContext, args: argparse.Namespace) -> int:
    rows = collect(ctx)
    if args.json:
        print(output.to_json({"stack": ctx.name, "destination": ctx.cfg.destination, "versions": rows}))
        return 0
    print(output.table(("ROLE", "HOST", "VERSION", "STATE", "CREATED", "IMAGE", "CURRENT"),
                       [(r["role"], r["host"], r["version"], r["state"], output.when(r["created"]),
                         output.short_id(r["image_id"]), "*" if r["current"] else "") for r in rows],
                       args.paint, colour_column="STATE"))
    return 0


def rollback(ctx: StackContext, args: argparse.Namespace) -> int:
    cfg = ctx.cfg
    if cfg.promote:
        raise StackError(ctx.name, f"it promotes what {cfg.promote.from_stack} runs: roll back "
                                   f"{cfg.promote.from_stack}, then deploy this stack")
    if not cfg.servers:
        raise StackError(ctx.name, "it runs accessories only, which have no versions to roll back to")
    rows = collect(ctx)
    version = resolve(rows, args.version)
    missing = missing_for(rows, {r: role.hosts for r, role in cfg.servers.items()}, version)
    if missing:
        raise StackError(ctx.name, f"version {version} is not retained on {'; '.join(missing)}: see "
                                   f"`shipyard versions`")
    pinned = cfg.version
    ctx.set_version(version)
    try:
        deploy.up(ctx, args, "rollback", version)
    except BaseException:
        ctx.set_version(pinned)  # the stack's config says what runs: put it back as it was
        raise
    output.progress(f"{ctx.name} runs {version}; shipyard:version stays pinned to it until you change or remove "
                    f"it (`pulumi config rm shipyard:version` to follow git again)")
    return details.show(ctx, args)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("versions", parents=[common], help="retained versions per role and host",
                       description=VERSIONS)
    p.set_defaults(handler=show)
    p = sub.add_parser("rollback", parents=[common], help="redeploy a retained version (no build, no push)",
                       description=ROLLBACK)
    p.add_argument("version", metavar="VERSION")
    deploy.add_lock_wait(p)
    p.set_defaults(handler=rollback)
