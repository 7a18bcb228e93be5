"""DestinationService: one service of one destination - its image and its containers on every host of every role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from . import naming, plan, source
from .config import Deploy
from .hosts import SSHTarget
from .providers import Container, Image, Network, Proxy, ProxyRoute, Volume


class DestinationService(pulumi.ComponentResource):
    image_id: pulumi.Output[str]
    repo_digest: pulumi.Output[Any]
    image_ref: pulumi.Output[str]
    tag: pulumi.Output[str]
    version: pulumi.Output[str]
    containers: pulumi.Output[dict[str, dict[str, dict[str, str]]]]
    urls: pulumi.Output[list[str]]
    accessories: pulumi.Output[dict[str, dict[str, dict[str, Any]]]]

    def __init__(self, name: str, cfg: Deploy, *, owner: str, project_dir: Path,
                 promote: tuple[pulumi.Output[str], pulumi.Output[str]] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        """`promote` is (version, image reference) of the stack this one promotes from; without it the image is
        built from `cfg.builder`'s context at `cfg.version` (default: the context's git commit)."""
        super().__init__("shipyard:deploy:DestinationService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def target(host: str) -> dict[str, Any]:
            return SSHTarget(host=host, port=cfg.ssh.port, user=cfg.ssh.user, keys=cfg.ssh.keys,
                             known_hosts=cfg.ssh.known_hosts, host_key_policy=cfg.ssh.host_key_policy).to_dict()

        image_props: dict[str, Any] = {
            "owner": owner, "destination": cfg.destination,
            "build_host": target(cfg.build_host()),
            "ship_to": [target(h) for h in cfg.all_hosts()],
            "registry_server": cfg.registry.server if cfg.registry else None,
            "registry_username": cfg.registry.username if cfg.registry else None,
            "registry_password": pulumi.Output.secret(cfg.registry.password)
            if cfg.registry and cfg.registry.password else None,
        }
        if promote is None:
            context = (project_dir / cfg.builder.context).resolve()
            content_hash = source.context_hash(context, cfg.builder.dockerfile)
            version: pulumi.Output[str] = pulumi.Output.from_input(
                cfg.version or source.git_version(context, content_hash))
            image_props.update({"context": str(context), "dockerfile": cfg.builder.dockerfile,
                                "context_hash": content_hash, "build_args": dict(cfg.builder.args),
                                "build_target": cfg.builder.target, "from_ref": None})
        else:
            version, from_ref = promote
            image_props.update({"context": None, "dockerfile": "Dockerfile", "context_hash": None,
                                "build_args": {}, "build_target": None, "from_ref": from_ref})

        ispec = version.apply(lambda v: plan.image_spec(cfg, v, owner))
        image_props["tag"] = ispec.apply(lambda s: s.tag)
        # the source label lets a rollback reuse a retained image only if it was built from the same source
        image_props["labels"] = pulumi.Output.all(ispec, image_props["context_hash"], image_props["from_ref"]).apply(
            lambda a: {**a[0].labels, naming.SOURCE_LABEL: a[1] or a[2]})
        image = Image(f"{name}-image", image_props, child)

        # Resource names do not depend on the version (a version change replaces the same resource); the
        # container name, labels and image do.
        specs = version.apply(lambda v: plan.container_specs(cfg, v, owner))
        statics = plan.container_specs(cfg, "0", owner)
        proxies: dict[str, Proxy] = {}
        for spec in statics:
            if spec.proxy and spec.host not in proxies:
                proxies[spec.host] = Proxy(f"{name}-proxy@{spec.host}", {
                    "target": target(spec.host), "image": spec.proxy.image}, child)
        # The destination's own network and named volumes on each host.
        net_name = naming.network_name(cfg.service, cfg.destination)
        base_labels = {naming.SERVICE: cfg.service, naming.DESTINATION: cfg.destination, naming.OWNER_LABEL: owner}
        accessory_statics = plan.accessory_specs(cfg, owner)
        every_host = tuple(dict.fromkeys(cfg.all_hosts() + tuple(a.host for a in accessory_statics)))
        networks = {h: Network(f"{name}-network@{h}", {"owner": owner, "destination": cfg.destination,
                                                       "target": target(h), "name": net_name,
                                                       "labels": base_labels}, child) for h in every_host}
        volumes: dict[str, list[Volume]] = {}
        for h, names in plan.destination_volumes(cfg).items():
            volumes[h] = [Volume(f"{name}-volume-{v}@{h}", {"owner": owner, "destination": cfg.destination,
                                                            "target": target(h), "name": v, "labels": base_labels},
                                 pulumi.ResourceOptions(parent=self,
                                                        retain_on_delete=not cfg.delete_volumes_on_destroy))
                          for v in names]

        accessories: dict[str, dict[str, Any]] = {}
        accessory_resources: list[pulumi.Resource] = []
        for acc in accessory_statics:
            secret_env = {k: cfg.secrets[k] for k in acc.secret_env}
            res = Container(f"{name}-accessory-{acc.resource_name}", {
                "owner": owner, "destination": cfg.destination, "role": acc.role, "target": target(acc.host),
                "name": acc.name, "labels": acc.labels, "image": acc.image,
                "cmd": list(acc.cmd) if acc.cmd else None, "env": acc.env,
                "secret_env": pulumi.Output.secret(secret_env) if secret_env else None,
                "ports": [p.model_dump() for p in acc.ports], "volumes": list(acc.volumes),
                "restart": "unless-stopped", "network": net_name, "extra_networks": None, "aliases": [acc.accessory],
                "env_file": acc.env_file, "state_dir": f"{naming.destination_dir(cfg.service, cfg.destination)}/"
                                                      f"{acc.accessory}",
                "files": [{"local": str((project_dir / local).resolve()), "target": remote,
                           "hash": source.file_hash(project_dir / local)} for local, remote in acc.files],
                "directories": [{"name": d, "target": remote} for d, remote in acc.directories],
                "delete_first": True, "retain": 1, "proxy": None, "running": True,
            }, pulumi.ResourceOptions(parent=self, depends_on=[networks[acc.host], *volumes.get(acc.host, [])]))
            accessory_resources.append(res)
            port = acc.ports[0].container_port if acc.ports else None
            accessories.setdefault(acc.accessory, {})[acc.host] = {
                "hostname": acc.accessory, "network": net_name, "port": port, "container": acc.name,
                "id": res.container_id}

        containers: dict[str, dict[str, dict[str, pulumi.Output[str]]]] = {}
        urls: list[str] = []
        previous_batch: list[pulumi.Resource] = []
        for batch in plan.boot_batches(cfg.all_hosts(), cfg.boot.limit):
            this_batch: list[pulumi.Resource] = []
            for i, static in enumerate(statics):
                if static.host not in batch:
                    continue
                spec = specs.apply(lambda s, i=i: s[i])
                secret_env = {k: cfg.secrets[k] for k in static.secret_env}
                after = [image, *previous_batch, networks[static.host], *volumes.get(static.host, []),
                         *accessory_resources] + ([proxies[static.host]] if static.proxy else [])
                container = Container(f"{name}-{static.resource_name}", {
                    "owner": owner, "destination": cfg.destination, "role": static.role,
                    "target": target(static.host),
                    "name": spec.apply(lambda s: s.name),
                    "labels": spec.apply(lambda s: s.labels),
                    "image": image.image_id,
                    "cmd": list(static.cmd) if static.cmd else None,
                    "env": spec.apply(lambda s: s.env),
                    "secret_env": pulumi.Output.secret(secret_env) if secret_env else None,
                    "ports": [p.model_dump() for p in static.ports],
                    "volumes": plan.volume_binds(static.volumes, cfg.service, cfg.destination),
                    "restart": static.restart,
                    "network": static.network or net_name,
                    "extra_networks": [net_name] if static.network else None,
                    "env_file": naming.env_file(cfg.service, cfg.destination, static.role),
                    "proxy": static.proxy.model_dump() if static.proxy else None,
                    "retain": cfg.retain_containers,
                    "running": True,
                }, pulumi.ResourceOptions(parent=self, depends_on=after))
                this_batch.append(container)
                if static.proxy:
                    this_batch.append(ProxyRoute(f"{name}-{static.role}-route@{static.host}", {
                        "owner": owner, "destination": cfg.destination, "target": target(static.host),
                        "service": static.proxy_service,
                        "upstream": pulumi.Output.concat(container.name, ":", str(static.proxy.app_port)),
                        "proxy": static.proxy.model_dump(),
                    }, pulumi.ResourceOptions(parent=self, depends_on=[container, proxies[static.host]])))
                containers.setdefault(static.host, {})[static.role] = {"name": container.name,
                                                                       "id": container.container_id}
                urls += [u for u in plan.published_urls(static) if u not in urls]
            previous_batch = this_batch

        self.image_id = image.image_id
        self.repo_digest = image.repo_digest
        self.image_ref = pulumi.Output.all(image.repo_digest, image.image_id).apply(lambda a: a[0] or a[1])
        self.tag = image.tag
        self.version = version
        self.containers = pulumi.Output.from_input(containers)
        self.urls = pulumi.Output.from_input(urls)
        self.accessories = pulumi.Output.from_input(accessories)
        self.register_outputs({"image_id": self.image_id, "repo_digest": self.repo_digest, "tag": self.tag,
                               "version": self.version, "containers": self.containers, "urls": self.urls,
                               "accessories": self.accessories})
