"""The parts of a deploy configuration - roles, ports, volumes, proxy, accessories, SSH, registry, builder - as
pydantic models with their checks; `components.config` assembles them into one stack's `Deploy`. Pure."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .payloads import VOLUME, path_prefixes, run_options

# Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]* in container names and [A-Za-z0-9_.-]{1,128} in tags; our names join
# several parts with '-', so each part is held to the common subset.
NAME_PART = r"^[a-z0-9][a-z0-9_.-]{0,39}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IMAGE = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
SSH_USER = r"^[a-z_][a-z0-9_.-]{0,31}$"
JUMP_HOST = r"^([a-z_][a-z0-9_.-]{0,31}@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$"  # [user@]host[:port], OpenSSH's ProxyJump
REGISTRY_SERVER = r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
URL_PATH = r"^/\S*$"
IMAGE_REF = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
STACK_NAME = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$"
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Name = Annotated[str, Field(pattern=NAME_PART)]
UrlPath = Annotated[str, Field(pattern=URL_PATH)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


HostName = Annotated[str, AfterValidator(_check_host)]


def _check_port(text: str) -> str:
    Port.parse(text)
    return text


def _check_volume(text: str) -> str:
    m = VOLUME.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a volume: use NAME:/path or /host/path:/path, optionally :ro")
    if not m["source"].startswith("/") and not VOLUME_NAME.match(m["source"]):
        raise ValueError(f"{text!r}: {m['source']!r} is neither an absolute host path nor a volume name: host paths "
                         f"start with '/' (relative ones would depend on where the daemon runs)")
    return text


class SSH(Model):
    user: str = Field(default="root", pattern=SSH_USER)
    port: int = Field(default=22, ge=1, le=65535)
    keys: tuple[str, ...] = ()  # identity files; empty: the SSH agent and ~/.ssh defaults
    known_hosts: str | None = None  # default: ~/.ssh/known_hosts
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    # reaching hosts through another (OpenSSH's ProxyJump: [user@]host[:port], user default root, as Kamal's) or
    # through a command (ProxyCommand: %h, %p and %r are the host, port and user)
    proxy: str | None = Field(default=None, pattern=JUMP_HOST)
    proxy_command: str | None = Field(default=None, min_length=1)
    keys_only: bool = False  # only `keys` and `key_data`: not the SSH agent's (OpenSSH's IdentitiesOnly)
    # private keys held as secrets (shipyard:secrets names), as Kamal's key_data: a deploy from CI with no key file
    key_data: tuple[str, ...] = ()
    # OpenSSH config files to read for what the above leaves open (`ssh.target_of`): true for OpenSSH's own
    config: bool | tuple[str, ...] = False

    @model_validator(mode="after")
    def _one_proxy(self) -> "SSH":
        if self.proxy and self.proxy_command:
            raise ValueError("give proxy or proxy_command, not both")
        return self


class Registry(Model):
    server: str = Field(pattern=REGISTRY_SERVER)
    username: str | None = None
    password: str | None = None  # a Pulumi secret (`pulumi config set --secret --path shipyard:registry.password`)

    @model_validator(mode="after")
    def _both_or_neither(self) -> "Registry":
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.password == "":
            raise ValueError("password is empty: set it with `pulumi config set --secret --path "
                             "'shipyard:registry.password' VALUE`")
        return self


class Builder(Model):
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = {}
    target: str | None = None
    host: HostName | None = None  # where the image is built; default: the first host of the first role
    # the build host's SSH login, where it is not ssh.user/ssh.port (Kamal's builder.remote ssh://user@host:port)
    user: str | None = Field(default=None, pattern=SSH_USER)
    port: int | None = Field(default=None, ge=1, le=65535)
    # the image's CPU architecture (Kamal's builder.arch: `docker build --platform linux/<arch>`); default: the
    # build host's own
    arch: str | None = Field(default=None, pattern=r"^[a-z0-9]+(/[a-z0-9]+)?$")
    # build what the checkout's HEAD holds of the context, never the working tree (Kamal's clean clone of HEAD,
    # set for a Kamal app without builder.context): the version is always the commit
    clean_checkout: bool = False

    @model_validator(mode="after")
    def _login_needs_host(self) -> "Builder":
        if (self.user or self.port) and not self.host:
            raise ValueError("user and port are the build host's: set host too")
        return self


class Env(Model):
    clear: dict[str, str] = {}
    secret: tuple[str, ...] = ()  # names; values come from the secret config object `shipyard:secrets`

    @field_validator("clear")
    @classmethod
    def _clear_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return v

    @field_validator("secret")
    @classmethod
    def _secret_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return v

    def merged(self, other: "Env") -> "Env":
        return Env(clear={**self.clear, **other.clear}, secret=tuple(dict.fromkeys(self.secret + other.secret)))


PORT = re.compile(r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(?P<proto>tcp|udp))?$")


class Port(Model):
    host_ip: str | None
    host_port: int | None
    container_port: int
    protocol: Literal["tcp", "udp"] = "tcp"

    @classmethod
    def parse(cls, text: str) -> "Port":
        m = PORT.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a port mapping: use CONTAINER, HOST:CONTAINER or IP:HOST:CONTAINER[/udp]")
        ports = [int(p) for p in (m["host"], m["container"]) if p is not None]
        if any(not 1 <= p <= 65535 for p in ports):
            raise ValueError(f"{text!r}: ports are between 1 and 65535")
        if m["ip"]:
            ipaddress.ip_address(m["ip"])
        return cls(host_ip=m["ip"], host_port=int(m["host"]) if m["host"] else None,
                   container_port=int(m["container"]), protocol=m["proto"] or "tcp")


VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Healthcheck(Model):
    path: str = Field(default="/up", pattern=URL_PATH)
    interval: float = Field(default=1, gt=0, le=60)  # seconds
    timeout: float = Field(default=5, gt=0, le=60)


def _check_options(value: dict[str, object]) -> dict[str, object]:
    run_options(value)  # a ValueError names the flag
    return value


# `docker run` flags (Kamal's `options`): {memory: 2g, cpus: 1.5, add-host: [db:10.0.0.5], init: true}
RunOptions = Annotated[dict[str, str | int | float | bool | list[str]], AfterValidator(_check_options)]


class ProxyRun(Model):
    """How the host's kamal-proxy container itself runs (Kamal's proxy.run); one per host, shared by every
    destination there: the last deploy to change it sets it."""
    http_port: int = Field(default=80, ge=1, le=65535)
    https_port: int = Field(default=443, ge=1, le=65535)
    publish: bool = True  # publish the ports on the host
    bind_ips: tuple[str, ...] = ()  # where to publish them; none: every address
    log_max_size: str = "10m"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # Prometheus metrics
    debug: bool = False
    options: RunOptions = {}  # `docker run` flags of the proxy container


class Proxy(Model):
    """kamal-proxy in front of a role: routes by host name (and path prefix), health-gated switches."""
    hosts: tuple[HostName, ...] = ()  # empty: every host name (only one service per server may do that)
    # one path, or several (kamal-proxy routes each); one given as a list reads as that one
    path_prefix: UrlPath | tuple[UrlPath, ...] | None = None
    app_port: int = Field(default=80, ge=1, le=65535)
    ssl: bool = False  # passed through as kamal-proxy's --tls (Let's Encrypt for `hosts`)
    # a certificate of your own instead of Let's Encrypt: the names of two `shipyard:secrets` holding the PEMs
    ssl_certificate: str | None = None
    ssl_private_key: str | None = None
    healthcheck: Healthcheck = Healthcheck()
    deploy_timeout: float = Field(default=30, gt=0, le=3600)
    drain_timeout: float = Field(default=30, ge=0, le=3600)
    response_timeout: float = Field(default=30, gt=0, le=3600)
    image: str = "basecamp/kamal-proxy:v0.9.2"  # one proxy per host: keep this equal across destinations
    # kamal-proxy's own settings of a route, each left to kamal-proxy's default where unset
    ssl_redirect: bool | None = None  # redirect HTTP to HTTPS (with ssl); kamal-proxy: true
    forward_headers: bool | None = None  # X-Forwarded-* to the app; kamal-proxy: true without ssl, false with it
    strip_path_prefix: bool | None = None  # kamal-proxy: true
    buffer_requests: bool | None = None  # kamal-proxy: false (Kamal: true)
    buffer_responses: bool | None = None  # kamal-proxy: false (Kamal: true)
    buffer_memory: int | None = Field(default=None, ge=1)  # bytes
    max_request_body: int | None = Field(default=None, ge=0)  # bytes, 0: unlimited
    max_response_body: int | None = Field(default=None, ge=0)
    log_request_headers: tuple[str, ...] | None = None  # logged request headers (Kamal: Cache-Control, ...)
    log_response_headers: tuple[str, ...] | None = None
    run: ProxyRun | None = None  # the host's kamal-proxy container; none: as it runs

    @field_validator("path_prefix", mode="after")
    @classmethod
    def _one_prefix_is_a_path(cls, v: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        if isinstance(v, tuple):
            if not v:
                return None
            if len(set(v)) != len(v):
                raise ValueError("a path prefix is listed twice")
            return v[0] if len(v) == 1 else v
        return v

    @property
    def path_prefixes(self) -> tuple[str, ...]:
        return tuple(path_prefixes(self.path_prefix))

    @model_validator(mode="after")
    def _ssl_needs_hosts(self) -> "Proxy":
        if self.ssl and not self.hosts:
            raise ValueError("ssl needs at least one host name in hosts")
        if (self.ssl_certificate is None) != (self.ssl_private_key is None):
            raise ValueError("ssl_certificate and ssl_private_key go together: give both secret names, or neither")
        if self.ssl_certificate and not self.ssl:
            raise ValueError("ssl_certificate needs ssl: true")
        return self

    def route_props(self) -> dict[str, object]:
        """As a route's (and its container's) `proxy` prop: kamal-proxy settings left unset are not written, so a
        route recorded before they existed shows no change."""
        return self.model_dump(exclude={"run", *(k for k in PROXY_SETTINGS if getattr(self, k) is None)})


PROXY_SETTINGS = ("ssl_certificate", "ssl_private_key", "ssl_redirect", "forward_headers", "strip_path_prefix",
                  "buffer_requests", "buffer_responses", "buffer_memory", "max_request_body", "max_response_body",
                  "log_request_headers", "log_response_headers")


class Logging(Model):
    """Docker's log driver and its options (`docker run --log-driver/--log-opt`); no driver: the daemon's."""
    driver: str | None = None
    options: dict[str, str] = {}


class Boot(Model):
    limit: int | None = Field(default=None, ge=1)  # hosts changed at once; default: all
    wait: float = Field(default=0, ge=0, le=3600)  # seconds between one batch of hosts and the next


class Role(Model):
    hosts: tuple[HostName, ...] = Field(min_length=1)
    cmd: str | tuple[str, ...] | None = None
    env: Env = Env()
    ports: tuple[Annotated[str, AfterValidator(_check_port)], ...] = ()
    labels: dict[str, str] = {}
    volumes: tuple[Annotated[str, AfterValidator(_check_volume)], ...] = ()
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    proxy: Proxy | None = None
    options: RunOptions = {}
    logging: Logging | None = None  # merged over the top-level `logging`
    tags: dict[HostName, tuple[str, ...]] = {}  # a host's tags here: its env gets `env_tags` of each, in their order
    asset_path: str | None = Field(default=None, pattern=URL_PATH)  # over the top-level `asset_path`

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a host is listed twice")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        from .naming import DESTINATION, OWNER_LABEL, ROLE, SERVICE, VERSION
        reserved = {SERVICE, ROLE, DESTINATION, VERSION, OWNER_LABEL} & set(v)
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))} is set by the deployer and cannot be overridden")
        return v

    def published_ports(self) -> tuple[Port, ...]:
        return tuple(Port.parse(p) for p in self.ports)


FILE = re.compile(r"^(?P<local>[^:]+):(?P<remote>/[^:]*)(?::(?P<options>[^:]+))?$")
MOUNT_OPTIONS = re.compile(r"^(ro|rw|z|Z)(,(ro|rw|z|Z))*$")  # what a bind mount takes: read-only, SELinux labels


def _check_mount_options(options: str | None, what: str) -> None:
    if options and (not MOUNT_OPTIONS.match(options) or what == "file" and "rw" in options.split(",")):
        allowed = "ro, z or Z (a file is mounted read-only)" if what == "file" else "ro, rw, z or Z"
        raise ValueError(f"mount options {options!r}: use {allowed}, joined by ','")


def _check_file(text: str) -> str:
    m = FILE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a file mapping: use local/path:/path/in/container[:options]")
    _check_mount_options(m["options"], "file")
    return text


class AccessoryFile(Model):
    """A file copied to the host and mounted into the accessory (read-only), with its mode, owner and mount
    options (Kamal's `files` as a hash)."""
    local: str = Field(min_length=1)
    remote: str = Field(pattern=r"^/[^:]*$")
    mode: str | None = Field(default=None, pattern=r"^0?[0-7]{3}$")  # octal, as chmod takes it: 0600
    owner: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")  # as chown takes it
    options: str | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, v: str | None) -> str | None:
        _check_mount_options(v, "file")
        return v

    @classmethod
    def parse(cls, entry: "str | AccessoryFile") -> "AccessoryFile":
        if isinstance(entry, AccessoryFile):
            return entry
        m = FILE.match(entry)
        assert m is not None  # checked when the config was read
        return cls(local=m["local"], remote=m["remote"], options=m["options"])


