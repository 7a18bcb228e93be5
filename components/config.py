"""The deploy configuration: one stack's config, validated once, up front.

The vocabulary follows Kamal's deploy.yml (service, image, servers/roles, env clear/secret, registry, builder,
ssh), each key a `shipyard:<key>` in `stacks/Pulumi.<stack>.yaml`; the parts are in `components.configtypes`.
Pure: no pulumi, docker or paramiko here. Validation errors become one `ConfigError` whose path reads like
`servers.web.hosts[1]`, in words.
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .configtypes import (IMAGE, IMAGE_REF, JUMP_HOST, NAME_PART, REGISTRY_SERVER, SSH_USER, STACK_NAME, URL_PATH,
                          VERSION, VOLUME, Accessory, Boot, Builder, Env, Healthcheck, Model, Name, Port, Promote, Proxy,
                          Hooks, KamalApp, Logging, Registry, Role, SSH, Takeover)
from .errors import ConfigError
from .naming import PROJECT, proxy_service

__all__ = ["VOLUME", "Accessory", "Boot", "Builder", "ConfigError", "Deploy", "Env", "Healthcheck", "Port",
           "Hooks", "KamalApp", "Logging", "Promote", "Proxy", "Registry", "Role", "SSH", "Takeover", "load"]


class Deploy(Model):
    service: Name
    image: str = Field(pattern=IMAGE)
    servers: dict[Name, Role] = {}  # none: an app of accessories only (Kamal's too), with no image of its own
    destination: Name
    version: str | None = Field(default=None, pattern=VERSION)
    registry: Registry | None = None
    builder: Builder = Builder()
    env: Env = Env()
    env_tags: dict[str, Env] = {}  # env of hosts by tag (`servers.<role>.tags`), merged over the role's in this order
    ssh: SSH = SSH()
    promote: Promote | None = None
    secrets: dict[str, str] = {}
    proxy: Proxy | None = None  # Kamal's top-level proxy: applies to the `web` role
    boot: Boot = Boot()
    retain_containers: int = Field(default=5, ge=1, le=100)  # versions kept per role and host for rollback
    accessories: dict[Name, Accessory] = {}
    delete_volumes_on_destroy: bool = False  # named volumes survive `pulumi destroy` unless this is set
    readiness_delay: float | None = Field(default=None, ge=0, le=600)  # roles without proxy: seconds to stay up
    # roles without proxy: seconds a replaced container gets to finish its work after SIGTERM (`docker stop -t`),
    # as Kamal's drain_timeout gives them; a proxied role's requests are drained by kamal-proxy (proxy.drain_timeout)
    drain_timeout: float = Field(default=30, ge=0, le=3600)
    lock_timeout: float = Field(default=120, gt=0, le=3600)  # seconds to wait for a host's lock
    takeover: Takeover | None = None  # set by `kamal` (unless kamal.takeover is false)
    kamal_app: KamalApp | None = None  # set by `kamal`: what a Kamal app's containers expect of their runtime
    logging: Logging | None = None  # every container's log driver and options; a role's own are merged over it
    hooks: Hooks | None = None  # Kamal's hooks (.kamal/hooks/pre-deploy, ...), run on the deploying machine
    error_pages: str | None = None  # a directory of 4xx.html/5xx.html pages kamal-proxy serves for the app's routes
    # where a proxied role's image keeps its fingerprinted assets: both versions' are served during a rollout
    asset_path: str | None = Field(default=None, pattern=URL_PATH)
    aliases: dict[str, str] = {}  # `shipyard NAME` runs this command line (Kamal's aliases: `app exec -i ...`)

    @field_validator("servers", mode="before")
    @classmethod
    def _servers_list(cls, v: Any) -> Any:
        # Kamal's short form: a bare list of hosts is the `web` role.
        return {"web": {"hosts": v}} if isinstance(v, list) else v

    @model_validator(mode="after")
    def _something_to_deploy(self) -> "Deploy":
        if not self.servers and not self.accessories:
            raise _PathError("servers", "give at least one role with hosts, or an accessory")
        if not self.servers and self.promote:
            raise _PathError("promote", "an app of accessories only has no image to promote: give it a role, or "
                                        "drop promote")
        return self

    @model_validator(mode="after")
    def _secrets_present(self) -> "Deploy":
        for where, env in [("env", self.env)] + [(f"servers.{r}.env", role.env) for r, role in self.servers.items()] \
                + [(f"env_tags.{t}", e) for t, e in self.env_tags.items()] \
                + [(f"accessories.{a}.env", acc.env) for a, acc in self.accessories.items()]:
            for i, name in enumerate(env.secret):
                if name not in self.secrets:
                    raise _PathError(f"{where}.secret[{i}]",
                                     f"secret {name} has no value: run `pulumi config set --secret --path "
                                     f"'shipyard:secrets.{name}' VALUE`")
        return self

    @model_validator(mode="after")
    def _one_proxy_run_per_host(self) -> "Deploy":
        runs: dict[str, tuple[str, Any]] = {}
        users = [(f"role {name}", f"servers.{name}.proxy.run" if role.proxy else "proxy.run", self.role_proxy(name),
                  role.hosts) for name, role in self.servers.items()]
        users += [(f"accessory {name}", f"accessories.{name}.proxy.run", acc.proxy, acc.all_hosts())
                  for name, acc in self.accessories.items()]
        for who, where, proxy, on in users:
            for host in on if proxy is not None and proxy.run is not None else ():  # none set: no say, as in Kamal
                seen = runs.setdefault(host, (who, proxy.run))
                if seen[1] != proxy.run:
                    raise _PathError(where, f"host {host} runs one kamal-proxy, and {seen[0]} sets it otherwise: "
                                            f"give both the same proxy.run")
        return self

    @model_validator(mode="after")
    def _ssh_keys_present(self) -> "Deploy":
        for i, name in enumerate(self.ssh.key_data):
            if name not in self.secrets:
                raise _PathError(f"ssh.key_data[{i}]", f"secret {name} has no value: run `pulumi config set --secret "
                                                       f"--path 'shipyard:secrets.{name}' < private-key-file`")
        return self

    @model_validator(mode="after")
    def _certificates_present(self) -> "Deploy":
        for name in self.servers:
            proxy = self.role_proxy(name)
            for key in ("ssl_certificate", "ssl_private_key"):
                secret = getattr(proxy, key, None) if proxy else None
                if secret and secret not in self.secrets:
                    where = f"servers.{name}.proxy" if self.servers[name].proxy else "proxy"
                    raise _PathError(f"{where}.{key}", f"secret {secret} has no value: run `pulumi config set "
                                                       f"--secret --path 'shipyard:secrets.{secret}' < file.pem`")
        return self

    @model_validator(mode="after")
    def _proxied_roles_publish_no_proxy_ports(self) -> "Deploy":
        for name, role in self.servers.items():
            if self.role_proxy(name) is None:
                continue
            for i, port in enumerate(role.published_ports()):
                if port.host_port in (80, 443):
                    raise _PathError(f"servers.{name}.ports[{i}]", f"host port {port.host_port} belongs to the proxy "
                                     f"of role {name}: drop the mapping, the proxy reaches the app on proxy.app_port")
        return self

    @model_validator(mode="after")
    def _one_publisher_per_host_port(self) -> "Deploy":
        taken: dict[tuple[str, str, int, str], str] = {}
        publishers = [(f"servers.{r}.ports[{i}]", role.hosts, p) for r, role in sorted(self.servers.items())
                      for i, p in enumerate(role.published_ports())]
        publishers += [(f"accessories.{a}.port", acc.all_hosts(), Port.parse(acc.port))
                       for a, acc in sorted(self.accessories.items()) if acc.port]
        for where, hosts, port in publishers:
            if port.host_port is None:
                continue
            for host in hosts:
                key = (host, port.host_ip or "0.0.0.0", port.host_port, port.protocol)
                if key in taken:
                    raise _PathError(where, f"host port {port.host_port}/{port.protocol} on {host} is already "
                                            f"published by {taken[key]}: give each one its own host port")
                taken[key] = where
        return self

    def role_proxy(self, role: str) -> Proxy | None:
        r = self.servers[role]
        return r.proxy or (self.proxy if role == "web" else None)

    def route_name(self, role: str) -> str:
        """A proxied role's route in kamal-proxy; taking over a Kamal deployment, Kamal's name (its destination)."""
        return proxy_service(self.service, role, self.takeover.destination if self.takeover else self.destination)

    def all_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h for role in self.servers.values() for h in role.hosts))

    def build_host(self) -> str:
        return self.builder.host or self.all_hosts()[0]

    def role_env(self, role: str) -> Env:
        return self.env.merged(self.servers[role].env)

    def role_asset_path(self, role: str) -> str | None:
        """Where the role's assets are bridged (Kamal's asset_path): the role's or the top level's, proxied roles
        only."""
        return (self.servers[role].asset_path or self.asset_path) if self.role_proxy(role) else None

    def host_env(self, role: str, host: str) -> Env:
        """A role's env on one host: the role's, then `env_tags` of each of the host's tags there, in their order."""
        env, tags = self.role_env(role), self.servers[role].tags.get(host, ())
        for tag, tagged in self.env_tags.items():
            if tag in tags:
                env = env.merged(tagged)
        return env

    def container_logging(self, role: str | None) -> dict[str, Any] | None:
        """A role's (None: an accessory's) log driver and options: the role's merged over the top level's; none
        set: the daemon's default - for a Kamal app, Kamal's `--log-opt max-size=10m`."""
        top = self.logging or Logging()
        own = self.servers[role].logging if role else None
        driver = (own.driver if own else None) or top.driver
        options = {**top.options, **(own.options if own else {})}
        if not driver and not options:
            return {"driver": None, "options": {"max-size": "10m"}} if self.kamal_app else None
        return {"driver": driver, "options": options}


