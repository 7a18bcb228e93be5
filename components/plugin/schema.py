"""The `shipyard` package: its schema (what `pulumi package get-schema` shows and SDKs are generated from) and the
provider behind each of its resource types.

One resource type per kind of object a destination puts on its hosts. Every one is reached over SSH (`SshTarget`)
and carries its destination's ownership (`owner`, `destination`, `labels`): what it finds on a host with another
owner's labels it leaves alone."""

from __future__ import annotations

import json
from functools import cache
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from ..providers import (ContainerProvider, HookProvider, ImageProvider, NetworkProvider, ProxyProvider,
                         RolloutProvider, RouteProvider, VolumeProvider)
from ..resources import DYNAMIC_TYPE, PACKAGE, type_token

VERSION = "0.1.0"
DESTINATION = type_token("Destination")
TARGET_KEYS = ("target", "build_host", "ship_to")  # SSH targets: a change of host replaces, of how it is reached not

PROVIDERS = {"Container": ContainerProvider, "Hook": HookProvider, "Image": ImageProvider,
             "Network": NetworkProvider, "Proxy": ProxyProvider, "ProxyRoute": RouteProvider,
             "Rollout": RolloutProvider, "Volume": VolumeProvider}

STR, BOOL, NUM, INT = {"type": "string"}, {"type": "boolean"}, {"type": "number"}, {"type": "integer"}
ANY = {"$ref": "pulumi.json#/Any"}
STRMAP = {"type": "object", "additionalProperties": STR}
STRLIST = {"type": "array", "items": STR}
TARGET = {"$ref": f"#/types/{PACKAGE}:index:SshTarget"}
OWNED = {"owner": (STR, "The stack that owns it (its ownership label)."),
         "destination": (STR, "The destination (stack) it belongs to."),
         "labels": (STRMAP, "Docker labels: ownership, service, destination, role, version.")}
AT = {"target": (TARGET, "The host it lives on, and how to reach it.")}
LOCK = {"lock": (ANY, "The host lock's settings: stack name and timeout.")}

# kind -> (description, inputs {name: (type, description)}, required inputs, outputs {name: type}, secret properties)
RESOURCES: dict[str, tuple[str, dict[str, tuple[dict, str]], tuple[str, ...], dict[str, dict], tuple[str, ...]]] = {
    "Image": ("The destination's image: built on its build host (or promoted), labelled and tagged as the "
              "destination's own, shipped to every host, pinned by ID.", {
        **OWNED, "tag": (STR, "The destination's own tag."),
        "context": (STR, "The build context directory."), "dockerfile": (STR, "The Dockerfile, in the context."),
        "context_hash": (STR, "A digest of the build context: what the version names."),
        "build_args": (STRMAP, "Build arguments."), "pinned": (BOOL, "The version was given, not the commit's."),
        "build_host": (TARGET, "The host that builds it."),
        "ship_to": ({"type": "array", "items": TARGET}, "The hosts that run it."),
        "registry_server": (STR, "The registry it goes through, if any."),
        "registry_username": (STR, "The registry login's user."),
        "registry_password": (ANY, "The registry login's password."),
        "promote": (ANY, "The image of another stack this one runs instead of a build.")},
        ("owner", "destination", "labels", "tag", "build_host", "ship_to"),
        {"image_id": STR, "repo_digest": STR, "hosts": STRLIST, "reuse": ANY}, ("registry_password",)),
    "Container": ("One container of a role (or an accessory) on one host, created from the pinned image and "
                  "ready before anything routes to it; what it replaces is kept stopped for rollback.", {
        **OWNED, **AT, "name": (STR, "The container's name."), "role": (STR, "Its role (or accessory name)."),
        "image": (STR, "The image ID (or an accessory's image reference)."), "cmd": (STRLIST, "The command."),
        "env": (STRMAP, "Environment variables."), "secret_env": (STRMAP, "Secret environment variables."),
        "ports": ({"type": "array", "items": ANY}, "Published ports."), "volumes": (STRLIST, "Mounts."),
        "network": (STR, "The destination's network."), "aliases": (STRLIST, "Names on that network."),
        "extra_networks": (STRLIST, "Further networks."), "restart": (STR, "The restart policy."),
        "running": (BOOL, "Whether it runs."), "stop_timeout": (NUM, "Seconds to stop."),
        "retain": (NUM, "Stopped versions kept for rollback."), "proxy": (ANY, "Its route's health check."),
        "rollout": (BOOL, "A role's container (its rollout retires what it replaces), not an accessory's."),
        "exclusive": (BOOL, "Never runs next to its predecessor (an accessory's data)."),
        "files": ({"type": "array", "items": ANY}, "Files mounted into it."),
        "directories": ({"type": "array", "items": ANY}, "Directories mounted into it."),
        "state_dir": (STR, "Where its files live on the host."),
        "registry_auth": (ANY, "The registry login for an accessory's image."),
        "logging": (ANY, "The log driver and options."), "options": (ANY, "Further `docker run` options."),
        "assets": (ANY, "Asset bridging between versions."), "takeover": (ANY, "The Kamal role it takes over."),
        "host_shell": (ANY, "Env values the host's shell expands.")},
        ("owner", "destination", "labels", "target", "name", "role", "image"), {"container_id": STR},
        ("secret_env", "registry_auth", "files")),
    "Proxy": ("kamal-proxy on one host, shared by every destination there.", {
        **AT, **LOCK, "image": (STR, "kamal-proxy's image."), "run": (ANY, "How it runs (ports, options).")},
        ("target", "image"), {"container_id": STR, "running_image": STR}, ()),
    "ProxyRoute": ("A destination's route through kamal-proxy: health-checks the new container, switches, drains.", {
        **OWNED, **AT, **LOCK, "service": (STR, "The route's name."), "role": (STR, "The role it serves."),
        "upstream": (STR, "The container and port it serves."), "container_id": (STR, "The container it serves."),
        "proxy": (ANY, "Hosts, paths, TLS, health check, timeouts."), "error_pages": (ANY, "Its error pages."),
        "tls": (ANY, "A certificate of one's own."), "takeover": (ANY, "The Kamal route it takes over.")},
        ("target", "service", "upstream"), {}, ("tls",)),
    "Rollout": ("One step of a destination's rollout across roles: `start` (every new container ready) or "
                "`retire` (what ran before stops, versions beyond retention go).", {
        **OWNED, **LOCK, "step": (STR, "`start` or `retire`."),
        "containers": ({"type": "array", "items": ANY}, "The rollout's containers, per host and role."),
        "redact": (ANY, "Secret values to keep out of messages."), "wait": (NUM, "Seconds before the next batch.")},
        ("step", "containers"), {}, ("redact",)),
    "Network": ("The destination's Docker network on one host.", {**OWNED, **AT, "name": (STR, "Its name.")},
                ("target", "name"), {"network_id": STR}, ()),
    "Volume": ("A named volume on one host; kept by `pulumi destroy` unless the stack opts in.",
               {**OWNED, **AT, "name": (STR, "Its name.")}, ("target", "name"), {}, ()),
    "Hook": ("A Kamal hook, run on the deploying machine when what it stands by changes.", {
        "hook": (STR, "Which hook."), "destination": (STR, "The destination."), "path": (STR, "The hook file."),
        "file_hash": (STR, "The hook file's digest."), "workdir": (STR, "Where it runs."),
        "details": (STRMAP, "Kamal's variables for it."), "trigger": (STR, "What it stands by."),
        "secrets": (STRMAP, "Secrets it is given.")}, ("hook", "path"), {}, ("secrets",)),
}


