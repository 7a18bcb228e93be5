"""`shipyard:index:Proxy` and `shipyard:index:ProxyRoute`: kamal-proxy, one per host and shared by every destination
there, and each destination's route on it.

No stack owns the proxy: a stack's Proxy resource ensures it runs (adopting one that already does) and, deleted,
removes it only when no route is left on it. Every change to the proxy's existence holds the host lock exclusively;
routing through it holds it shared, so destinations deploy side by side but never while the proxy comes or goes.
A route belongs to whoever owns the container it targets: another stack's (or a Kamal app's) route of the same
name is refused, never taken over silently. A stack that takes over a Kamal deployment (`takeover`, set by
`shipyard:kamal`) may deploy over the route of Kamal's app container of the same service, role and destination;
Kamal's containers are then stopped, not removed. A route that serves a container not ours is never removed."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from .. import decisions, hosts, naming, payloads, source
from ..errors import ConfigError, DockerError, HealthCheckFailed, HostError, OwnershipConflict
from ..hosts import SSHTarget, docker_errors
from .base import STOP_TIMEOUT_S, ensure_image, ensure_proxy_network, exact_diff, find, health_answer, held_elsewhere, \
    host_lock, ours_to_take, owned, proxy_routes, removed, route_removed, route_switched, route_target, service_of, \
    stop_kamal, takeover_candidates, target
from .rollout import switching

START_DEADLINE_S = 15


def _running(c) -> dict[str, Any] | None:
    existing = find(c, naming.PROXY_CONTAINER)
    return existing if existing is not None and existing.get("State") == "running" else None


def ensure_proxy(props: dict[str, Any], *, upgrade: bool) -> dict[str, Any]:
    """Under the exclusive host lock: start kamal-proxy if it is missing or stopped; replace it with `image` only
    when `upgrade` (this stack's proxy.image changed) - routes survive in its config volume."""
    t = target(props)
    c = hosts.client(t)

    settings = payloads.proxy_run_digest(props.get("run"))

    def keeps(existing: dict[str, Any] | None) -> bool:
        """What runs may stay: unless this stack's image changed (`upgrade`), or it sets how the proxy runs
        (proxy.run) and the proxy runs otherwise."""
        if existing is None:
            return False
        if props.get("run") and (existing.get("Labels") or {}).get(naming.PROXY_RUN_LABEL) != settings:
            return False
        return not upgrade or existing["Image"] == props["image"]

    # The image is on the host before anything is stopped: a new server has none, and an upgrade whose pull fails
    # leaves the running proxy serving. Pulled before the lock (it may take a while), and again under it if
    # another stack's change since then calls for it.
    with docker_errors(t, f"pulling {props['image']} for {naming.PROXY_CONTAINER}"):
        if not keeps(find(c, naming.PROXY_CONTAINER)):
            ensure_image(c, t, props["image"], None, naming.PROXY_CONTAINER)
    with host_lock(target(props), props, f"starting {naming.PROXY_CONTAINER}") as lock:
        with docker_errors(t, f"starting {naming.PROXY_CONTAINER}"):
            ensure_proxy_network(c)
            existing = find(c, naming.PROXY_CONTAINER)
            if keeps(existing):
                if existing.get("State") != "running":
                    c.start(existing["Id"])
                cid = existing["Id"]
            else:
                ensure_image(c, t, props["image"], None, naming.PROXY_CONTAINER)
                lock.check(f"replacing {naming.PROXY_CONTAINER}")  # the pull may have taken a while
                if existing is not None:
                    c.stop(existing["Id"], timeout=STOP_TIMEOUT_S)
                    c.remove_container(existing["Id"])
                run = payloads.proxy_run(props.get("run"))
                host_config = c.create_host_config(
                    port_bindings=run["port_bindings"],
                    binds=[f"{naming.PROXY_VOLUME}:/home/kamal-proxy/.config/kamal-proxy:rw"],
                    restart_policy=payloads.restart_policy("unless-stopped"), network_mode=naming.PROXY_NETWORK,
                    log_config={"type": "json-file", "config": {"max-size": run["log_max_size"]}},
                    **run["host"])
                labels = {naming.PROXY_LABEL: "true",
                          **({naming.PROXY_RUN_LABEL: settings} if props.get("run") else {})}
                cid = c.create_container(image=props["image"], name=naming.PROXY_CONTAINER, ports=run["ports"],
                                         labels=labels, host_config=host_config, **run["container"])["Id"]
                c.start(cid)
            running_image = c.inspect_container(cid)["Config"]["Image"]
        deadline = time.monotonic() + START_DEADLINE_S
        while proxy_routes(t) is None:  # ready when its control socket answers
            if time.monotonic() > deadline:
                raise HealthCheckFailed(str(t), f"{naming.PROXY_CONTAINER} did not start within "
                                                f"{START_DEADLINE_S}s: see `docker logs {naming.PROXY_CONTAINER}`")
            time.sleep(0.2)
    return {**props, "container_id": cid, "running_image": running_image}


class ProxyProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{naming.PROXY_CONTAINER}@{props['target']['host']}",
                            outs=ensure_proxy(props, upgrade=False))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return exact_diff(olds, news, replace=(), update=("image", "run"), replace_targets=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=ensure_proxy(news, upgrade=olds.get("image") != news["image"]))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        t = target(props)
        with docker_errors(t, f"inspecting {naming.PROXY_CONTAINER}"):
            existing = find(hosts.client(t), naming.PROXY_CONTAINER)
        if existing is None:
            return ReadResult(id_="", outs={})
        # what runs is recorded, not taken as this stack's wish: another destination may have upgraded it
        return ReadResult(id_=id_, outs={**props, "running_image": existing["Image"], "container_id": existing["Id"]})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        t = target(props)
        c = hosts.client(t)
        with host_lock(target(props), props, f"removing {naming.PROXY_CONTAINER}") as lock:
            with docker_errors(t, f"removing {naming.PROXY_CONTAINER}"):
                existing = _running(c)
            if existing is None:
                return  # already gone (or stopped by someone): nothing of ours to do
            routes = proxy_routes(t)
            if routes is None or routes:
                return  # still routes for some destination (or cannot tell): leave it serving
            lock.check(f"removing {naming.PROXY_CONTAINER}")
            with docker_errors(t, f"removing {naming.PROXY_CONTAINER}"):
                c.stop(existing["Id"], timeout=STOP_TIMEOUT_S)
                c.remove_container(existing["Id"])
            # and its config volume: no route is left in it, only certificates and error pages of none (kept if
            # something else uses it)
            with docker_errors(t, f"removing volume {naming.PROXY_VOLUME}"):
                removed(c.remove_volume, naming.PROXY_VOLUME)