class _PathError(ValueError):
    """A validation error that knows its own path (for checks that span several fields)."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(message)


KNOWN_KEYS = frozenset(Deploy.model_fields)
INTERNAL_KEYS = frozenset({"kamal_app"})  # set from a Kamal config (`kamal`), never by hand


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first settings model within a field's annotation: X | None, dict[str, X], list[X]."""
    kinds = [annotation]
    while kinds:
        kind = kinds.pop(0)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
        kinds += typing.get_args(kind)
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the settings at `loc` (a section: `proxy`, `servers.web`, `accessories.db.proxy`) take, following
    the model's fields (a map's keys and a list's positions are passed over); none where `loc` is not a section."""
    model: type[BaseModel] | None = Deploy
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:
            continue  # a list's position, a map's key (a role's, an accessory's name)
        model = _model_in(model.model_fields[part].annotation)
        if model is None:
            return []
    return sorted(model.model_fields)


def _unknown(loc: tuple[Any, ...]) -> str:
    keys = [k for k in _keys_at(loc[:-1]) if k not in INTERNAL_KEYS]
    near = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return (f"unknown key{f' (did you mean {near[0]}?)' if near else ''}: "
            + (f"known keys are {', '.join(keys)}" if keys else
               "check its spelling against the configuration reference (docs/configuration.md)"))


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] == "extra_forbidden":
        return _unknown(err["loc"])
    if err["type"] == "literal_error":
        return f"{err.get('input')!r} is not allowed here: use {err['ctx']['expected']}"
    if err["type"] == "missing":
        return "required, but not set"
    if err["type"] == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(err["ctx"]["pattern"], "a different form")
        return f"{err.get('input')!r} is not allowed here: use {words}"
    if err["type"] in TYPE_WORDS:
        secret = err["type"] == "string_type" or any(str(part) in SECRET_KEYS for part in err["loc"])
        given = "this value" if secret else repr(err.get("input"))  # a secret's, set as a number, is never shown
        return f"{given} is not allowed here: use {TYPE_WORDS[err['type']]}"
    return msg


