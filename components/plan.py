"""Pure planning: config -> image and container specs, and desired-vs-recorded diffs.

No pulumi, docker or paramiko here; everything is plain data, tested with data (tests/unit/test_plan.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import naming
from .config import Deploy, Port, Proxy, VOLUME

# -- diffs ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    changed: tuple[str, ...]
    replaces: tuple[str, ...]

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)


def diff(olds: Mapping[str, Any], news: Mapping[str, Any], *, replace: Iterable[str], update: Iterable[str]) -> Diff:
    """Compare the recorded inputs with the desired ones, key by key. Keys outside `replace` and `update` (computed
    outputs, the serialized provider) never count. A key missing on one side counts as changed."""
    replace, update = tuple(replace), tuple(update)
    changed = tuple(k for k in replace + update if _norm(olds.get(k)) != _norm(news.get(k)))
    return Diff(changed=changed, replaces=tuple(k for k in changed if k in replace))


def _norm(value: Any) -> Any:
    """Lists and tuples compare equal; dict order never matters; empty containers equal None; an ownership label
    written with the Pulumi organization (earlier releases) equals the same one without it."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value) or None
    if isinstance(value, Mapping):
        return tuple(sorted((k, _owner_norm(v) if k == naming.OWNER_LABEL else _norm(v))
                            for k, v in value.items())) or None
    return value


def _owner_norm(value: Any) -> Any:
    return "/".join(value.split("/")[-2:]) if isinstance(value, str) else value


# -- specs ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    repository: str
    tag: str
    labels: dict[str, str]
    build_host: str
    hosts: tuple[str, ...]  # every host that runs a container of this destination


@dataclass(frozen=True)
class ContainerSpec:
    resource_name: str  # stable across versions, so a version change replaces the same resource
    host: str
    role: str
    name: str
    labels: dict[str, str]
    cmd: tuple[str, ...] | None
    env: dict[str, str]
    secret_env: tuple[str, ...]  # names; values come from config secrets
    ports: tuple[Port, ...]
    volumes: tuple[str, ...]
    restart: str
    proxy: Proxy | None
    proxy_service: str | None  # the route's name in kamal-proxy

    @property
    def network(self) -> str | None:
        return naming.PROXY_NETWORK if self.proxy else None


@dataclass(frozen=True)
class AccessorySpec:
    resource_name: str
    host: str
    accessory: str
    role: str  # the role label: naming.accessory_role
    name: str
    labels: dict[str, str]
    image: str
    cmd: tuple[str, ...] | None
    env: dict[str, str]
    secret_env: tuple[str, ...]
    ports: tuple[Port, ...]
    volumes: tuple[str, ...]  # docker binds, named volumes already carrying the destination
    files: tuple[tuple[str, str], ...]  # (local path, path in the container)
    directories: tuple[tuple[str, str], ...]  # (directory name under the accessory's state dir, path in container)


def accessory_specs(cfg: Deploy, owner: str) -> list[AccessorySpec]:
    specs = []
    for name, acc in cfg.accessories.items():
        role = naming.accessory_role(name)
        cmd = ("sh", "-c", acc.cmd) if isinstance(acc.cmd, str) else acc.cmd
        for host in acc.all_hosts():
            specs.append(AccessorySpec(
                resource_name=f"{name}@{host}", host=host, accessory=name, role=role,
                name=naming.accessory_name(cfg.service, cfg.destination, name),
                labels={**acc.labels, **naming.image_labels(cfg.service, cfg.destination, "-", owner),
                        naming.ROLE: role, "accessory": name},
                image=acc.image, cmd=tuple(cmd) if cmd else None,
                env=dict(acc.env.clear), secret_env=acc.env.secret,
                ports=(Port.parse(acc.port),) if acc.port else (),
                volumes=tuple(volume_binds(acc.volumes, cfg.service, cfg.destination)),
                files=tuple((f.split(":")[0], f.split(":")[1]) for f in acc.files),
                directories=tuple((d.split(":")[0], d.split(":")[1]) for d in acc.directories),
            ))
    return specs


def destination_volumes(cfg: Deploy) -> dict[str, list[str]]:
    """Named volumes per host, from roles and accessories."""
    out: dict[str, list[str]] = {}
    for role in cfg.servers.values():
        for host in role.hosts:
            out.setdefault(host, []).extend(named_volumes(role.volumes, cfg.service, cfg.destination))
    for acc in cfg.accessories.values():
        for host in acc.all_hosts():
            out.setdefault(host, []).extend(named_volumes(acc.volumes, cfg.service, cfg.destination))
    return {h: list(dict.fromkeys(v)) for h, v in out.items() if v}


def image_spec(cfg: Deploy, version: str, owner: str) -> ImageSpec:
    repository = naming.image_repository(cfg.image, cfg.registry.server if cfg.registry else None)
    return ImageSpec(
        repository=repository,
        tag=naming.image_tag(repository, version, cfg.destination),
        labels=naming.image_labels(cfg.service, cfg.destination, version, owner),
        build_host=cfg.build_host(),
        hosts=cfg.all_hosts(),
    )


