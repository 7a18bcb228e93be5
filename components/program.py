"""The Pulumi program: read and validate the stack's config, build the destination's components, export.

`__main__.py` only calls `run()`. Config errors end the run with one line naming the key, not a traceback.
`declare` is the one way a destination is built from its settings: by this program (from the stack's config) and by
the plugin's `shipyard:index:Destination` component (from a program's inputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Mapping

import pulumi
from pulumi.runtime.config import CONFIG

from . import config, kamal, naming
from .errors import DeployError
from .service import DestinationService

OUTPUTS = ("service", "destination", "version", "image_id", "repo_digest", "image_ref", "tag", "containers", "urls",
           "accessories", "owner")  # what a destination exports (`owner`: how `shipyard` finds its objects on hosts)
PLUGIN_HEAD_START_S = 0.005  # for the plugin's registration to leave this process before the rest is declared
# The frames of its declaration each resource's state keeps (the SDK records the stack at every registration, and
# the engine writes the whole state after every step): of the innermost 7, the SDK's own registration takes 5 and
# drops them, leaving the two that say where the resource was declared (`service.py`, or a resource class and the
# line of `service.py` that made it) - not the walk, the program and the event loop below, the same for every one.
TRACE_FRAMES = 7


def declare(raw: Mapping[str, Any], *, project_dir: Path, parent: pulumi.Resource | None = None,
            later: bool = False) -> DestinationService:
    """The destination that settings `raw` (a stack's `shipyard:*` keys, without the namespace) describe, owned by
    this stack (`later`: its component and plugin only, the rest at its `declare()`). Raises DeployError (one line
    naming the key) for bad settings."""
    stack, project, org = pulumi.get_stack(), pulumi.get_project(), pulumi.get_organization()
    # a Kamal config named by `kamal` is the base; the stack's own keys win over it
    cfg = kamal.load_stack(raw, stack=stack, project_dir=project_dir)
    promote = None
    if cfg.promote:
        ref_name = cfg.promote.from_stack
        if "/" not in ref_name:
            ref_name = f"{org}/{project}/{ref_name}"
        ref = pulumi.StackReference(f"promote-from-{cfg.promote.from_stack.replace('/', '-')}", ref_name,
                                    pulumi.ResourceOptions(parent=parent))
        promote = {"stack": cfg.promote.from_stack, **{k: ref.require_output(k) for k in (
            "version", "image_ref", "service", "tag")}}
    return DestinationService(f"{cfg.service}-{cfg.destination}", cfg, owner=naming.owner(project, stack),
                              project_dir=project_dir, promote=promote, opts=pulumi.ResourceOptions(parent=parent),
                              later=later, command=os.environ.get(naming.COMMAND_ENV) or "deploy")


def outputs(svc: DestinationService) -> dict[str, Any]:
    cfg = svc.cfg
    return {"service": cfg.service, "destination": cfg.destination, **{k: getattr(svc, k) for k in OUTPUTS[2:]}}


@contextlib.contextmanager
def _frames_kept(frames: int):
    """Stacks extracted in this block (`traceback.extract_stack`, as the SDK's registration does) keep their
    innermost `frames`. For this program's one thread: the limit is the interpreter's."""
    before = getattr(sys, "tracebacklimit", None)
    sys.tracebacklimit = frames
    try:
        yield
    finally:
        if before is None:
            del sys.tracebacklimit
        else:
            sys.tracebacklimit = before


def _stopped(_signum: int, _frame: Any) -> None:
    """The CLI stops the program with SIGINT once the run has failed (a hook, a host) or is cancelled, maybe while
    it still declares: what it was declaring is moot, and the engine says why the run ended. So it exits at once,
    never with a traceback of wherever it was - nor of the SDK's own clean-up, which an exception raised here sets
    off: unwinding from where the signal came, or from the event loop's wait, which leaves the SDK's coroutine to be
    closed at exit with no loop to shut down on (`RuntimeError: no running event loop`)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)


def run(project_dir: Path) -> None:
    """The stack's destination. Its component and plugin are declared first and the rest once their registration
    has gone out: the engine starts the plugin (a process of its own) while this program declares the rest."""
    signal.signal(signal.SIGINT, _stopped)
    try:
        # secrets in plain text: only the program sees them; the components re-wrap them as secrets
        svc = declare(config.stack_keys(CONFIG.get()), project_dir=project_dir, later=True)
    except DeployError as exc:
        raise pulumi.RunError(f"stack {pulumi.get_stack()}: {exc}") from None

    async def rest() -> dict[str, Any]:
        await svc.urn.future()  # the component is registered; its plugin's registration follows at once
        await asyncio.sleep(PLUGIN_HEAD_START_S)
        try:
            with _frames_kept(TRACE_FRAMES):
                svc.declare()
        except DeployError as exc:
            raise pulumi.RunError(f"stack {pulumi.get_stack()}: {exc}") from None
        return outputs(svc)
    pulumi.run(rest)
