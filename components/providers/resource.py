"""What a destination declares: resources of the `shipyard` plugin (`components.plugin`), one type per kind
(`shipyard:index:Container`, ...). Stacks written when these were Python dynamic resources carry on through an
alias of the old type: the same resources, nothing replaced."""

from __future__ import annotations

from typing import Any

import pulumi

PACKAGE = "shipyard"
DYNAMIC_TYPE = "pulumi-python:dynamic/shipyard:{}"  # the type of each kind before the plugin


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
