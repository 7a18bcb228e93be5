"""`shipyard deploy`: `pulumi up` of the stack through the Automation API, recorded in the stack's history as who
deployed what; with `--lock-wait SECONDS` it waits for another deploy of the same stack to finish instead of
failing at once."""

from __future__ import annotations

import argparse
import re
import sys

from . import details, output
from .stack import StackContext, performer

# `shipyard deploy of <version> by <who>`: what `audit` reads back from the history's messages
MESSAGE = re.compile(r"^shipyard (?P<action>[a-z ]+?)(?: of| to) (?P<version>\S+) by (?P<who>.+)$")


def message(action: str, version: str, who: str) -> str:
    return f"shipyard {action} {'to' if action == 'rollback' else 'of'} {version} by {who}"


def parse_message(text: str) -> dict[str, str] | None:
    m = MESSAGE.match((text or "").strip())
    return m.groupdict() if m else None


def engine_line(paint: output.Painter):
    """Shows the engine's output on stderr while an update runs: the progress of a long operation."""
    def show(line: str) -> None:
        line = line.rstrip()
        if line:
            print(paint(f"    {line}", "dim"), file=sys.stderr, flush=True)
    return show


def waiting(ctx: StackContext):
    def show(holder: str) -> None:
        output.progress(f"{ctx.name} is being updated by {holder}: waiting for its lock")
    return show


def healed(ctx: StackContext):
    def show(pending: list[str]) -> None:
        output.progress(f"{ctx.name}: an interrupted run left this behind, now read back from the hosts and "
                        f"cleared: {', '.join(pending)}")
    return show


def up(ctx: StackContext, args: argparse.Namespace, action: str, version: str) -> None:
    output.progress(f"{action} of {ctx.name} (version {version})")
    ctx.up(message=message(action, version, performer(ctx.app_dir)), lock_wait=args.lock_wait,
           on_output=engine_line(args.paint), on_wait=waiting(ctx), on_heal=healed(ctx),
           command="rollback" if action == "rollback" else "deploy")
    ctx.refresh()


def expected_version(ctx: StackContext) -> str:
    """The version this deploy will run, for the history: the pinned one, the promoted stack's, or the builder
    context's git commit (what the program computes too)."""
    from .. import source
    from .stack import pulumi_errors
    cfg = ctx.cfg
    if not cfg.servers:
        return "-"  # accessories only: no image, no version
    if cfg.promote:
        with pulumi_errors(cfg.promote.from_stack, "reading the version to promote"):
            promoted = ctx.ws.stack_outputs(cfg.promote.from_stack.split("/")[-1]).get("version")
        return str(promoted.value) if promoted else "unknown"
    if cfg.version:
        return cfg.version
    return source.git_version(source.context_for(ctx.project_dir / cfg.builder.context, cfg.builder.dockerfile,
                                                 clean=cfg.builder.clean_checkout))


def run(ctx: StackContext, args: argparse.Namespace) -> int:
    version = expected_version(ctx)
    up(ctx, args, "deploy", version)
    code = details.show(ctx, args)
    if ctx.cfg.version and not ctx.cfg.promote:  # where Kamal's next deploy ships the app's commit again
        output.progress(f"{ctx.name} stays on version {version}: shipyard:version pins it (`shipyard rollback` "
                        f"does); `pulumi config rm --stack {ctx.name} shipyard:version` deploys the app's commits "
                        f"again")
    return code


def add_lock_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=float, default=0, metavar="SECONDS",
                   help="when another deploy of this stack runs, wait up to this long for it (default: fail at once)")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("deploy", parents=[common], help="deploy the stack (pulumi up), then show details",
                       description=__doc__)
    add_lock_wait(p)
    p.set_defaults(handler=run)
