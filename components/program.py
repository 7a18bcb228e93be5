"""The Pulumi program: read and validate the stack's config, build the destination's components, export.

`__main__.py` only calls `run()`. Config errors end the run with one line naming the key, not a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.config import CONFIG

from . import kamal, naming
from .errors import DeployError
from .service import DestinationService

NAMESPACE = naming.PROJECT


def raw_config() -> dict[str, Any]:
    """Every `shipyard:*` key of this stack, objects decoded, secrets in plain text (only the program sees them;
    the components re-wrap them as secrets)."""
    out: dict[str, Any] = {}
    for key, value in CONFIG.get().items():
        ns, _, name = key.partition(":")
        if ns != NAMESPACE:
            continue
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[name] = value
    return out


def run(project_dir: Path) -> None:
    stack, project, org = pulumi.get_stack(), pulumi.get_project(), pulumi.get_organization()
    try:
        # a Kamal config named by `shipyard:kamal` is the base; the stack's own keys win over it
        cfg = kamal.load_stack(raw_config(), stack=stack, project_dir=project_dir)
        promote = None
        if cfg.promote:
            ref_name = cfg.promote.from_stack
            if "/" not in ref_name:
                ref_name = f"{org}/{project}/{ref_name}"
            ref = pulumi.StackReference(f"promote-from-{cfg.promote.from_stack.replace('/', '-')}", ref_name)
            promote = {"stack": cfg.promote.from_stack, **{k: ref.require_output(k) for k in (
                "version", "image_ref", "service", "tag")}}
        svc = DestinationService(f"{cfg.service}-{cfg.destination}", cfg,
                                 owner=naming.owner(project, stack), project_dir=project_dir, promote=promote)
    except DeployError as exc:
        raise pulumi.RunError(f"stack {stack}: {exc}") from None
    pulumi.export("service", cfg.service)
    pulumi.export("destination", cfg.destination)
    pulumi.export("version", svc.version)
    pulumi.export("image_id", svc.image_id)
    pulumi.export("repo_digest", svc.repo_digest)
    pulumi.export("image_ref", svc.image_ref)
    pulumi.export("tag", svc.tag)
    pulumi.export("containers", svc.containers)
    pulumi.export("urls", svc.urls)
    pulumi.export("accessories", svc.accessories)
    pulumi.export("owner", svc.owner)  # how `shipyard` finds this stack's objects on its hosts