DIRECTORY = re.compile(r"^(?P<name>[^:/][^:]*):(?P<remote>/[^:]*)(?::(?P<options>[^:]+))?$")


def _check_directory(text: str) -> str:
    m = DIRECTORY.match(text)
    if not m or {".", ".."} & set(m["name"].split("/")):
        raise ValueError(f"{text!r} is not a directory mapping: use NAME:/path/in/container[:options] (the host "
                         f"directory is kept under the destination's state directory)")
    _check_mount_options(m["options"], "directory")
    return text


class Accessory(Model):
    """A long-lived container next to the app (database, cache), one per destination, named and labeled with it."""
    image: str = Field(pattern=IMAGE_REF)
    host: HostName | None = None
    hosts: tuple[HostName, ...] = ()
    port: Annotated[str, AfterValidator(_check_port)] | None = None  # published port, as in roles' ports
    cmd: str | tuple[str, ...] | None = None
    env: Env = Env()
    volumes: tuple[Annotated[str, AfterValidator(_check_volume)], ...] = ()
    files: tuple[Annotated[str, AfterValidator(_check_file)] | AccessoryFile, ...] = ()
    directories: tuple[Annotated[str, AfterValidator(_check_directory)], ...] = ()
    labels: dict[str, str] = {}
    service: Name | None = None  # also reachable by this name on the destination's network (Kamal's `service`)
    options: RunOptions = {}
    proxy: Proxy | None = None  # served through kamal-proxy on its host names, as a role is
    network: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a Docker network to join too
    registry: Registry | None = None  # where `image` comes from, with its own login (not the stack's registry)

    @model_validator(mode="after")
    def _some_host(self) -> "Accessory":
        if not self.host and not self.hosts:
            raise ValueError("give host or hosts")
        return self

    def all_hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(((self.host,) if self.host else ()) + self.hosts))

    def container_port(self) -> int | None:
        return Port.parse(self.port).container_port if self.port else None


