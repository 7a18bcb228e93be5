"""`shipyard audit`: who deployed what version when, from the stack's update history (Kamal's `audit`). Deploys
and rollbacks made with `shipyard` name their performer and version. A plain `pulumi up` records only what the
Pulumi CLI does: the project checkout's last commit, its author and message, and the pinned `shipyard:version`.
Those are shown only where the project's checkout is the app's (the builder context's); a Kamal app in a checkout
of its own would otherwise be shown this project's author, commit and message."""

from __future__ import annotations

import argparse
from typing import Any

from .. import source
from . import output
from .deploy import parse_message
from .stack import NAMESPACE, StackContext


def entry(update: Any) -> dict[str, Any]:
    """An Automation-API `UpdateSummary` as plain data."""
    return {"update": update.version, "kind": update.kind, "result": update.result, "message": update.message,
            "start": update.start_time, "end": update.end_time, "environment": dict(update.environment or {}),
            "config": {k: getattr(v, "value", v) for k, v in (update.config or {}).items()}}


def audit_row(e: dict[str, Any], app_checkout: bool = True, project_messages: frozenset[str] = frozenset()
              ) -> dict[str, Any]:
    """Who, what and when of one update (pure). `app_checkout`: the Pulumi project's git checkout is the app's, so
    the commit and author Pulumi records for a plain `pulumi up` are the app's; otherwise neither is shown, nor the
    message where it is the project commit's (`project_messages`), which a plain `pulumi up` takes as its own."""
    ours = parse_message(e.get("message") or "")
    env = e.get("environment") or {}
    git = env if app_checkout else {}
    pinned = (e.get("config") or {}).get(f"{NAMESPACE}version")
    head = git.get("git.head") if git.get("git.dirty") != "true" else None
    action = ours["action"] if ours else e["kind"]
    return {"update": e.get("update"), "time": output.when(e.get("start")), "action": action,
            "result": e.get("result"),
            "who": ours["who"] if ours else git.get("git.author") or git.get("git.committer"),
            "version": ours["version"] if ours else (pinned if isinstance(pinned, str) else head and head[:12]),
            "via": "shipyard" if ours else env.get("exec.kind", "pulumi"),
            "message": None if ours or (not app_checkout and (e.get("message") or "").strip() in project_messages)
            else (e.get("message") or None)}


def show(ctx: StackContext, args: argparse.Namespace) -> int:
    # the history comes newest first; DIY backends number no update (every `version` is 0): count them here
    app = source.same_checkout(ctx.project_dir, ctx.app_dir)
    history = [entry(u) for u in reversed(ctx.history())]
    heads = {(e["environment"].get("git.head") or "") for e in history} - {""}
    messages = frozenset() if app else frozenset(
        m for head in heads for m in source.commit_messages(ctx.project_dir, head))
    rows = [{**audit_row(e, app, messages), "update": n} for n, e in enumerate(history, start=1)]
    if args.json:
        print(output.to_json({"stack": ctx.name, "updates": rows}))
        return 0
    print(output.table(("#", "TIME", "ACTION", "RESULT", "VERSION", "WHO", "VIA", "MESSAGE"),
                       [(r["update"], r["time"], r["action"], r["result"], r["version"], r["who"], r["via"],
                         r["message"]) for r in rows], args.paint, colour_column="RESULT"))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", parents=[common], help="who deployed what version when",
                       description=__doc__)
    p.set_defaults(handler=show)