SECRET_KEYS = {"secrets", "password", "key_data"}

# pydantic's wrong-type errors in the words of YAML, as the stack file is written
TYPE_WORDS = {"list_type": "a list, such as [a, b]", "tuple_type": "a list, such as [a, b]",
              "dict_type": "a mapping of keys to values (key: value)",
              "model_type": "a mapping of its keys (key: value)", "string_type": "a string",
              "int_type": "a whole number", "int_parsing": "a whole number", "float_type": "a number",
              "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false"}


PATTERN_WORDS = {
    NAME_PART: "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, at most 40 characters",
    VERSION: "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 characters",
    IMAGE: "an image repository without registry or tag, such as myorg/myapp (lowercase letters and digits, "
           "joined by '.', '_', '-' or '/')",
    SSH_USER: "a user name: lowercase letters, digits, '_', '.' or '-', starting with a letter or '_'",
    JUMP_HOST: "a jump host as [user@]host[:port], such as deploy@bastion.example.com",
    REGISTRY_SERVER: "a host name or address, optionally with :port, such as registry.example.com:5000",
    URL_PATH: "a path starting with '/', without spaces",
    IMAGE_REF: "an image reference such as postgres:16 or registry.example.com/team/db:1",
    STACK_NAME: "a stack name such as staging, or org/project/stack",
}


def stack_keys(all_config: dict[str, Any]) -> dict[str, Any]:
    """A stack's `shipyard:*` keys without the namespace, objects decoded, secrets in plain text: from `pulumi config`
    (`ns:name` -> its value, or an item with `.value`), as the program and the `shipyard` command read it. A key of
    another package's namespace is let be; one of a misspelt `shipyard` is refused (its setting would be left out
    unsaid)."""
    out: dict[str, Any] = {}
    for key, item in all_config.items():
        ns, _, name = key.partition(":")
        if ns != PROJECT:
            if difflib.get_close_matches(ns, [PROJECT], cutoff=0.75):
                raise ConfigError(key, f"unknown namespace {ns} (did you mean {PROJECT}:{name}?)")
            continue
        value = getattr(item, "value", item)
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[name] = value
    return out


def load(raw: dict[str, Any], *, stack: str) -> Deploy:
    """Validate one stack's `shipyard:*` config (keys without the namespace). Raises exactly one ConfigError."""
    data = dict(raw)
    for key in data:
        if key not in KNOWN_KEYS:
            raise ConfigError(key, _unknown((key,)))
    if "promote" in data:
        for key in ("builder", "version"):
            if key in data:
                raise ConfigError(key, f"a promoting stack runs the version and image of "
                                       f"{(data['promote'] or {}).get('from_stack', 'its source')} as they are: drop "
                                       f"`{key}` (or `promote`)")
    data.setdefault("destination", stack)
    try:
        return Deploy.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # a misspelt key before the key it misses (`hots` where `hosts` is required)
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, _PathError):
            raise ConfigError(ctx_error.path, ctx_error.message) from None
        loc = err["loc"]
        # strip pydantic's union/type tags such as 'str' or 'tuple[str, ...]' from the location
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "list", "tuple"))))
        raise ConfigError(_path(loc), _message(err)) from None
