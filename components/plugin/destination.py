"""`shipyard:index:Destination`: a destination as a component any Pulumi program declares (Python, YAML, ...),
constructed in the plugin. Its inputs are a stack's `shipyard:*` settings (`service`, `image`, `servers`, `proxy`,
`env`, `accessories`, ...) plus `project_dir` (what relative paths are relative to: the build context, files, hooks),
and any of them may be an output of another resource - the servers' addresses from the resources that create them,
a registry password from a secret store. The destination's resources are declared once every input is known; a
preview before that (the servers do not exist yet, or an update of them changes their addresses) says what will be
deployed where, and that it cannot list those resources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi
import pulumi.provider as provider
from pulumi.errors import InputPropertyError
from pulumi.output import Unknown
from pulumi.runtime.rpc import contains_unknowns

from .. import program
from ..errors import ConfigError, DeployError
from .schema import DESTINATION

TYPE = DESTINATION


class Destination(pulumi.ComponentResource):
    def __init__(self, name: str, inputs: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        settings = pulumi.Output.from_input(inputs)
        declared = settings.apply(self._declare)
        for key in program.OUTPUTS:  # none holds a secret: a secret input (a password) keeps none of them from view
            setattr(self, key, pulumi.Output.unsecret(declared.apply(lambda outs, k=key: outs[k])))
        self.plan = pulumi.Output.from_input(_plan(settings, self))
        self.register_outputs({k: getattr(self, k) for k in (*program.OUTPUTS, "plan")})

    def _declare(self, raw: dict[str, Any]) -> dict[str, Any]:
        raw = {k: v for k, v in raw.items() if v is not None}
        project_dir = Path(raw.pop("project_dir", None) or os.getcwd())
        try:
            return program.outputs(program.declare(raw, project_dir=project_dir, parent=self))
        except ConfigError as exc:  # the engine names the resource and the property
            raise InputPropertyError(exc.path, f"destination {_destination(raw)}: {exc.message}") from None
        except DeployError as exc:
            raise pulumi.RunError(f"destination {_destination(raw)}: {exc}") from None


def _destination(raw: dict[str, Any]) -> str:
    """The destination the inputs deploy: their `destination`, else the stack's name (as a stack's settings)."""
    given = raw.get("destination")
    return given if isinstance(given, str) and given else pulumi.get_stack()


UNDECLARED = ("its resources are declared once every setting is known, at `up`: until then a preview lists those "
              "deployed before as deletes, and `up` deletes only what no longer belongs (a host that left, a role "
              "removed)")


async def _plan(settings: pulumi.Output[dict[str, Any]], parent: pulumi.Resource) -> str:
    """One line: each role and accessory and where it goes, hosts not known yet said so. While any setting is
    unknown (a preview), logged - so the preview shows it - with why it lists none of the destination's resources
    (`UNDECLARED`): the engine counts those deployed before as deletes."""
    raw = await settings.future(with_unknowns=True) or {}
    unknown = 0

    def where(hosts: Any) -> str:
        nonlocal unknown
        if isinstance(hosts, Unknown) or hosts is None:
            unknown += 1
            return "hosts known once they exist"
        known = [h for h in hosts if isinstance(h, str)]
        unknown += len(hosts) - len(known)
        return ", ".join(known + ["a host known once it exists"] * (len(hosts) - len(known)))

    servers = raw.get("servers")
    parts = []
    if isinstance(servers, list):  # a bare host list: the web role
        parts.append(f"web on {where(servers)}")
    elif isinstance(servers, dict):
        for role, spec in servers.items():
            hosts = spec.get("hosts") if isinstance(spec, dict) else spec
            parts.append(f"{role} on {where(hosts)}")
    accessories = raw.get("accessories")
    for acc, spec in accessories.items() if isinstance(accessories, dict) else ():
        spec = spec if isinstance(spec, dict) else {}
        parts.append(f"accessory {acc} on {where(spec['hosts'] if 'hosts' in spec else [spec.get('host')])}")
    image = raw.get("image")
    line = (f"destination {_destination(raw)}: {'image ' + image + ', ' if isinstance(image, str) else ''}"
            f"{'; '.join(parts) or 'no servers'}")
    if unknown or contains_unknowns(raw):
        pulumi.log.info(f"{line} - {UNDECLARED}", resource=parent)
    return line


class DestinationProvider(provider.Provider):
    """The component side of the plugin: constructs `shipyard:index:Destination`."""

    def construct(self, name: str, resource_type: str, inputs: pulumi.Inputs,
                  options: pulumi.ResourceOptions | None = None) -> provider.ConstructResult:
        if resource_type != TYPE:
            raise ValueError(f"the shipyard plugin has no component {resource_type}")
        dest = Destination(name, dict(inputs), options)
        return provider.ConstructResult(urn=dest.urn, state={k: getattr(dest, k) for k in (*program.OUTPUTS,
                                                                                             "plan")})