# -- a destination's route ------------------------------------------------------------------------------------------

ROUTE_UPDATE = ("service", "upstream", "proxy", "container_id", "error_pages", "tls")
PROXY_HOME = "/home/kamal-proxy/.config/kamal-proxy"  # the proxy's config volume, inside its container


def upload_certificate(t: SSHTarget, service: str, tls: dict[str, str]) -> tuple[str, str]:
    """The route's own certificate and key, copied into the proxy's config volume under their hash (mode 0644, as
    Kamal writes them); returns their paths inside the proxy."""
    files = {"cert.pem": tls["certificate"].encode(), "key.pem": tls["private_key"].encode()}
    digest = hashlib.sha256(files["cert.pem"] + b"\0" + files["key.pem"]).hexdigest()[:16]
    rel = _put_files(t, f"tls/{service}/{digest}", files, f"the certificate of {service}")
    return f"{PROXY_HOME}/{rel}/cert.pem", f"{PROXY_HOME}/{rel}/key.pem"


def _put_files(t: SSHTarget, rel: str, files: dict[str, bytes], what: str) -> str:
    """Files into the proxy's config volume at `rel` (parents made), readable by kamal-proxy's user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        parts = rel.split("/")
        for i in range(len(parts)):
            info = tarfile.TarInfo("/".join(parts[:i + 1]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{rel}/{name}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    with docker_errors(t, f"copying {what} into {naming.PROXY_CONTAINER}"):
        hosts.client(t).put_archive(naming.PROXY_CONTAINER, PROXY_HOME, buf.getvalue())
    return rel


def upload_error_pages(t: SSHTarget, service: str, pages: dict[str, Any]) -> str:
    """The route's error pages, copied into the proxy's config volume under their content hash (a route switched
    back to an earlier version finds its pages still there); returns their directory inside the proxy."""
    files = source.error_pages(Path(pages["local"]))
    if source.pages_hash(files) != pages["hash"]:
        raise ConfigError("error_pages", f"{pages['local']} changed while this deploy was running: run it again")
    rel = _put_files(t, f"error_pages/{service}/{pages['hash'].split(':')[-1][:16]}", files,
                     f"the error pages of {service}")
    return f"{PROXY_HOME}/{rel}"


def _whose(props: dict[str, Any]) -> str:
    return f"role {props['role']} of destination {props['destination']}" if props.get("role") \
        else f"destination {props['destination']}"


def _last_answer(t: SSHTarget, props: dict[str, Any]) -> str:
    """After a switch kamal-proxy refused: what the new container answers on its health check path now, as the
    container's own readiness failure says it (`Last health check: ...; `); empty when that cannot be told."""
    if not props.get("container_id") or not (props.get("proxy") or {}).get("healthcheck"):
        return ""
    try:
        with docker_errors(t, f"inspecting {props['upstream']}"):
            info = hosts.client(t).inspect_container(props["container_id"])
        answer = health_answer(t, info, naming.PROXY_NETWORK, props["proxy"])
    except HostError:
        return ""
    if answer is None:
        return "the container is not on the kamal network (stopped?); "
    return f"last health check: {answer[1]}; "


