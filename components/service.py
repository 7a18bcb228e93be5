"""DestinationService: one service of one destination - its image, networks, volumes, accessories, proxies,
containers and routes on every host - declared in one walk over the destination's plan (`plan.destination_plan`)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Callable

import pulumi

from . import naming, payloads, plan, source
from .config import Deploy
from .configtypes import AccessoryFile
from .ssh import target_of
from .kamal.erb import render_ruby
from .resources import HOOKS, PACKAGE, Container, Hook, Image, Network, Proxy, ProxyRoute, Rollout, Volume


def hooks_of(cfg: Deploy, project_dir: Path) -> dict[str, Path]:
    """The stack's hooks by name: the executables in its hooks directory named after one of Kamal's hooks."""
    if cfg.hooks is None:
        return {}
    directory = (project_dir / cfg.hooks.path).resolve()
    return {h: directory / h for h in HOOKS if (directory / h).is_file()}


def _digest(*parts: Any) -> str:
    """What a hook stands by, as a digest: it runs again when this changes."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _settled(value: Any, done: list[pulumi.Resource]) -> pulumi.Output[Any]:
    """`value` once every resource of `done` has been made or updated (their IDs come only then): never, in a run
    where one of them fails."""
    return pulumi.Output.all(value, *(r.id for r in done)).apply(lambda v: v[0])


def plugin_provider(name: str, parent: pulumi.Resource) -> pulumi.ProviderResource:
    """The destination's own instance of the `shipyard` plugin. Explicit, not the package's default provider, which
    would take the stack's `shipyard:*` config (this project's own namespace) as its settings. It continues the
    Python dynamic-resource provider of stacks deployed before the plugin (an alias): nothing they run is replaced."""
    dynamic = f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::pulumi:providers:pulumi-python::default"
    return pulumi.ProviderResource(PACKAGE, f"{name}-plugin", {}, pulumi.ResourceOptions(parent=parent,
                                                                                         aliases=[dynamic]))


