"""Review apps: `shipyard review up NAME --from staging` makes an ephemeral destination from staging's config as
its own stack (`review-NAME`, destination NAME), reachable through the proxy on `NAME.<staging's first proxy host
name>`, with its own image, network and accessories; `review list`; `review down NAME` destroys it and removes
the stack. Staging itself is only read."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from .. import kamal
from ..config import stack_keys
from ..errors import ConfigError, StackError
from ..payloads import VOLUME
from . import deploy, details, output
from .stack import NAMESPACE, StackContext, find_project, open_stack, performer, pulumi_errors, selected_stack, \
    workspace

PREFIX = "review-"
REVIEW_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$")  # a DNS label, a Docker name part


def stack_name(name: str) -> str:
    if not REVIEW_NAME.match(name):
        raise ConfigError("NAME", f"{name!r} cannot name a review app: use lowercase letters, digits and '-' (a "
                                  f"DNS label of at most 30 characters)")
    return f"{PREFIX}{name}"


def review_config(base: dict[str, Any], name: str, *, base_stack: str = "", project_dir: Path | None = None
                  ) -> dict[str, Any]:
    """A review app's `shipyard:*` config (decoded) from its base stack's: destination NAME, each proxy routing
    `NAME.<its first host name>`, no fixed host ports (they belong to the base destination), one retained version,
    volumes that go with it, the checkout's own version. Its image, network, volumes and accessories follow from the
    destination name.

    A base that reads a Kamal config gives a review app reading the same file, with the base's Kamal destination
    (its overlay and secrets), never taking over Kamal's deployment, and only the differences above as its own
    keys: an edit of the file reaches the review app too."""
    if "kamal" not in base:
        return _review_of(base, name)
    own = {k: v for k, v in base.items() if k != "version"}  # the checkout's version, never the base's pinned one
    resolved = kamal.stack_config(own, stack=base_stack, project_dir=project_dir or Path.cwd())
    opts = base["kamal"] if isinstance(base["kamal"], dict) else {"config": base["kamal"]}
    own.pop("kamal")
    opts = {**opts, "destination": (resolved.get("kamal_app") or {}).get("destination"), "takeover": False}
    return {**kamal.deep_merge(own, _overlay(resolved, _review_of(resolved, name))), "kamal": opts}


def _overlay(old: Any, new: Any) -> Any:
    """What to deep-merge over `old` to get `new`: changed leaves, and an emptied value for each removed key."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out = {k: _overlay(old[k], v) if k in old else v for k, v in new.items() if k not in old or old[k] != v}
    for k, v in old.items():
        if k not in new:
            out[k] = [] if isinstance(v, list) else {} if isinstance(v, dict) else None
    return out


def _review_of(base: dict[str, Any], name: str) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg["destination"] = name
    cfg["retain_containers"] = 1
    cfg["delete_volumes_on_destroy"] = True  # `review down` leaves no trace, its data neither
    # a review app shows the checkout: its version is the checkout's commit, never the base's pinned one (which names
    # another build)
    cfg.pop("version", None)
    servers = cfg["servers"]
    if isinstance(servers, list):
        servers = cfg["servers"] = {"web": {"hosts": servers}}
    proxies = ([cfg["proxy"]] if cfg.get("proxy") else []) + [r["proxy"] for r in servers.values() if r.get("proxy")]
    if not proxies or not all(p.get("hosts") for p in proxies):
        raise ConfigError("proxy.hosts", "a review app is reached by a host name on the proxy: give the base "
                                         "stack's proxy at least one host name")
    for p in proxies:
        p["hosts"] = [f"{name}.{p['hosts'][0]}"]
    for role in servers.values():
        role.pop("ports", None)
        _own_volumes(role)
    for acc in (cfg.get("accessories") or {}).values():
        acc.pop("port", None)
        if (acc.get("proxy") or {}).get("hosts"):  # an accessory behind the proxy: its own host name too
            acc["proxy"]["hosts"] = [f"{name}.{acc['proxy']['hosts'][0]}"]
        _own_volumes(acc)
    return cfg


def _own_volumes(holder: dict[str, Any]) -> None:
    """A host directory the base destination writes to (`/var/lib/pg-staging:/var/lib/postgresql/data`) is its data:
    the review app gets a named volume instead (which carries its own destination: empty at first, gone with it).
    Read-only host directories (certificates, config) are shared as they are."""
    volumes = []
    for text in holder.get("volumes") or []:
        m = VOLUME.match(text)
        if m and m["source"].startswith("/") and m["mode"] != "ro":
            name = "host" + re.sub(r"[^A-Za-z0-9_.-]+", "-", m["source"]).rstrip("-")
            text = f"{name}:{m['target']}" + (f":{m['mode']}" if m["mode"] else "")
        volumes.append(text)
    if volumes:
        holder["volumes"] = volumes


