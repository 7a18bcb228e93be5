"""What a destination declares: resources of the `shipyard` plugin (`components.plugin`), one type per kind
(`shipyard:index:Container`, ...), whose providers (`components.providers`) run in the plugin's process - the program
never imports them. Stacks written when these were Python dynamic resources carry on through an alias of the old
type: the same resources, nothing replaced."""

from __future__ import annotations

from typing import Any

import pulumi

PACKAGE = "shipyard"
DYNAMIC_TYPE = "pulumi-python:dynamic/shipyard:{}"  # the type of each kind before the plugin
# Kamal's hooks, by the names of their files in its hooks directory
HOOKS = ("pre-connect", "pre-build", "pre-deploy", "post-deploy", "pre-app-boot", "post-app-boot",
         "pre-proxy-reboot", "post-proxy-reboot")


def type_token(kind: str) -> str:
    return f"{PACKAGE}:index:{kind}"


class ShipyardResource(pulumi.CustomResource):
    """A resource of the plugin; `outputs` are the properties its provider computes (declared so the program can
    read them), `secret` the ones the state keeps encrypted whatever their inputs."""
    kind = ""
    outputs: tuple[str, ...] = ()
    secret: tuple[str, ...] = ()

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None, *,
                 secret: tuple[str, ...] = ()):
        secrets = [*self.secret, *secret]
        own = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=DYNAMIC_TYPE.format(self.kind))],
                                     additional_secret_outputs=secrets or None)
        super().__init__(type_token(self.kind), name, {**props, **{k: None for k in self.outputs if k not in props}},
                         pulumi.ResourceOptions.merge(opts, own))


class Image(ShipyardResource):
    kind, outputs, secret = "Image", ("image_id", "repo_digest", "hosts", "reuse"), ("registry_password",)
    image_id: pulumi.Output[str]
    repo_digest: pulumi.Output[str | None]
    tag: pulumi.Output[str]
    hosts: pulumi.Output[list[str]]


class Network(ShipyardResource):
    kind, outputs = "Network", ("network_id",)
    network_id: pulumi.Output[str]


class Volume(ShipyardResource):
    kind = "Volume"


class Container(ShipyardResource):
    kind, outputs, secret = "Container", ("container_id",), ("secret_env", "registry_auth")
    container_id: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        rendered = any(isinstance(f, dict) and "content" in f for f in props.get("files") or [])  # may hold secrets
        super().__init__(name, props, opts, secret=("files",) if rendered else ())


class Proxy(ShipyardResource):
    kind, outputs = "Proxy", ("container_id", "running_image")
    container_id: pulumi.Output[str]


class ProxyRoute(ShipyardResource):
    kind, secret = "ProxyRoute", ("tls",)


class Rollout(ShipyardResource):
    kind, secret = "Rollout", ("redact",)


class Hook(ShipyardResource):
    kind, secret = "Hook", ("secrets",)
