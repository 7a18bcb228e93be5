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
        self._name, self._cfg, self._owner, self._project_dir = name, cfg, owner, project_dir
        self.owner = owner  # the ownership label's value on every object of this destination
        self._net_name = naming.network_name(cfg.service, cfg.destination)

        image, version = self._image(promote)
        accessory_specs = plan.accessory_specs(cfg, owner)
        hosts = tuple(dict.fromkeys(cfg.all_hosts() + tuple(a.host for a in accessory_specs)))
        networks = {h: self._network(h) for h in hosts}
        volumes = {h: [self._volume(h, v) for v in names] for h, names in plan.destination_volumes(cfg).items()}
        accessories, accessory_resources = self._accessories(accessory_specs, networks, volumes)
        containers, urls = self._roles(image, version, networks, volumes, accessory_resources)

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

    def _target(self, host: str) -> dict[str, Any]:
        ssh = self._cfg.ssh
        return SSHTarget(host=host, port=ssh.port, user=ssh.user, keys=ssh.keys, known_hosts=ssh.known_hosts,
                         host_key_policy=ssh.host_key_policy).to_dict()

    def _common(self, host: str) -> dict[str, Any]:
        """What every resource of this destination on `host` carries."""
        return {"owner": self._owner, "destination": self._cfg.destination, "target": self._target(host)}

    def _child(self, **opts: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **opts)

    def _image(self, promote) -> tuple[Image, pulumi.Output[str]]:
        cfg, owner = self._cfg, self._owner
        props: dict[str, Any] = {
            "owner": owner, "destination": cfg.destination,
            "build_host": self._target(cfg.build_host()),
            "ship_to": [self._target(h) for h in cfg.all_hosts()],
            "registry_server": cfg.registry.server if cfg.registry else None,
            "registry_username": cfg.registry.username if cfg.registry else None,
            "registry_password": pulumi.Output.secret(cfg.registry.password)
            if cfg.registry and cfg.registry.password else None,
        }
        if promote is None:
            context = (self._project_dir / cfg.builder.context).resolve()
            content_hash = source.context_hash(context, cfg.builder.dockerfile)
            version: pulumi.Output[str] = pulumi.Output.from_input(
                cfg.version or source.git_version(context, content_hash))
            props.update({"context": str(context), "dockerfile": cfg.builder.dockerfile,
                          "context_hash": content_hash, "build_args": dict(cfg.builder.args),
                          "build_target": cfg.builder.target, "from_ref": None})
        else:
            version, from_ref = promote
            props.update({"context": None, "dockerfile": "Dockerfile", "context_hash": None,
                          "build_args": {}, "build_target": None, "from_ref": from_ref})
        spec = version.apply(lambda v: plan.image_spec(cfg, v, owner))
        props["tag"] = spec.apply(lambda s: s.tag)
        # the source label lets a rollback reuse a retained image only if it was built from the same source
        props["labels"] = pulumi.Output.all(spec, props["context_hash"], props["from_ref"]).apply(
            lambda a: {**a[0].labels, naming.SOURCE_LABEL: a[1] or a[2]})
        return Image(f"{self._name}-image", props, self._child()), version

    def _labels(self) -> dict[str, str]:
        cfg = self._cfg
        return {naming.SERVICE: cfg.service, naming.DESTINATION: cfg.destination, naming.OWNER_LABEL: self._owner}

    def _network(self, host: str) -> Network:
        """The destination's own network on a host."""
        return Network(f"{self._name}-network@{host}", {**self._common(host), "name": self._net_name,
                                                       "labels": self._labels()}, self._child())

    def _volume(self, host: str, volume: str) -> Volume:
        """A named volume; kept by `pulumi destroy` (retainOnDelete, shown in preview) unless the stack opts in."""
        return Volume(f"{self._name}-volume-{volume}@{host}",
                      {**self._common(host), "name": volume, "labels": self._labels()},
                      self._child(retain_on_delete=not self._cfg.delete_volumes_on_destroy))

    def _secret_env(self, names: tuple[str, ...]) -> pulumi.Output[dict[str, str]] | None:
        values = {k: self._cfg.secrets[k] for k in names}
        return pulumi.Output.secret(values) if values else None

    def _accessories(self, specs: list[plan.AccessorySpec], networks: dict[str, Network],
                     volumes: dict[str, list[Volume]]) -> tuple[dict[str, Any], list[pulumi.Resource]]:
        cfg = self._cfg
        outputs: dict[str, dict[str, Any]] = {}
        resources: list[pulumi.Resource] = []
        for acc in specs:
            res = Container(f"{self._name}-accessory-{acc.resource_name}", {
                **self._common(acc.host), "role": acc.role, "name": acc.name, "labels": acc.labels,
                "image": acc.image, "cmd": list(acc.cmd) if acc.cmd else None, "env": acc.env,
                "secret_env": self._secret_env(acc.secret_env),
                "ports": [p.model_dump() for p in acc.ports], "volumes": list(acc.volumes),
                "restart": "unless-stopped", "network": self._net_name, "extra_networks": None,
                "aliases": [acc.accessory], "env_file": acc.env_file,
                "state_dir": f"{naming.destination_dir(cfg.service, cfg.destination)}/{acc.accessory}",
                "files": [{"local": str((self._project_dir / local).resolve()), "target": remote,
                           "hash": source.file_hash(self._project_dir / local)} for local, remote in acc.files],
                "directories": [{"name": d, "target": remote} for d, remote in acc.directories],
                "delete_first": True, "retain": 1, "proxy": None, "running": True,
            }, self._child(depends_on=[networks[acc.host], *volumes.get(acc.host, [])]))
            resources.append(res)
            outputs.setdefault(acc.accessory, {})[acc.host] = {
                "hostname": acc.accessory, "network": self._net_name, "container": acc.name, "id": res.container_id,
                "port": acc.ports[0].container_port if acc.ports else None}
        return outputs, resources

    def _roles(self, image: Image, version: pulumi.Output[str], networks: dict[str, Network],
               volumes: dict[str, list[Volume]], accessories: list[pulumi.Resource]):
        """Every role's container on every host (and its proxy route), `boot.limit` hosts at a time. Resource
        names do not depend on the version, so a version change replaces the same resource; the container name,
        labels and env do."""
        cfg = self._cfg
        specs = version.apply(lambda v: plan.container_specs(cfg, v, self._owner))
        statics = plan.container_specs(cfg, "0", self._owner)
        proxy_images = {s.host: s.proxy.image for s in statics if s.proxy}  # one proxy per host
        proxies = {h: Proxy(f"{self._name}-proxy@{h}", {"target": self._target(h), "image": img}, self._child())
                   for h, img in proxy_images.items()}
        containers: dict[str, dict[str, dict[str, pulumi.Output[str]]]] = {}
        urls: list[str] = []
        previous_batch: list[pulumi.Resource] = []
        for batch in plan.boot_batches(cfg.all_hosts(), cfg.boot.limit):
            this_batch: list[pulumi.Resource] = []
            for i, static in enumerate(statics):
                if static.host not in batch:
                    continue
                spec = specs.apply(lambda s, i=i: s[i])
                after = [image, *previous_batch, networks[static.host], *volumes.get(static.host, []),
                         *accessories] + ([proxies[static.host]] if static.proxy else [])
                container = Container(f"{self._name}-{static.resource_name}", {
                    **self._common(static.host), "role": static.role,
                    "name": spec.apply(lambda s: s.name),
                    "labels": spec.apply(lambda s: s.labels),
                    "image": image.image_id,
                    "cmd": list(static.cmd) if static.cmd else None,
                    "env": spec.apply(lambda s: s.env),
                    "secret_env": self._secret_env(static.secret_env),
                    "ports": [p.model_dump() for p in static.ports],
                    "volumes": plan.volume_binds(static.volumes, cfg.service, cfg.destination),
                    "restart": static.restart,
                    "network": static.network or self._net_name,
                    "extra_networks": [self._net_name] if static.network else None,
                    "env_file": naming.env_file(cfg.service, cfg.destination, static.role),
                    "proxy": static.proxy.model_dump() if static.proxy else None,
                    "retain": cfg.retain_containers,
                    "running": True,
                }, self._child(depends_on=after))
                this_batch.append(container)
                if static.proxy:
                    this_batch.append(ProxyRoute(f"{self._name}-{static.role}-route@{static.host}", {
                        **self._common(static.host), "service": static.proxy_service,
                        "upstream": pulumi.Output.concat(container.name, ":", str(static.proxy.app_port)),
                        "proxy": static.proxy.model_dump(),
                    }, self._child(depends_on=[container, proxies[static.host]])))
                containers.setdefault(static.host, {})[static.role] = {"name": container.name,
                                                                       "id": container.container_id}
                urls += [u for u in plan.published_urls(static) if u not in urls]
            previous_batch = this_batch
        return containers, urls
