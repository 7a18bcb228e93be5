"""A typed Python SDK of the `shipyard` plugin, kept by hand: `Destination`, the component any Pulumi program
declares. (Generated, it would come from `pulumi package gen-sdk components/plugin/pulumi-resource-shipyard
--language python`; the Python language host that `make setup` installs - the last release inside the Go SDK module,
3.68 - predates SDK generation and answers `method GeneratePackage not implemented`. The schema types the component's
inputs as the stack settings it takes, so a generated class would add little beyond this one.) The program that
uses it names the plugin in its `Pulumi.yaml` (`plugins: providers: [{name: shipyard, path: <this repository>/
components/plugin}]`) and has this repository on its Python path.

    from components.sdk import Destination
    web = aws.ec2.Instance(...)
    app = Destination("staging", service="hello", image="acme/hello", servers={"web": {"hosts": [web.public_ip]}},
                      registry={"server": "ghcr.io", "username": "me", "password": registry_password}, ...)
    pulumi.export("urls", app.urls)
"""

from __future__ import annotations

from typing import Any

import pulumi

from .program import OUTPUTS
from .providers.resource import type_token

TYPE = type_token("Destination")


class Destination(pulumi.ComponentResource):
    """One destination of a service on its hosts. Every keyword is the stack setting of that name (`shipyard:<key>`
    in a stack's config, documented in docs/configuration.md; all but `kamal`, which a stack alone reads) and may be
    an output of another resource; `project_dir` is what relative paths (build context, accessory files, hooks) are
    relative to, the program's directory by default."""

    service: pulumi.Output[str]
    destination: pulumi.Output[str]
    version: pulumi.Output[str]
    image_id: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    tag: pulumi.Output[str]
    containers: pulumi.Output[dict[str, dict[str, dict[str, str]]]]
    urls: pulumi.Output[list[str]]
    accessories: pulumi.Output[dict[str, Any]]
    owner: pulumi.Output[str]
    plan: pulumi.Output[str]

    def __init__(self, name: str, *, service: pulumi.Input[str], image: pulumi.Input[str],
                 servers: pulumi.Input[Any] | None = None, project_dir: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None, **settings: pulumi.Input[Any]):
        props = {"service": service, "image": image, "servers": servers, "project_dir": project_dir, **settings,
                 **{k: None for k in (*OUTPUTS, "plan") if k not in ("service", "destination")}}
        props.setdefault("destination", None)
        super().__init__(TYPE, name, props, opts, remote=True)