def destination_schema(types: dict[str, Any]) -> dict[str, Any]:
    """The component: a stack's settings as inputs (each typed as the stack's `shipyard:*` key of that name takes
    it, its objects added to `types`), the stack's outputs as outputs. (Imported here: the resource kinds'
    operations never need the program, nor pydantic: the plugin starts without them.)"""
    from .. import config
    from ..program import OUTPUTS
    inputs = {k: {**_setting_type(config.Deploy.model_fields[k].annotation, types),
                  "description": f"As the stack setting `shipyard:{k}`."}
              for k in sorted(config.KNOWN_KEYS) if k not in config.INTERNAL_KEYS}
    # Kamal's short form of `servers` too: a list of hosts is the `web` role.
    roles = _setting_type(config.Deploy.model_fields["servers"].annotation, types)
    inputs["servers"] = {"oneOf": [roles, STRLIST], "description": "As the stack setting `shipyard:servers`. A list "
                                                                   "of hosts is the `web` role."}
    inputs["project_dir"] = {**STR, "description": "What relative paths (build context, files, hooks) are relative "
                                                   "to; the program's directory by default."}
    inputs["secrets"] = {**inputs["secrets"], "secret": True}
    outputs = {k: {**OUTPUT_TYPES.get(k, STR), "description": f"As the stack output `{k}`."} for k in OUTPUTS}
    outputs["plan"] = {**STR, "description": "What goes where, in one line (said at preview while hosts are unknown)."}
    return {"isComponent": True, "inputProperties": inputs, "requiredInputs": ["service", "image"],
            "properties": outputs, "required": list(outputs),
            "description": "One destination of a service on its hosts, from settings that may be outputs of other "
                           "resources (the servers' addresses, a registry password from a secret store)."}


OUTPUT_TYPES = {"urls": STRLIST, "containers": ANY, "accessories": ANY}  # the others are strings
SCALARS = {str: STR, bool: BOOL, int: INT, float: NUM}
# (model, field): values to keep secret (the others name secrets)
SECRET_SETTINGS = {("Registry", "password"), ("Hooks", "secrets")}