def container_specs(cfg: Deploy, version: str, owner: str) -> list[ContainerSpec]:
    specs = []
    for role_name, role in cfg.servers.items():
        env = cfg.role_env(role_name)
        cmd = ("sh", "-c", role.cmd) if isinstance(role.cmd, str) else role.cmd
        for host in role.hosts:
            specs.append(ContainerSpec(
                resource_name=f"{role_name}@{host}",
                host=host,
                role=role_name,
                name=naming.container_name(cfg.service, role_name, cfg.destination, version),
                labels={**role.labels,
                        **naming.container_labels(cfg.service, role_name, cfg.destination, version, owner)},
                cmd=tuple(cmd) if cmd else None,
                env={**env.clear, **runtime_env(cfg.service, role_name, cfg.destination, version, host)},
                secret_env=env.secret,
                ports=role.published_ports(),
                volumes=role.volumes,
                restart=role.restart,
                proxy=cfg.role_proxy(role_name),
                proxy_service=naming.proxy_service(cfg.service, role_name, cfg.destination)
                if cfg.role_proxy(role_name) else None,
            ))
    return specs


def build_fingerprint(dockerfile: str | None, args: Mapping[str, str] | None, target: str | None) -> str:
    """How an image is built, apart from its sources: the Dockerfile's name, the build args and the target (for a
    promotion, the promoted image reference). Two builds of one version must agree on it."""
    text = json.dumps({"dockerfile": dockerfile, "args": dict(sorted((args or {}).items())), "target": target},
                      sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def runtime_env(service: str, role: str, destination: str, version: str, host: str) -> dict[str, str]:
    """What every container is told about itself, like Kamal's KAMAL_* variables."""
    return {"SHIPYARD_SERVICE": service, "SHIPYARD_ROLE": role, "SHIPYARD_DESTINATION": destination,
            "SHIPYARD_VERSION": version, "SHIPYARD_HOST": host,
            "SHIPYARD_CONTAINER_NAME": naming.container_name(service, role, destination, version)}


def published_urls(spec: ContainerSpec) -> list[str]:
    if spec.proxy:
        scheme = "https" if spec.proxy.ssl else "http"
        prefix = spec.proxy.path_prefix or ""
        return [f"{scheme}://{h}{prefix}" for h in spec.proxy.hosts] or [f"{scheme}://{spec.host}{prefix}"]
    return [f"http://{p.host_ip or spec.host}:{p.host_port}" for p in spec.ports
            if p.host_port and p.protocol == "tcp"]


def boot_batches(hosts: tuple[str, ...], limit: int | None) -> list[tuple[str, ...]]:
    """Hosts in the order they change: `limit` at a time (Kamal's boot.limit); all at once without a limit."""
    if not limit:
        return [hosts] if hosts else []
    return [hosts[i:i + limit] for i in range(0, len(hosts), limit)]


def proxy_deploy_argv(service: str, target: str, proxy: Mapping[str, Any]) -> list[str]:
    """`kamal-proxy deploy` for one destination's route: health-checks `target`, switches, drains the old one."""
    hc = proxy["healthcheck"]
    argv = ["kamal-proxy", "deploy", service, "--target", target,
            "--health-check-path", hc["path"],
            "--health-check-interval", _duration(hc["interval"]),
            "--health-check-timeout", _duration(hc["timeout"]),
            "--deploy-timeout", _duration(proxy["deploy_timeout"]),
            "--drain-timeout", _duration(proxy["drain_timeout"]),
            "--target-timeout", _duration(proxy["response_timeout"])]
    for h in proxy.get("hosts") or []:
        argv += ["--host", h]
    if proxy.get("path_prefix"):
        argv += ["--path-prefix", proxy["path_prefix"]]
    if proxy.get("ssl"):
        argv += ["--tls"]
    return argv


def _duration(seconds: float) -> str:
    return f"{int(round(float(seconds) * 1000))}ms"


# -- docker API payloads ----------------------------------------------------------------------------------------------


def port_bindings(ports: Iterable[Mapping[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    """(exposed ports, port bindings) for docker-py's create_container / create_host_config."""
    exposed: list[Any] = []
    bindings: dict[str, Any] = {}
    for p in ports:
        # numbers arrive as floats after a trip through Pulumi's property serialization
        container_port = int(p["container_port"])
        host_port = int(p["host_port"]) if p.get("host_port") is not None else None
        key = f"{container_port}/{p['protocol']}"
        exposed.append((container_port, p["protocol"]))
        binding = (p["host_ip"], host_port) if p.get("host_ip") else host_port
        bindings.setdefault(key, []).append(binding)
    return exposed, bindings


def volume_binds(volumes: Iterable[str], service: str, destination: str) -> list[str]:
    """Docker binds; a named volume gets the destination's name (`data` -> `<service>-<destination>-data`)."""
    binds = []
    for text in volumes:
        m = VOLUME.match(text)
        assert m, text  # validated in config
        source = m["source"] if m["source"].startswith("/") else naming.volume_name(service, destination, m["source"])
        binds.append(f"{source}:{m['target']}:{m['mode'] or 'rw'}")
    return binds


def named_volumes(volumes: Iterable[str], service: str, destination: str) -> list[str]:
    return [b.split(":")[0] for b in volume_binds(volumes, service, destination) if not b.startswith("/")]


def restart_policy(name: str) -> dict[str, Any]:
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": 0}


def env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items())]
