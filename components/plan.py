"""Pure planning: one validated config (and the version) in, one `DestinationPlan` out - the image, the networks,
volumes, accessories and proxies per host, and the containers of every role in boot order. The component walks it
once to declare resources.

No pulumi, docker or paramiko here; everything is plain data, tested with data (tests/unit/test_plan.py and the
cases in tests/unit/plan_cases/).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import naming
from .config import Deploy, Port, Proxy
from .configtypes import AccessoryFile
from .payloads import kamal_env, named_volumes, volume_binds


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
    volumes: tuple[str, ...]  # docker binds, named volumes already carrying the destination
    restart: str
    proxy: Proxy | None
    proxy_service: str | None  # the route's name in kamal-proxy
    options: Mapping[str, Any] = field(default_factory=dict)  # `docker run` flags (payloads.run_options)
    logging: Mapping[str, Any] | None = None  # {driver, options}; None: the daemon's default
    assets: Mapping[str, str] | None = None  # {path: in the container, dir: on the host, under the state dir}

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
    files: tuple[AccessoryFile, ...]  # local path, path in the container, mode, owner, mount options
    # (directory name under the accessory's state dir, path in the container, mount options)
    directories: tuple[tuple[str, str, str | None], ...]
    state_dir: str  # on the host, relative to the SSH user's home
    aliases: tuple[str, ...]  # its names on the destination's network
    options: Mapping[str, Any] = field(default_factory=dict)
    logging: Mapping[str, Any] | None = None
    proxy: Proxy | None = None  # served through kamal-proxy (its route: `proxy_service`)
    proxy_service: str | None = None
    networks: tuple[str, ...] = ()  # joined besides the destination's


@dataclass(frozen=True)
class DestinationPlan:
    """Everything one destination puts on its hosts, for one version."""
    service: str
    destination: str
    version: str
    image: ImageSpec | None  # None: an app of accessories only builds no image
    network: str  # the destination's own network, on every host in `hosts`
    hosts: tuple[str, ...]  # every host with anything of this destination
    volumes: dict[str, tuple[str, ...]]  # host -> named volumes
    accessories: tuple[AccessorySpec, ...]
    proxies: dict[str, str]  # host -> kamal-proxy image, for hosts with a proxied role
    batches: tuple[tuple[ContainerSpec, ...], ...]  # containers in boot order, `boot.limit` hosts at a time
    urls: tuple[str, ...]
    proxy_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> its proxy.run, where set

    @property
    def containers(self) -> tuple[ContainerSpec, ...]:
        return tuple(c for batch in self.batches for c in batch)


def destination_plan(cfg: Deploy, owner: str, version: str) -> DestinationPlan:
    containers = container_specs(cfg, version, owner)
    accessories = accessory_specs(cfg, owner)
    batches = tuple(tuple(c for c in containers if c.host in hosts)
                    for hosts in boot_batches(cfg.all_hosts(), cfg.boot.limit))
    urls: list[str] = []
    for c in containers:
        urls += [u for u in published_urls(c) if u not in urls]
    return DestinationPlan(
        service=cfg.service, destination=cfg.destination, version=version,
        image=image_spec(cfg, version, owner) if cfg.servers else None,
        network=naming.network_name(cfg.service, cfg.destination),
        hosts=tuple(dict.fromkeys(cfg.all_hosts() + tuple(a.host for a in accessories))),
        volumes=destination_volumes(cfg), accessories=tuple(accessories),
        proxies={**{a.host: a.proxy.image for a in accessories if a.proxy},
                 **{c.host: c.proxy.image for c in containers if c.proxy}},
        proxy_runs={c.host: c.proxy.run.model_dump() for c in containers if c.proxy and c.proxy.run},
        batches=batches, urls=tuple(urls))


def accessory_specs(cfg: Deploy, owner: str) -> list[AccessorySpec]:
    specs = []
    for name, acc in cfg.accessories.items():
        role = naming.accessory_role(name)
        cmd = ("sh", "-c", acc.cmd) if isinstance(acc.cmd, str) else acc.cmd
        # Kamal's name for it, which a Kamal app's config uses to reach it (DB_HOST: myapp-db)
        kamal_names = (acc.service or f"{cfg.service}-{name}",) if cfg.kamal_app else ()
        for host in acc.all_hosts():
            specs.append(AccessorySpec(
                resource_name=f"{name}@{host}", host=host, accessory=name, role=role,
                name=naming.accessory_name(cfg.service, cfg.destination, name),
                labels={**acc.labels, **naming.image_labels(cfg.service, cfg.destination, "-", owner),
                        naming.ROLE: role, "accessory": name},
                image=f"{acc.registry.server}/{acc.image}" if acc.registry else acc.image,
                cmd=tuple(cmd) if cmd else None,
                env={**kamal_env(acc.env.clear), "KAMAL_HOST": host} if cfg.kamal_app else dict(acc.env.clear),
                secret_env=acc.env.secret,
                ports=(Port.parse(acc.port),) if acc.port else (),
                volumes=tuple(volume_binds(acc.volumes, cfg.service, cfg.destination)),
                files=tuple(AccessoryFile.parse(f) for f in acc.files),
                directories=tuple(tuple((d.split(":") + [None])[:3]) for d in acc.directories),
                state_dir=f"{naming.destination_dir(cfg.service, cfg.destination)}/{name}",
                aliases=tuple(dict.fromkeys((name, *kamal_names))),
                options=dict(acc.options), logging=cfg.container_logging(None),
                networks=tuple(dict.fromkeys([*([naming.PROXY_NETWORK] if acc.proxy else []),
                                              *([acc.network] if acc.network else [])])),
                proxy=kamal_proxy(acc.proxy) if cfg.kamal_app else acc.proxy,
                proxy_service=naming.proxy_service(cfg.service, name, cfg.destination) if acc.proxy else None,
            ))
    return specs


def destination_volumes(cfg: Deploy) -> dict[str, tuple[str, ...]]:
    """Named volumes per host, from roles and accessories."""
    out: dict[str, list[str]] = {}
    for role in cfg.servers.values():
        for host in role.hosts:
            out.setdefault(host, []).extend(named_volumes(role.volumes, cfg.service, cfg.destination))
    for acc in cfg.accessories.values():
        for host in acc.all_hosts():
            out.setdefault(host, []).extend(named_volumes(acc.volumes, cfg.service, cfg.destination))
    return {h: tuple(dict.fromkeys(v)) for h, v in out.items() if v}


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
        cmd = ("sh", "-c", role.cmd) if isinstance(role.cmd, str) else role.cmd
        proxy = kamal_proxy(cfg.role_proxy(role_name)) if cfg.kamal_app else cfg.role_proxy(role_name)
        for host in role.hosts:
            env = cfg.host_env(role_name, host)
            specs.append(ContainerSpec(
                resource_name=f"{role_name}@{host}",
                host=host,
                role=role_name,
                name=naming.container_name(cfg.service, role_name, cfg.destination, version),
                labels={**role.labels,
                        **naming.container_labels(cfg.service, role_name, cfg.destination, version, owner)},
                cmd=tuple(cmd) if cmd else None,
                env={**(kamal_env(env.clear) if cfg.kamal_app else env.clear),
                     **runtime_env(cfg, role_name, version, host)},
                secret_env=env.secret,
                ports=role.published_ports(),
                volumes=tuple(volume_binds(role.volumes, cfg.service, cfg.destination)),
                restart=role.restart,
                proxy=proxy,
                proxy_service=cfg.route_name(role_name) if proxy else None,
                options=dict(role.options), logging=cfg.container_logging(role_name),
                assets={"path": asset_path, "dir": f"{naming.destination_dir(cfg.service, cfg.destination)}/assets"}
                if (asset_path := cfg.role_asset_path(role_name)) else None,
            ))
    return specs


def build_fingerprint(dockerfile: str | None, args: Mapping[str, str] | None, target: str | None) -> str:
    """How an image is built, apart from its sources: the Dockerfile's name, the build args and the target (for a
    promotion, the promoted image reference). Two builds of one version must agree on it."""
    text = json.dumps({"dockerfile": dockerfile, "args": dict(sorted((args or {}).items())), "target": target},
                      sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def built_image_labels(labels: Mapping[str, str], context_hash: str | None, from_ref: str | None,
                       dockerfile: str | None, args: Mapping[str, str] | None, target: str | None) -> dict[str, str]:
    """An image's labels: the destination's, what it was built from (context hash, or the promoted image) and how
    (see `build_fingerprint`)."""
    build = build_fingerprint(dockerfile, args, target) if context_hash else build_fingerprint(from_ref, {}, None)
    return {**labels, naming.SOURCE_LABEL: context_hash or from_ref or "", naming.BUILD_LABEL: build}


# what Kamal asks of kamal-proxy for a route where its config says nothing
KAMAL_PROXY_DEFAULTS = {"buffer_requests": True, "buffer_responses": True,
                        "log_request_headers": ("Cache-Control", "Last-Modified", "User-Agent")}


def kamal_proxy(proxy: Proxy | None) -> Proxy | None:
    """A Kamal app's route as Kamal deploys it: Kamal's settings where the config leaves them unset."""
    if proxy is None:
        return None
    return proxy.model_copy(update={k: v for k, v in KAMAL_PROXY_DEFAULTS.items() if getattr(proxy, k) is None})


def runtime_env(cfg: Deploy, role: str, version: str, host: str) -> dict[str, str]:
    """What every container is told about itself; a Kamal app's also what Kamal tells its containers."""
    name = naming.container_name(cfg.service, role, cfg.destination, version)
    env = {"SHIPYARD_SERVICE": cfg.service, "SHIPYARD_ROLE": role, "SHIPYARD_DESTINATION": cfg.destination,
           "SHIPYARD_VERSION": version, "SHIPYARD_HOST": host, "SHIPYARD_CONTAINER_NAME": name}
    if cfg.kamal_app:
        env.update(KAMAL_CONTAINER_NAME=name, KAMAL_VERSION=version, KAMAL_HOST=host)
        if cfg.kamal_app.destination:
            env["KAMAL_DESTINATION"] = cfg.kamal_app.destination
    return env


def published_urls(spec: ContainerSpec) -> list[str]:
    if spec.proxy:
        scheme = "https" if spec.proxy.ssl else "http"
        return [f"{scheme}://{h}{prefix}" for h in spec.proxy.hosts or (spec.host,)
                for prefix in spec.proxy.path_prefixes or ("",)]
    return [f"http://{p.host_ip or spec.host}:{p.host_port}" for p in spec.ports
            if p.host_port and p.protocol == "tcp"]


def boot_batches(hosts: tuple[str, ...], limit: int | None) -> list[tuple[str, ...]]:
    """Hosts in the order they change: `limit` at a time (Kamal's boot.limit); all at once without a limit."""
    if not limit:
        return [hosts] if hosts else []
    return [hosts[i:i + limit] for i in range(0, len(hosts), limit)]


def engine_parallel(host_count: int, cpus: int) -> int:
    """How many resource operations `pulumi up` should run at once. The engine's default, 4 per CPU of the
    deploying machine, suits providers that compute; ours wait on hosts, and a host's changes go one after another
    (container, route, the old container), so every host gets two, whatever the deploying machine."""
    return max(4 * cpus, 2 * host_count + 2)