def encoded(cfg: dict[str, Any], secret_keys: set[str]) -> dict[str, auto.ConfigValue]:
    """Config values for `pulumi config set-all`: objects as JSON text (the program decodes them), secret keys
    encrypted as they were in the base stack."""
    return {f"{NAMESPACE}{k}": auto.ConfigValue(value=v if isinstance(v, str) else json.dumps(v),
                                                 secret=k in secret_keys)
            for k, v in cfg.items()}


def up(args: argparse.Namespace) -> int:
    base = open_stack(args.base)
    name = stack_name(args.name)
    if not base.cfg.servers:
        raise StackError(base.name, "it runs accessories only: a review app is a checkout's app, and it has none")
    cfg = review_config(stack_keys(base.all_config), args.name, base_stack=base.name, project_dir=base.project_dir)
    kamal.load_stack(cfg, stack=name, project_dir=base.project_dir)  # refuse a bad config before anything is created
    secret = {k[len(NAMESPACE):] for k, v in base.all_config.items() if k.startswith(NAMESPACE) and v.secret}
    ws = base.ws
    selected = _selected(ws)
    try:
        ws.create_stack(name)
        output.progress(f"created stack {name} from {base.name}")
    except auto.StackAlreadyExistsError:
        pass  # an update of the review app
    except auto.CommandError as exc:
        with pulumi_errors(name, "creating the stack"):
            raise exc
    if selected:
        with pulumi_errors(selected, "selecting the stack again"):
            ws.select_stack(selected)  # `stack init` selects the new stack; keep the user's selection
    ctx = StackContext(name=name, project_dir=base.project_dir, ws=ws)
    with pulumi_errors(name, "writing the config"):
        ws.set_all_config(name, encoded(cfg, secret))
    ctx.refresh()
    deploy.up(ctx, args, "review deploy", deploy.expected_version(ctx))
    return details.show(ctx, args)


def _selected(ws: auto.LocalWorkspace) -> str | None:
    try:
        return selected_stack(ws)
    except ConfigError:
        return None


def down(args: argparse.Namespace) -> int:
    name = stack_name(args.name)
    ctx = open_stack(name)
    output.progress(f"destroying {name}")
    with pulumi_errors(name, "destroying the review app"):
        selected = _selected(ctx.ws)
        show = deploy.engine_line(args.paint)

        def engine_line(line: str) -> None:
            if "pulumi stack rm" not in line and "associated with the stack are still maintained" not in line:
                show(line)  # not Pulumi's advice to remove the stack by hand: it goes with its resources here
        ctx.stack.destroy(on_output=engine_line, color="never", suppress_progress=True,
                          message=f"shipyard review down by {performer(ctx.app_dir)}", remove=True)
        if selected and selected != name:
            ctx.ws.select_stack(selected)  # removing a stack may leave none selected; keep the user's choice
    output.progress(f"{name} is gone")
    return 0


def listing(args: argparse.Namespace) -> int:
    ws = workspace(find_project(Path.cwd().resolve()))
    with pulumi_errors("-", "listing stacks"):
        stacks = [s for s in ws.list_stacks() if s.name.startswith(PREFIX)]
    rows = []
    for s in stacks:
        with pulumi_errors(s.name, "reading the outputs"):
            out = {k: v.value for k, v in ws.stack_outputs(s.name).items()}
        rows.append({"name": s.name[len(PREFIX):], "stack": s.name, "urls": out.get("urls") or [],
                     "version": out.get("version"), "updated": output.when(s.last_update)})
    if args.json:
        print(output.to_json(rows))
    else:
        print(output.table(("NAME", "STACK", "URL", "VERSION", "UPDATED"),
                           [(r["name"], r["stack"], " ".join(r["urls"]) or None, r["version"], r["updated"])
                            for r in rows], args.paint))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("review", help="review apps: ephemeral destinations made from another stack's config",
                       description=__doc__)
    actions = p.add_subparsers(dest="review", metavar="ACTION", required=True)
    json_only = argparse.ArgumentParser(add_help=False)
    json_only.add_argument("--json", action="store_true", help="machine-readable output")
    a = actions.add_parser("up", parents=[json_only], help="create or update review app NAME")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--from", dest="base", required=True, metavar="STACK", help="the stack whose config it takes")
    deploy.add_lock_wait(a)
    a.set_defaults(handler=up, stackless=True)
    a = actions.add_parser("list", parents=[json_only], help="the review apps and their URLs")
    a.set_defaults(handler=listing, stackless=True)
    a = actions.add_parser("down", parents=[json_only], help="destroy review app NAME and remove its stack")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(handler=down, stackless=True)