class Promote(Model):
    """Production takes what another stack (staging) built and tested: its image, by digest, relabeled."""
    from_stack: str = Field(pattern=STACK_NAME)  # a stack name of this project (or org/project/stack)


class Hooks(Model):
    """Kamal's hooks: executables named after the hook (`pre-deploy`, ...) in `path`, run on the deploying machine
    in `workdir` (both relative to the project). The hooks Kamal gives secrets to get every `shipyard:secrets` value;
    a Kamal app's get every secret of its secrets files too (`secrets`, set by `kamal`), as Kamal's hooks do."""
    path: str
    workdir: str = "."
    secrets: dict[str, str] = {}


class KamalApp(Model):
    """Set by `kamal`: the app is a Kamal app, so its containers see what Kamal's do - KAMAL_CONTAINER_NAME,
    KAMAL_VERSION, KAMAL_HOST and KAMAL_DESTINATION in a role's, KAMAL_HOST in an accessory's - and an accessory is
    also reachable by Kamal's name for it (`<service>-<accessory>`, or its `service`)."""
    destination: Name | None  # Kamal's destination (`kamal deploy -d`); null for none


class Takeover(Model):
    """Take over a running Kamal deployment of this service: its kamal-proxy routes (Kamal's route names) may be
    switched to this stack's containers, and Kamal's app containers of the service are then stopped, not removed."""
    destination: Name | None  # Kamal's destination (`kamal deploy -d`), null for none; labels and route names use it
