"""`shipyard details`: per host and role, the destination's current containers - version, state, health, image -
with their proxy routes and host names, and its accessories (Kamal's `app details` and `accessory details`)."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import hosts, naming, payloads
from ..hosts import docker_errors
from . import output
from .stack import StackContext

ACCESSORY_PREFIX = naming.accessory_role("")


def parse_routes(listing: str) -> dict[str, dict[str, str]]:
    """`kamal-proxy list` (a table with a header row, coloured even without a terminal) as {service: {column:
    value}}, column names lowercased."""
    rows = [output.ANSI.sub("", ln).split() for ln in listing.splitlines() if ln.strip()]
    if not rows:
        return {}
    header = [h.lower() for h in rows[0]]
    return {row[0]: dict(zip(header, row)) for row in rows[1:] if row}


def role_of(labels: dict[str, str]) -> tuple[str, str]:
    """(kind, name) of a container from its role label: ("role", "web") or ("accessory", "db")."""
    role = labels.get(naming.ROLE, "")
    if role.startswith(ACCESSORY_PREFIX):
        return "accessory", role[len(ACCESSORY_PREFIX):]
    return "role", role


def current_ids(outputs: dict[str, Any]) -> set[str]:
    """IDs of the containers the last deploy recorded: each role's on each host, and each accessory's."""
    ids = {c.get("id") for roles in (outputs.get("containers") or {}).values() for c in roles.values()}
    ids |= {a.get("id") for per_host in (outputs.get("accessories") or {}).values() for a in per_host.values()}
    return {i for i in ids if i}


def route_of(ctx: StackContext, kind: str, role: str, routes: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    if kind != "role" or role not in ctx.cfg.servers or ctx.cfg.role_proxy(role) is None:
        return None
    proxy = ctx.cfg.role_proxy(role)
    service = ctx.cfg.route_name(role)
    live = routes.get(service)
    return {"service": service, "hosts": list(proxy.hosts), "path_prefix": proxy.path_prefix,
            "target": live.get("target") if live else None, "state": (live or {}).get("state", "missing")}


def collect(ctx: StackContext) -> list[dict[str, Any]]:
    """One entry per current container of the destination, on every host at once."""
    recorded = current_ids(ctx.outputs)

    def one_host(host: str) -> list[dict[str, Any]]:
        target = ctx.target(host)
        c = hosts.client(target)
        with docker_errors(target, "listing the destination's containers"):
            found = c.containers(all=True, filters={"label": ctx.label_filters()})
            found = [i for i in found if i["State"] == "running" or i["Id"] in recorded]
            infos = [c.inspect_container(i["Id"]) for i in found]
        routes: dict[str, dict[str, str]] = {}
        if any(ctx.cfg.role_proxy(r) and host in ctx.cfg.servers[r].hosts for r in ctx.cfg.servers):
            code, listing = hosts.exec_in(target, naming.PROXY_CONTAINER, ["kamal-proxy", "list"])
            routes = parse_routes(listing) if code == 0 else {}
        rows = []
        for info in infos:
            labels = info["Config"].get("Labels") or {}
            kind, role = role_of(labels)
            state = info["State"]
            rows.append({"host": host, "kind": kind, "role": role, "container": info["Name"].lstrip("/"),
                         "id": info["Id"], "version": labels.get(naming.VERSION), "state": state["Status"],
                         "health": (state.get("Health") or {}).get("Status"), "image_id": info["Image"],
                         "started": state.get("StartedAt"), "route": route_of(ctx, kind, role, routes)})
        return rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        per_host = list(pool.map(one_host, ctx.hosts()))
    rows = [r for host_rows in per_host for r in host_rows]
    rows.sort(key=lambda r: (r["kind"] != "role", r["role"], r["host"]))
    return rows


def render(ctx: StackContext, rows: list[dict[str, Any]], paint: output.Painter) -> str:
    out = ctx.outputs
    head = [f"{paint(ctx.name, 'bold')}: service {ctx.cfg.service}, destination {ctx.cfg.destination}, "
            f"version {out.get('version')}",
            f"image {out.get('tag')} ({output.short_id(out.get('image_id'))})"] if ctx.cfg.servers else \
        [f"{paint(ctx.name, 'bold')}: service {ctx.cfg.service}, destination {ctx.cfg.destination}, accessories only"]
    for url in out.get("urls") or []:
        head.append(f"url {url}")
    apps = [r for r in rows if r["kind"] == "role"]
    accessories = [r for r in rows if r["kind"] == "accessory"]
    parts = ["\n".join(head), output.table(
        ("HOST", "ROLE", "CONTAINER", "VERSION", "STATE", "HEALTH", "IMAGE", "ROUTE"),
        [(r["host"], r["role"], r["container"], r["version"], r["state"], r["health"], output.short_id(r["image_id"]),
          _route_text(r["route"])) for r in apps], paint, colour_column="STATE")]
    if accessories:
        parts.append(output.table(("HOST", "ACCESSORY", "CONTAINER", "STATE", "HEALTH", "IMAGE"),
                                  [(r["host"], r["role"], r["container"], r["state"], r["health"],
                                    output.short_id(r["image_id"])) for r in accessories], paint,
                                  colour_column="STATE"))
    return "\n\n".join(parts)


def _route_text(route: dict[str, Any] | None) -> str | None:
    if not route:
        return None
    names = ",".join(route["hosts"]) or "*"
    return f"{names}{','.join(payloads.path_prefixes(route['path_prefix']))} ({route['state']})"


def as_json(ctx: StackContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = ctx.outputs
    return {"stack": ctx.name, "service": ctx.cfg.service, "destination": ctx.cfg.destination,
            "version": out.get("version"), "image": {"tag": out.get("tag"), "id": out.get("image_id")},
            "urls": out.get("urls") or [], "containers": [r for r in rows if r["kind"] == "role"],
            "accessories": [r for r in rows if r["kind"] == "accessory"]}


def show(ctx: StackContext, args: argparse.Namespace) -> int:
    rows = collect(ctx)
    if args.json:
        print(output.to_json(as_json(ctx, rows)))
    else:
        print(render(ctx, rows, args.paint))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("details", parents=[common], help="the destination's containers, routes and accessories",
                       description=__doc__)
    p.set_defaults(handler=show)