class RouteProvider(ResourceProvider):
    """Create and update run `kamal-proxy deploy`: health-check the new container, switch traffic, drain the old
    one. A failure fails the update, so the engine never deletes the old container, which keeps serving. Every
    replacement of the container changes `container_id`, so it always goes through the switch. Delete removes
    this destination's route only."""

    serialize_as_secret_always = False

    def _deploy(self, props: dict[str, Any], *, recorded: bool = False, renamed_from: str | None = None
                ) -> dict[str, Any]:
        """`recorded`: the route is in this stack's state (an update), so a hand-made change of its target is drift
        to undo, not another deployer's route. `renamed_from`: the route's name before (its service or takeover
        changed), removed once this one serves."""
        t = target(props)
        port = props["upstream"].rsplit(":", 1)[1]
        upstream = f"{props['container_id'][:12]}:{port}" if props.get("container_id") else props["upstream"]
        for _ in range(3):
            argv = payloads.proxy_deploy_argv(props["service"], upstream, props["proxy"])
            if props.get("error_pages"):  # copied into the proxy each time: it may be a new proxy
                argv += ["--error-pages", upload_error_pages(t, props["service"], props["error_pages"])]
            if props.get("tls"):
                cert, key = upload_certificate(t, props["service"], props["tls"])
                argv += ["--tls-certificate-path", cert, "--tls-private-key-path", key]
            with host_lock(target(props), props, f"routing {props['service']}", shared=True) as lock:
                routes = proxy_routes(t)
                if routes is not None:
                    previous = self._check_owner(t, props, routes.get(props["service"]), recorded=recorded)
                    lock.check(f"switching route {props['service']}")
                    with switching(props):
                        handed = self._hand_over(t, props, routes, upstream, renamed_from)
                        code, out = hosts.exec_in(t, naming.PROXY_CONTAINER, argv,
                                                  timeout=decisions.proxy_deploy_wait(props["proxy"]))
                        if code != 0:
                            raise HealthCheckFailed(str(t), f"kamal-proxy did not switch {props['service']} "
                                                            f"({_whose(props)}) to {props['upstream']}: {out}; "
                                                            f"{_last_answer(t, props)}the previous version keeps "
                                                            f"serving")
                        route_switched(t, props["service"])  # it serves again
                    lock.check(f"stopping what route {props['service']} served before")  # the switch took long
                    for info in {i["Id"]: i for i in (previous, *handed) if i is not None}.values():
                        self._retire(t, props, info)
                    with docker_errors(t, f"stopping Kamal's containers of route {props['service']}"):
                        stop_kamal(hosts.client(t), props)  # switched and drained: Kamal's app may stop
                    return props
            # the proxy is gone (a destination's destroy removed it as ours was being created): bring it back
            ensure_proxy({**props, "image": props["proxy"]["image"]}, upgrade=False)
        raise DockerError(str(t), f"{naming.PROXY_CONTAINER} kept disappearing while routing {props['service']}")

    def _hand_over(self, t: SSHTarget, props: dict[str, Any], routes: dict[str, dict[str, str]], upstream: str,
                   renamed_from: str | None) -> list[dict[str, Any]]:
        """This stack's routes of other names - its route before a rename (a new service name, or a takeover's
        destination), or any holding this route's host names, which kamal-proxy gives one route only - switch to
        the new container first (health-checked and drained, as any switch; a failure changes nothing more), then
        are removed so this route can take their host names. Host names held by a route that serves no container
        of this stack are refused here, before anything changes. Returns the containers they served."""
        proxy = props["proxy"]
        holders = decisions.host_holders(routes, props["service"], proxy.get("hosts") or [],
                                         payloads.path_prefixes(proxy.get("path_prefix")))
        names = set(holders)
        if renamed_from in routes and renamed_from != props["service"]:
            names.add(renamed_from)
        owners = {}
        for name in sorted(names):
            info = route_target(t, routes[name])
            if ours_to_take(info, props):
                owners[name] = info
            elif name in holders:
                raise OwnershipConflict(str(t), held_elsewhere(name, routes[name], info, props["service"]))
        for name in owners:
            argv = payloads.proxy_deploy_argv(name, upstream, {**proxy, **decisions.route_binding(routes[name])})
            code, out = hosts.exec_in(t, naming.PROXY_CONTAINER, argv, timeout=decisions.proxy_deploy_wait(proxy))
            if code != 0:
                raise HealthCheckFailed(str(t), f"kamal-proxy did not switch {name} (the route {props['service']} "
                                                f"takes over from) to {props['upstream']}: {out}; the previous "
                                                f"version keeps serving")
            code, out = hosts.exec_in(t, naming.PROXY_CONTAINER, ["kamal-proxy", "remove", name])
            if code != 0 and "not found" not in out.lower():
                raise DockerError(str(t), f"kamal-proxy could not remove route {name}, which route "
                                          f"{props['service']} takes over from: {out}")
        return list(owners.values())

    def _check_owner(self, t: SSHTarget, props: dict[str, Any], route: dict[str, str] | None, *,
                     recorded: bool = False) -> dict | None:
        """A route of this name that targets a container of another stack or app is not ours to change - unless
        this stack takes over the Kamal deployment that container belongs to, or the route is this stack's
        (`recorded`) and was pointed since at a container no other stack owns (drift, switched back). Returns
        that container (inspect output), or None when there is no route or its container is gone (a dangling
        route, adopted)."""
        info = route_target(t, route)
        if info is None:
            return None
        labels = info["Config"].get("Labels") or {}
        if owned(labels, props) or decisions.route_takeover(labels, props.get("takeover"), service_of(props)) \
                or (recorded and decisions.reclaimable(labels)):
            return info
        hint = "Use another service or destination name."
        if naming.OWNER_LABEL not in labels and naming.SERVICE in labels:
            hint = ("If it is your Kamal deployment of this app, name its config in shipyard:kamal to take it over "
                    "(with Kamal's destination), or use another service or destination name.")
        raise OwnershipConflict(str(t), f"kamal-proxy route {props['service']} serves container "
                                        f"{info['Name'].lstrip('/')} of {naming.describe_owner(labels)}; "
                                        f"nothing was changed. {hint}")

    @staticmethod
    def _retire(t: SSHTarget, props: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Switched and drained: this stack's container the route served before stops now, as Kamal does, not at
        the end of the whole `up` (the engine's delete then keeps it stopped for rollback). Best effort: the
        switch is done, and that delete stops it otherwise."""
        if previous is None or previous["Id"] == props.get("container_id") or not previous["State"].get("Running") \
                or not owned(previous["Config"].get("Labels"), props):
            return
        try:
            with docker_errors(t, f"stopping what route {props['service']} served before"):
                hosts.client(t).stop(previous["Id"], timeout=STOP_TIMEOUT_S)
        except HostError:
            pass

    @staticmethod
    def _refuse_orphaning_kamal(t: SSHTarget, props: dict[str, Any]) -> None:
        """A route taken over from Kamal's app, still serving this stack's container while Kamal's (stopped by the
        takeover) are on the host: removing it would leave the app with no route and no container running. Kamal
        takes it back first (`kamal rollback`), or removes its app for good (`kamal remove`)."""
        takeover = props.get("takeover")
        if not takeover:
            return
        service = service_of(props)
        with docker_errors(t, f"looking for Kamal's containers of route {props['service']}"):
            items = takeover_candidates(hosts.client(t), props, stopped=True)
        if any(decisions.kamal_app(i.get("Labels"), service, takeover["role"], takeover.get("destination"))
               for i in items):
            dest = f" -d {takeover['destination']}" if takeover.get("destination") else ""
            raise OwnershipConflict(str(t), f"route {props['service']} was taken over from Kamal's app {service} "
                                            f"(role {takeover['role']}) and serves this stack's container: removing "
                                            f"it would leave the app with no route and no container running. Give "
                                            f"it back first (`kamal rollback{dest} <version>`; `kamal app "
                                            f"containers{dest}` lists Kamal's), or remove Kamal's app for good "
                                            f"(`kamal remove{dest}`); the route was left as it is")

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['service']}@{props['target']['host']}", outs=self._deploy(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if "container_id" not in olds:  # recorded by an earlier release: the name-based upstream says enough
            news = {k: v for k, v in news.items() if k != "container_id"}
        return exact_diff(olds, news, replace=(), update=ROUTE_UPDATE, replace_targets=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._deploy(news, recorded=True, renamed_from=olds.get("service")))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        t = target(props)
        with docker_errors(t, f"inspecting {naming.PROXY_CONTAINER}"):
            running = _running(hosts.client(t))
        routes = proxy_routes(t) if running else {}
        if routes is None or props["service"] not in routes:
            return ReadResult(id_="", outs={})
        live = routes[props["service"]].get("target") or ""
        if decisions.route_in_sync(live, props.get("container_id"), props["upstream"]):
            return ReadResult(id_=id_, outs=props)
        # pointed elsewhere since (by hand, or Kamal's rollback): record what it serves, so the diff shows it and
        # the next `up` switches it back
        info = route_target(t, routes[props["service"]])
        ref = decisions.upstream_container(live)
        outs = {**props, "upstream": f"{info['Name'].lstrip('/') if info else ref}:{decisions.upstream_port(live)}"}
        if "container_id" in props:  # recorded by an earlier release without it: the upstream shows the drift
            outs["container_id"] = info["Id"] if info else ref
        return ReadResult(id_=id_, outs=outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        t = target(props)
        with host_lock(target(props), props, f"removing route {props['service']}", shared=True) as lock:
            route = (proxy_routes(t) or {}).get(props["service"])
            if route is None:
                route_removed(t, props["service"])
                return  # already gone, or no proxy runs here (none answers): no route
            info = route_target(t, route) if "labels" in props else None
            if info is not None and not owned(info["Config"].get("Labels"), props):
                route_removed(t, props["service"])
                return  # it serves someone else's container now (Kamal took the app back): theirs to keep
            self._refuse_orphaning_kamal(t, props)
            lock.check(f"removing route {props['service']}")
            code, out = hosts.exec_in(t, naming.PROXY_CONTAINER, ["kamal-proxy", "remove", props["service"]])
        if code != 0 and "not found" not in out.lower() and "no such" not in out.lower():
            raise DockerError(str(t), f"kamal-proxy could not remove route {props['service']}: {out}")
        route_removed(t, props["service"])  # none of this stack's containers is routed by it now