class DestinationService(pulumi.ComponentResource):
    # the image and its version; None for an app of accessories only
    image_id: pulumi.Output[str] | None
    repo_digest: pulumi.Output[Any] | None
    image_ref: pulumi.Output[str] | None
    tag: pulumi.Output[str] | None
    version: pulumi.Output[str] | None
    containers: pulumi.Output[dict[str, dict[str, dict[str, str]]]]
    urls: pulumi.Output[list[str]]
    accessories: pulumi.Output[dict[str, dict[str, dict[str, Any]]]]

    def __init__(self, name: str, cfg: Deploy, *, owner: str, project_dir: Path,
                 promote: dict[str, Any] | None = None,
                 opts: pulumi.ResourceOptions | None = None, later: bool = False, command: str = "deploy"):
        """`promote` holds the outputs of the stack this one promotes from (`stack`, and as Outputs `version`,
        `image_ref`, `service`, `tag`); without it the image is built from `cfg.builder`'s context at `cfg.version`
        (default: the context's git commit). `later`: only the component and its plugin now, the rest at
        `declare()`. `command`: what the hooks are told (`KAMAL_COMMAND`): `deploy`, or `rollback` - which builds
        nothing, so it has no `pre-build`, as in Kamal."""
        super().__init__("shipyard:deploy:DestinationService", name, None, opts)
        self._name, self._cfg, self._owner, self._project_dir = name, cfg, owner, project_dir
        self._promote = promote
        self._command = command
        self.owner = owner  # the ownership label's value on every object of this destination
        self.cfg = cfg
        self._after: list[pulumi.Resource] = []  # the hooks every resource declared from here on waits for
        self._plugin = plugin_provider(name, self)
        if not later:
            self.declare()

    def declare(self) -> None:
        """Every resource of the destination, one walk over its plan."""
        name, cfg, owner, project_dir, promote = self._name, self._cfg, self._owner, self._project_dir, self._promote
        command = self._command
        # an app of accessories only (no role) builds no image and has no version of its own
        build = self._build_inputs(promote) if cfg.servers else None
        version: pulumi.Output[str] = build.pop("version") if build else pulumi.Output.from_input("-")
        # the plan for this version (an Output while a promoted version is still unknown), and its shape, which
        # does not depend on the version: resource names never change with it, so a version change replaces
        plans = version.apply(lambda v: plan.destination_plan(cfg, owner, v))
        shape = plan.destination_plan(cfg, owner, "-")

        # Kamal's hooks, where the stack has them: every resource of the destination waits for `self._after`
        self._hooks = hooks_of(cfg, project_dir)
        deploy_trigger = plans.apply(lambda p: _digest(p, sorted(cfg.secrets.items())))
        pre_connect = self._hook("pre-connect", deploy_trigger, shape.hosts, version, secrets=True,
                                 lock=False)  # Kamal's runs before its lock is taken
        self._after = list(pre_connect)
        if build and shape.image and "promote" not in build and command != "rollback":  # (they build nothing)
            self._after += self._hook("pre-build", pulumi.Output.all(version, build["context_hash"]).apply(_digest),
                                      shape.hosts, version, lock=False)  # KAMAL_HOSTS: all, as in Kamal
        image = self._image(shape, plans, build) if build else None
        self._after = [*pre_connect, *self._hook("pre-deploy", deploy_trigger, shape.hosts, version,
                                                 depends=[image] if image else [], secrets=True)]
        proxy_hosts = tuple(shape.proxies)
        proxy_trigger = _digest(sorted(shape.proxies.items()), sorted(shape.proxy_runs.items()))
        self._after += self._hook("pre-proxy-reboot", proxy_trigger, proxy_hosts, version) if proxy_hosts else []
        networks = {h: self._network(shape, h) for h in shape.hosts}
        volumes = {h: [self._volume(h, v) for v in names] for h, names in shape.volumes.items()}
        lock = {"stack": owner, "timeout": cfg.lock_timeout}
        # each after its host's network: the engine's destroy goes in waves from the resources nothing else depends
        # on, so kamal-proxy is removed beside the containers (its route is gone by then), not after them
        proxies = {h: Proxy(f"{name}-proxy@{h}", {"target": self._target(h), "image": img, "lock": lock,
                                                  **({"run": shape.proxy_runs[h]} if h in shape.proxy_runs else {})},
                            self._child(depends_on=[networks[h]])) for h, img in shape.proxies.items()}
        if proxy_hosts:
            self._after += self._hook("post-proxy-reboot", proxy_trigger, proxy_hosts, version,
                                      depends=list(proxies.values()))
        self._accessory_containers: dict[str, Container] = {}
        accessories, accessory_resources = self._accessories(shape, networks, volumes)
        # accessories behind the proxy: a route each, switched once the accessory runs
        accessory_resources += [self._accessory_route(acc, proxies[acc.host], lock)
                                for acc in shape.accessories if acc.proxy]
        containers: dict[str, dict[str, dict[str, pulumi.Output[str]]]] = {}
        # one rollout per boot batch: every role's new container of the batch, then `start` (the workers), then
        # the routes, then `retire` (what ran before); the next batch begins after it (`providers.rollout`)
        previous_batch: list[pulumi.Resource] = []
        i = 0
        for k, batch in enumerate(shape.batches):
            suffix = f"-{k + 1}" if len(shape.batches) > 1 else ""
            batch_hosts = tuple(dict.fromkeys(s.host for s in batch))
            batch_trigger = plans.apply(lambda p, k=k: _digest(p.batches[k], sorted(cfg.secrets.items())))
            previous_batch += self._hook("pre-app-boot", batch_trigger, batch_hosts, version, depends=previous_batch,
                                         suffix=suffix)
            created: list[tuple[plan.ContainerSpec, Container]] = []
            for spec in batch:
                field = self._field(plans, i)
                i += 1
                assert image is not None  # a role's container runs the destination's image
                # not the proxy: a container makes the `kamal` network where a new server lacks it, and only its
                # route needs kamal-proxy running - so the proxy starts beside the containers, and a destroy removes
                # it once the routes are gone, beside them
                after = [image, *previous_batch, networks[spec.host], *volumes.get(spec.host, []),
                         *accessory_resources]
                container = self._container(spec, field, image, shape.network, after)
                created.append((spec, container))
                containers.setdefault(spec.host, {})[spec.role] = {"name": container.name,
                                                                    "id": container.container_id}
            built = [c for _, c in created]
            entries = ([self._entry(spec, c, image) for spec, c in created],
                       # resource IDs, not outputs: an in-place update (a restart policy, a stopped container started
                       # again) keeps one known at preview, so only a new container shows as a new rollout
                       {f"{spec.role}@{spec.host}": c.id for spec, c in created})
            start = self._rollout(f"{name}-rollout-start{suffix}", "start", entries, built, lock)
            # a route waits for its container (its inputs) and `start` (which waits for every container of the batch)
            routes = [self._route(spec, c, proxies[spec.host], lock, [start])
                      for spec, c in created if spec.proxy]
            wait = self._cfg.boot.wait if k + 1 < len(shape.batches) else 0
            previous_batch = [self._rollout(f"{name}-rollout-retire{suffix}", "retire", entries,
                                            [start, *built, *routes], lock, wait=wait)]
            previous_batch += self._hook("post-app-boot", batch_trigger, batch_hosts, version,
                                         depends=previous_batch, suffix=suffix)
        self._hook("post-deploy", deploy_trigger, shape.hosts, version,
                   depends=[*previous_batch, *accessory_resources], secrets=True, lock=False)

        # what runs, once the run's rollout is done: a deploy that fails leaves them unresolved, so the stack keeps
        # the outputs of the version that still runs (what `promote` and `shipyard` read), not the one that failed
        done = [*previous_batch, *accessory_resources]
        self.image_id = _settled(image.image_id, done) if image else None
        self.repo_digest = _settled(image.repo_digest, done) if image else None
        self.image_ref = _settled(pulumi.Output.all(image.repo_digest, image.image_id).apply(lambda a: a[0] or a[1]),
                                  done) if image else None
        self.tag = _settled(image.tag, done) if image else None
        self.version = _settled(version, done) if image else None
        self.containers = _settled(containers, done)
        self.urls = pulumi.Output.from_input(list(shape.urls))
        self.accessories = _settled(accessories, done)
        self.register_outputs({"image_id": self.image_id, "repo_digest": self.repo_digest, "tag": self.tag,
                               "version": self.version, "containers": self.containers, "urls": self.urls,
                               "accessories": self.accessories})

    # -- helpers --------------------------------------------------------------------------------------------------

    def _target(self, host: str, *, build: bool = False) -> dict[str, Any] | pulumi.Output[dict[str, Any]]:
        """How `host` is reached; the build host with the builder's own login where it has one."""
        builder = self._cfg.builder
        own = build and host == builder.host
        target = target_of(self._cfg.ssh, host, port=own and builder.port or None,
                           user=own and builder.user or None, secrets=self._cfg.secrets).to_dict()
        return pulumi.Output.secret(target) if "key_data" in target else target  # private keys: secrets

    def _common(self, host: str) -> dict[str, Any]:
        """What every resource of this destination on `host` carries."""
        return {"owner": self._owner, "destination": self._cfg.destination, "target": self._target(host)}

    def _child(self, **opts: Any) -> pulumi.ResourceOptions:
        """Options of a resource of this destination (one `shipyard` plugin serves them all, whatever the host
        count). It waits for the hooks before it (`self._after`)."""
        depends_on = [*opts.pop("depends_on", []), *self._after]
        return pulumi.ResourceOptions(parent=self, provider=self._plugin, depends_on=depends_on or None, **opts)

    def _hook(self, hook: str, trigger: Any, hosts: tuple[str, ...], version: pulumi.Output[str], *,
              depends: list[pulumi.Resource] | None = None, suffix: str = "", secrets: bool = False,
              lock: bool = True) -> list[pulumi.Resource]:
        """The hook's resource, if the stack has that hook (`providers.hook`), as a list to wait for."""
        path = self._hooks.get(hook)
        if path is None:
            return []
        cfg = self._cfg
        destination = (cfg.kamal_app.destination if cfg.kamal_app else cfg.destination)
        details = pulumi.Output.from_input(version).apply(lambda v: {
            "SERVICE": cfg.service, "VERSION": v, "SERVICE_VERSION": f"{cfg.service}@{v if '_' in v else v[:7]}",
            **({"DESTINATION": destination} if destination else {}), "HOSTS": ",".join(hosts),
            "COMMAND": self._command, "LOCK": "true" if lock else "false"})
        # Kamal gives those hooks every secret of its secrets files, used by the config or not (a webhook's URL)
        values = dict(sorted({**(cfg.hooks.secrets if cfg.hooks else {}), **cfg.secrets}.items())) if secrets else {}
        return [Hook(f"{self._name}-hook-{hook}{suffix}", {
            "hook": hook, "destination": cfg.destination, "path": str(path), "file_hash": source.file_hash(path),
            "workdir": str((self._project_dir / cfg.hooks.workdir).resolve()) if cfg.hooks else "",
            "details": details, "trigger": trigger,
            "secrets": pulumi.Output.secret(values) if values else None,
        }, self._child(depends_on=list(depends or [])))]

    @staticmethod
    def _field(plans: pulumi.Output[plan.DestinationPlan], i: int) -> Callable[[str], pulumi.Output[Any]]:
        """A version-dependent field of the i-th container of the plan."""
        return lambda attr: plans.apply(lambda p: getattr(p.containers[i], attr))

    def _labels(self) -> dict[str, str]:
        cfg = self._cfg
        return {naming.SERVICE: cfg.service, naming.DESTINATION: cfg.destination, naming.OWNER_LABEL: self._owner}

    def _secret_env(self, names: tuple[str, ...]) -> pulumi.Output[dict[str, str]] | None:
        values = {k: self._cfg.secrets[k] for k in names}
        return pulumi.Output.secret(values) if values else None

    def _registry_auth(self, own: Any = None) -> pulumi.Output[dict[str, str]] | None:
        """An accessory's registry credentials: its own registry's (`own`), else the stack's, for images pulled
        from that registry."""
        r = own or self._cfg.registry
        if r is None or not r.username:
            return None
        return pulumi.Output.secret({"server": r.server, "username": r.username, "password": r.password})

    # -- resources ------------------------------------------------------------------------------------------------

    def _build_inputs(self, promote: dict[str, Any] | None) -> dict[str, Any]:
        """What the image is made from: the builder's context (hashed here, on the deploying machine) at the
        configured or git version, or the promoted stack's image."""
        cfg = self._cfg
        if promote is None:
            # checked here, before any resource: a missing context or Dockerfile, a bad .dockerignore or an
            # unreadable file is one ConfigError line at the start of the run
            ctx = source.context_for(self._project_dir / cfg.builder.context, cfg.builder.dockerfile,
                                     clean=cfg.builder.clean_checkout)
            for warning in ctx.warnings():
                pulumi.log.warn(warning, resource=self)
            if cfg.version and source.checkout_commit(ctx) not in (None, cfg.version):
                pulumi.log.info(f"version {cfg.version} is pinned (shipyard:version): its image is reused where it "
                                f"exists, whatever the checkout holds now", resource=self)
            return {"version": pulumi.Output.from_input(cfg.version or source.git_version(ctx)),
                    "pinned": bool(cfg.version),
                    "context": str(ctx.directory), "dockerfile": ctx.dockerfile, "context_hash": ctx.hash,
                    "build_args": dict(cfg.builder.args), "build_target": cfg.builder.target,
                    "build_platform": f"linux/{cfg.builder.arch}" if cfg.builder.arch else None, "from_ref": None,
                    **({"commit": ctx.commit} if isinstance(ctx, source.CommitContext) else {})}
        return {"version": promote["version"], "context": None, "dockerfile": "Dockerfile", "context_hash": None,
                "build_args": {}, "build_target": None, "from_ref": promote["image_ref"],
                "promote": pulumi.Output.all(promote["service"], promote["tag"], promote["version"]).apply(
                    lambda a: {"stack": promote["stack"], "service": a[0], "repository": a[1].rpartition(":")[0],
                               "version": a[2]})}

    def _image(self, shape: plan.DestinationPlan, plans, build: dict[str, Any]) -> Image:
        cfg = self._cfg
        assert shape.image is not None
        props: dict[str, Any] = {
            "owner": self._owner, "destination": cfg.destination, **build,
            "build_host": self._target(shape.image.build_host, build=True),
            "ship_to": [self._target(h) for h in shape.image.hosts],
            "registry_server": cfg.registry.server if cfg.registry else None,
            "registry_username": cfg.registry.username if cfg.registry else None,
            "registry_password": pulumi.Output.secret(cfg.registry.password)
            if cfg.registry and cfg.registry.password else None,
            "tag": plans.apply(lambda p: p.image.tag),
            "labels": pulumi.Output.all(plans, build["from_ref"]).apply(lambda a: plan.built_image_labels(
                a[0].image.labels, build["context_hash"], a[1], build["dockerfile"], build["build_args"],
                build["build_target"])),
        }
        return Image(f"{self._name}-image", props, self._child())

    def _network(self, shape: plan.DestinationPlan, host: str) -> Network:
        return Network(f"{self._name}-network@{host}", {**self._common(host), "name": shape.network,
                                                       "labels": self._labels()}, self._child())

    def _volume(self, host: str, volume: str) -> Volume:
        """A named volume; kept by `pulumi destroy` (retainOnDelete, shown in preview) unless the stack opts in."""
        return Volume(f"{self._name}-volume-{volume}@{host}",
                      {**self._common(host), "name": volume, "labels": self._labels()},
                      self._child(retain_on_delete=not self._cfg.delete_volumes_on_destroy))

    def _accessories(self, shape: plan.DestinationPlan, networks: dict[str, Network],
                     volumes: dict[str, list[Volume]]) -> tuple[dict[str, Any], list[pulumi.Resource]]:
        outputs: dict[str, dict[str, Any]] = {}
        resources: list[pulumi.Resource] = []
        for acc in shape.accessories:
            cfg_acc = self._cfg.accessories[acc.accessory]
            res = Container(f"{self._name}-accessory-{acc.resource_name}", {
                **self._common(acc.host), "role": acc.role, "name": acc.name, "labels": acc.labels,
                "image": acc.image, "cmd": list(acc.cmd) if acc.cmd else None, "env": acc.env,
                "secret_env": self._secret_env(acc.secret_env),
                "ports": [p.model_dump() for p in acc.ports], "volumes": list(acc.volumes),
                "restart": "unless-stopped", "network": shape.network,
                "extra_networks": list(acc.networks) or None,
                "aliases": list(acc.aliases), "registry_auth": self._registry_auth(cfg_acc.registry),
                "state_dir": acc.state_dir,
                "files": [self._accessory_file(acc, f) for f in acc.files],
                "directories": [{"name": d, "target": remote, **({"options": options} if options else {})}
                                for d, remote, options in acc.directories],
                "exclusive": True, "retain": 1, "proxy": None, "running": True, **self._host_shell(acc.env),
                **self._run_settings(acc),
            }, self._child(depends_on=[networks[acc.host], *volumes.get(acc.host, [])]))
            resources.append(res)
            self._accessory_containers[acc.resource_name] = res
            outputs.setdefault(acc.accessory, {})[acc.host] = {
                "hostname": acc.accessory, "network": shape.network, "container": acc.name, "id": res.container_id,
                "port": acc.ports[0].container_port if acc.ports else None}
        return outputs, resources

    @staticmethod
    def _run_settings(spec: plan.ContainerSpec | plan.AccessorySpec) -> dict[str, Any]:
        """`docker run` flags, logging and bridged assets, where set (a container without them keeps the props it
        had)."""
        assets = getattr(spec, "assets", None)
        return {**({"options": dict(spec.options)} if spec.options else {}),
                **({"logging": dict(spec.logging)} if spec.logging else {}),
                **({"assets": dict(assets)} if assets else {})}

    def _host_shell(self, env: dict[str, str]) -> dict[str, Any]:
        """A Kamal app's `${...}` in a clear env value is the host shell's to expand, as in Kamal's `docker run`."""
        if self._cfg.kamal_app and any(payloads.SHELL_EXPANDED.search(v) for v in env.values()):
            return {"host_shell_env": True}
        return {}

    def _container(self, spec: plan.ContainerSpec, field, image: Image, network: str,
                   after: list[pulumi.Resource]) -> Container:
        cfg = self._cfg
        return Container(f"{self._name}-{spec.resource_name}", {
            **self._common(spec.host), "role": spec.role,
            "name": field("name"), "labels": field("labels"), "env": field("env"),
            "image": image.image_id,
            "cmd": list(spec.cmd) if spec.cmd else None,
            "secret_env": self._secret_env(spec.secret_env),
            "ports": [p.model_dump() for p in spec.ports],
            "volumes": list(spec.volumes),
            "restart": spec.restart,
            "network": spec.network or network,
            "extra_networks": [network] if spec.network else None,
            "readiness_delay": cfg.readiness_delay,
            **({} if spec.proxy else {"stop_timeout": cfg.drain_timeout}),
            "takeover": self._takeover(spec.role),
            **self._host_shell(spec.env), **self._run_settings(spec),
            "proxy": spec.proxy.route_props() if spec.proxy else None,
            "retain": cfg.retain_containers,
            "running": True, "rollout": True,
        }, self._child(depends_on=after))

    def _entry(self, spec: plan.ContainerSpec, container: Container, image: Image) -> dict[str, Any]:
        """What the rollout knows of one new container."""
        cfg = self._cfg
        return {"target": self._target(spec.host), "role": spec.role, "name": container.name,
                "image": image.image_id, "proxied": bool(spec.proxy),
                "ports": [p.model_dump() for p in spec.ports], "readiness_delay": cfg.readiness_delay,
                "stop_timeout": None if spec.proxy else cfg.drain_timeout, "retain": cfg.retain_containers,
                "takeover": self._takeover(spec.role), **({"assets": dict(spec.assets)} if spec.assets else {})}

    def _rollout(self, name: str, step: str, entries: tuple[list[dict[str, Any]], dict[str, Any]],
                 after: list[pulumi.Resource], lock: dict[str, Any], wait: float = 0) -> Rollout:
        """One step of a batch's rollout over `entries`: what it knows of each new container, and their IDs by
        `<role>@<host>` (`providers.rollout.entries`)."""
        cfg = self._cfg
        secrets = sorted({cfg.secrets[k] for role, r in cfg.servers.items() for h in r.hosts
                          for k in cfg.host_env(role, h).secret})
        return Rollout(name, {"step": step, "owner": self._owner, "destination": self._cfg.destination,
                              "labels": self._labels(), "lock": lock, "containers": entries[0], "ids": entries[1],
                              "redact": pulumi.Output.secret(secrets) if secrets else None,
                              **({"wait": wait} if wait else {})},
                       self._child(depends_on=after))

    def _route(self, spec: plan.ContainerSpec, container: Container, proxy: Proxy,
               lock: dict[str, Any], after: list[pulumi.Resource]) -> ProxyRoute:
        return ProxyRoute(f"{self._name}-{spec.role}-route@{spec.host}", {
            **self._common(spec.host), "service": spec.proxy_service, "role": spec.role, "labels": self._labels(),
            "upstream": pulumi.Output.concat(container.name, ":", str(spec.proxy.app_port)),
            "container_id": container.container_id,
            "proxy": spec.proxy.route_props(), "lock": lock, "takeover": self._takeover(spec.role),
            **self._error_pages(),
            **({"tls": pulumi.Output.secret({"certificate": self._cfg.secrets[spec.proxy.ssl_certificate],
                                             "private_key": self._cfg.secrets[spec.proxy.ssl_private_key]})}
               if spec.proxy.ssl_certificate else {}),
        }, self._child(depends_on=[*after, proxy]))

    def _error_pages(self) -> dict[str, Any]:
        """The route's error pages (`error_pages`), by their local directory and content hash."""
        if not self._cfg.error_pages:
            return {}
        directory = (self._project_dir / self._cfg.error_pages).resolve()
        return {"error_pages": {"local": str(directory), "hash": source.pages_hash(source.error_pages(directory))}}

    def _accessory_file(self, acc: plan.AccessorySpec, f: AccessoryFile) -> dict[str, Any]:
        """An accessory file to upload: by its path and hash (its mode, owner and mount options where set); a Kamal
        app's `*.erb` file rendered as Kamal renders it - Ruby's ERB with the accessory's env (its secrets too) in
        ENV - and carried as a secret."""
        path = (self._project_dir / f.local).resolve()
        settings = {k: v for k, v in (("mode", f.mode), ("owner", f.owner), ("options", f.options)) if v}
        if not (self._cfg.kamal_app and f.local.endswith("erb")):
            return {"local": str(path), "target": f.remote, "hash": source.file_hash(path), **settings}
        env = {**acc.env, **{k: self._cfg.secrets[k] for k in acc.secret_env}}
        text = render_ruby(path.read_text(), f.local, env, path.parent, shutil.which("ruby") or "ruby")
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return {"local": str(path), "target": f.remote, "hash": digest, "content": pulumi.Output.secret(text),
                **settings}

    def _accessory_route(self, acc: plan.AccessorySpec, proxy: Proxy, lock: dict[str, Any]) -> ProxyRoute:
        container = self._accessory_containers[acc.resource_name]
        return ProxyRoute(f"{self._name}-accessory-{acc.accessory}-route@{acc.host}", {
            **self._common(acc.host), "service": acc.proxy_service, "role": acc.role, "labels": self._labels(),
            "upstream": pulumi.Output.concat(acc.name, ":", str(acc.proxy.app_port)),
            "container_id": container.container_id, "proxy": acc.proxy.route_props(), "lock": lock,
            "takeover": None,
        }, self._child(depends_on=[container, proxy]))

    def _takeover(self, role: str) -> dict[str, Any] | None:
        """What a takeover of Kamal's deployment needs on the host: Kamal's destination and the role."""
        t = self._cfg.takeover
        return {"destination": t.destination, "role": role} if t else None