def _setting_type(annotation: Any, types: dict[str, Any]) -> dict[str, Any]:
    """A setting's type in the schema, as the config's model declares it: scalars, lists, maps, a union as
    `oneOf`, and each model an object type `shipyard:index:<Model>Settings`, added to `types`."""
    from pydantic import BaseModel  # loaded with the config's models already
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _setting_type(args[0], types)
    if origin in (Union, UnionType):
        kinds = [_setting_type(a, types) for a in args if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else {"oneOf": kinds}
    if origin is Literal:
        return STR if all(isinstance(a, str) for a in args) else ANY
    if annotation in SCALARS:
        return SCALARS[annotation]
    if origin in (tuple, list):
        return {"type": "array", "items": _setting_type(args[0], types)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _setting_type(args[1], types)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        token = f"{PACKAGE}:index:{annotation.__name__}Settings"
        if token not in types:
            types[token] = {}  # taken, while its fields are typed
            fields = annotation.model_fields
            props = {k: {**_setting_type(f.annotation, types),
                         **({"secret": True} if (annotation.__name__, k) in SECRET_SETTINGS else {})}
                     for k, f in fields.items()}
            types[token] = {"type": "object", "properties": props,
                            "required": [k for k, f in fields.items() if f.is_required()],
                            **({"description": " ".join(annotation.__doc__.split())} if annotation.__doc__ else {})}
        return {"$ref": f"#/types/{token}"}
    return ANY


def kind_of(token: str) -> str:
    """A resource type token's kind (`shipyard:index:Container` -> `Container`)."""
    return token.rsplit(":", 1)[-1]


def provider_for(token: str):
    """The provider of a resource type token (`shipyard:index:Container`)."""
    kind = kind_of(token)
    if kind not in PROVIDERS:
        raise KeyError(f"the shipyard plugin has no resource type {token}")
    return _instance(kind)


@cache
def _instance(kind: str):
    return PROVIDERS[kind]()


# kind -> the inputs a program reads back as outputs (a container's name, the image's tag)
READ_BACK = {"Container": ("name",), "Image": ("tag",), "Network": ("name",), "Volume": ("name",),
             "ProxyRoute": ("service",)}


@cache
def recorded_outputs(kind: str) -> frozenset[str]:
    """What the state records among a resource's outputs whatever its inputs: what its provider computes, the inputs
    read back, and its secrets. The other inputs it does not repeat there (`server.beyond`): the engine writes the
    whole state after each step, and a fleet's state was half inputs repeated as outputs."""
    _, _, _, outputs, secret = RESOURCES.get(kind, ("", {}, (), {}, ()))
    return frozenset({*outputs, *READ_BACK.get(kind, ()), *secret})


def _props(table: dict[str, tuple[dict, str]], secret: tuple[str, ...]) -> dict[str, Any]:
    return {k: {**t, "description": d, **({"secret": True} if k in secret else {})} for k, (t, d) in table.items()}


@cache
def as_json() -> str:
    resources = {}
    for kind, (description, inputs, required, outputs, secret) in RESOURCES.items():
        ins = _props(inputs, secret)
        outs = {**{k: t for k, t in ins.items() if k in recorded_outputs(kind)},
                **{k: {**t, **({"secret": True} if k in secret else {})} for k, t in outputs.items()}}
        resources[type_token(kind)] = {"description": description, "inputProperties": ins,
                                       "requiredInputs": list(required), "properties": outs,
                                       "aliases": [{"type": DYNAMIC_TYPE.format(kind)}]}
    types = {f"{PACKAGE}:index:SshTarget": {"type": "object", "description": "A host and how to reach it.",
                                            "properties": {"host": STR, "port": NUM, "user": STR, "keys": STRLIST,
                                                           "known_hosts": STR, "host_key_policy": STR, "proxy": STR,
                                                           "proxy_command": STR, "keys_only": BOOL, "address": STR,
                                                           "key_data": {**STRLIST, "secret": True}},
                                            "required": ["host"]}}
    resources[DESTINATION] = destination_schema(types)
    return json.dumps({
        "name": PACKAGE, "version": VERSION, "displayName": "shipyard",
        "description": "Deploys containerised web apps to plain Linux hosts over SSH, Kamal's way: one stack per "
                       "destination, images and containers of each destination its own.",
        "types": types,
        "resources": resources,
        # The Python SDK (`make sdk` generates it into sdk/python): the package `pulumi_shipyard`, its version the
        # plugin's, its arguments classes or plain dicts.
        "language": {"python": {"packageName": "pulumi_shipyard", "respectSchemaVersion": True,
                                "pyproject": {"enabled": True}, "inputTypes": "classes-and-dicts",
                                "requires": {"pulumi": ">=3.142.0,<4.0.0"}}},
    }, indent=2)
