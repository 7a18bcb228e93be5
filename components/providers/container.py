"""`shipyard:index:Container`: one container of one role (or accessory) of one destination on one host, created from the
image pinned by ID.

A new container is created under a pending name and takes its real name once it is ready (or, for a role without
a proxy, once it exists: the rollout starts it), so whatever an interrupted run leaves behind is recognisable and
removed by the next run. Ready means running without a restart and - for a proxied role - answering its health
check from the host; for other roles, healthy by the image's own HEALTHCHECK, or still running after
`readiness_delay`. A container that is not ready is removed (or, started by the rollout, stopped) and the deploy
fails naming the role, host, container, exit code and last output, so the version it replaces keeps serving and
nothing retained is touched. An app role's predecessors are retired by the destination's rollout
(`providers.rollout`); an accessory's by its own create."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Collection

from pulumi.runtime.rpc import UNKNOWN
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, \
    ResourceProvider, UpdateResult

from .. import decisions, hostfiles, hosts, naming, payloads, text
from ..errors import DockerError, HealthCheckFailed, HostError, OwnershipConflict
from ..hostlock import LockTimeout
from ..hosts import SSHTarget, docker_errors
from .base import RUN_NONCE, STOP_TIMEOUT_S, ensure_image, exact_diff, health_answer, held_elsewhere, host_lock, \
    label_filters, named, nonce, of_role, ours, ours_to_take, owned, proxy_network, proxy_routes, remove_image, \
    proxy_routes_looked, route_target, service_of, target, was_route_removed

REPLACE = ("name", "image", "cmd", "env", "secret_env", "ports", "volumes", "labels", "network", "extra_networks",
           "aliases", "files", "directories", "options", "logging", "assets")
# proxy: only how readiness is checked; stop_timeout: how replaced containers of a role without proxy are stopped
UPDATE = ("restart", "running", "proxy", "retain", "readiness_delay", "stop_timeout")
START_DEADLINE_S = 10
DEFAULT_READINESS_DELAY_S = 7
PRUNE_WAIT_S = 2  # how long a rollout's pruning waits for another deploy's build on the host, else skips
POLL_FIRST_S = 0.05  # the first pause between readiness looks, doubling up to the healthcheck interval


def stop_timeout(props: dict[str, Any]) -> int:
    """Seconds a container of this role gets between SIGTERM and SIGKILL: the drain timeout of a role without proxy
    (a worker finishing its job), Docker's default otherwise."""
    value = props.get("stop_timeout")
    return int(value) if value is not None else STOP_TIMEOUT_S


def _files_key(props: dict[str, Any]) -> dict[str, Any]:
    """Accessory files count by where they go and what they hold, not by the deployer's checkout path."""
    return {**props, "files": [{"target": f["target"], "hash": f["hash"]} for f in props.get("files") or []]}


def standby(props: dict[str, Any]) -> bool:
    """A role without a proxy (a worker) is created stopped: the destination's rollout starts it once every role's
    new container exists, and stops its predecessor only once every route has switched."""
    return bool(props.get("rollout")) and not props.get("proxy")


def start_ready(c, t: SSHTarget, cid: str, props: dict[str, Any], role: list[dict[str, Any]], *,
                keep: bool) -> list[str]:
    """Start `cid` and wait until it is ready. Without a proxy, a fixed host port can only be bound by one
    container: the one of the role (`role`: its containers here) that holds it is stopped just before this one
    starts (Kamal 1's order); an `exclusive` one (an accessory: one writer of its data) stops every running one of
    its role. Returns those. If it does not become ready, it is removed (`keep`: stopped, as the rollout does with a
    container the state knows) and what it stopped runs again."""
    wanted = {int(p["host_port"]) for p in props.get("ports") or [] if p.get("host_port") is not None}
    handing_over = [i["Id"] for i in role if i["Id"] != cid and i.get("State") == "running"] \
        if props.get("exclusive") else decisions.port_holders(role, wanted, exclude=cid)
    try:
        for old in handing_over:
            c.stop(old, timeout=stop_timeout(props))
        c.start(cid)
        wait_ready(c, t, cid, props, kept=keep)
    except BaseException:
        put_back(t, props, cid, handing_over, keep=keep)
        raise
    return handing_over


def stop_unfinished(c, t: SSHTarget, props: dict[str, Any], listing: list[dict[str, Any]],
                    role: list[dict[str, Any]]) -> None:
    """Before a role's new container is made: stop what an interrupted rollout left running next to the version the
    destination runs (`decisions.unfinished`). `listing`: the host's containers and `role` the role's, as listed
    just before."""
    running = [i["Id"] for i in role if i.get("State") == "running"]
    if len(running) < 2:  # as it is after every whole rollout: nothing to read
        return
    routes = proxy_routes(t)
    if routes is None and props.get("proxy"):
        return  # kamal-proxy does not answer: what it routes to is unknown, so nothing is stopped
    started = {cid: c.inspect_container(cid)["State"]["StartedAt"] for cid in running}
    mine = [decisions.Seen.from_list(i) for i in listing if owned(i.get("Labels"), props)]  # the role's among them
    routed = decisions.routed((routes or {}).values(), mine)
    if props.get("proxy"):
        unfinished = decisions.unfinished(started, routed=routed)
    else:  # a worker: the version the destination's routes serve, if any, else the one running longest
        served = {s.version for s in mine if s.id in routed}
        unfinished = decisions.unfinished(started, served=[s.id for s in mine if s.version in served])
    for cid in unfinished:
        c.stop(cid, timeout=stop_timeout(props))


def put_back(t: SSHTarget, props: dict[str, Any], cid: str, stopped: list[str], *, keep: bool) -> None:
    """A new container that did not make it is removed (`keep`: stopped) and what it took its port from runs
    again - on a fresh connection if the failure broke the old one. Best effort: the original error is what the
    user must see, and the next `up` removes a leftover (it still has its pending name)."""
    try:
        with docker_errors(t, f"putting back what ran before {props['name']}"):
            c = hosts.client(t)
            if keep:
                c.stop(cid, timeout=stop_timeout(props))
            else:
                c.remove_container(cid, v=False, force=True)
            for old in stopped:
                c.start(old)
    except HostError:
        pass


def put_accessory_back(props: dict[str, Any], cid: str, stopped: list[str]) -> None:
    """An accessory that took over in a run that went no further (`providers.rollout`) stops, and the one it replaced
    (`stopped`) runs again under its name - best effort, as `put_back`. Its state records the new one, which the next
    `up` starts again (`ContainerProvider.observed`)."""
    t = target(props)
    name = props["name"]
    try:
        with docker_errors(t, f"putting back the accessory {name} replaced"):
            c = hosts.client(t)
            c.stop(cid, timeout=stop_timeout(props))
            take_name(c, stopped[0], name, holder=cid)
            for old in stopped:
                c.start(old)
    except HostError:
        pass


def take_name(c, cid: str, name: str, holder: str | None) -> None:
    """`cid` takes `name` from the container that holds it (`holder`, moved aside under its replaced name)."""
    if holder == cid:
        return
    if holder is not None:
        c.rename(holder, naming.replaced_name(name, holder))
    c.rename(cid, name)


def host_known(props: dict[str, Any]) -> bool:
    """Whether the container's host is known yet (not at the first preview of hosts from other resources)."""
    return isinstance(props.get("target"), dict) and props["target"].get("host") not in (None, UNKNOWN)


def _asset_dirs(t: SSHTarget, assets: dict[str, Any], role: str, version: str) -> tuple[str, str]:
    base = f"{hostfiles.home(t)}/{assets['dir']}"
    return f"{base}/extracted/{role}-{version}", f"{base}/volumes/{role}-{version}"


def bridge_assets(t: SSHTarget, props: dict[str, Any], role: list[dict[str, Any]]) -> list[str]:
    """Kamal's asset bridging, for a role with `asset_path`: the new version's assets and those of every running
    predecessor go into one directory mounted at the asset path, and the new ones into each predecessor's too - a
    page served by either version finds the assets of both throughout the rollout. Returns the bind."""
    assets = props.get("assets")
    if not assets:
        return []
    version = props["labels"]["version"]
    extracted, volume = _asset_dirs(t, assets, props["role"], version)
    running = {(i.get("Labels") or {}).get("version") for i in role if i.get("State") == "running"} - {None, version}
    script = payloads.asset_bridge_script(
        image=props["image"], path=assets["path"], scratch=f"{props['name']}-assets", extracted=extracted,
        volume=volume, predecessors=[_asset_dirs(t, assets, props["role"], v) for v in sorted(running)])
    doing = f"bridging the assets of {props['name']} ({assets['path']})"
    status, out = hosts.run(t, ["sh", "-c", script], doing=doing, timeout=600)
    if status != 0:
        raise DockerError(t.host, f"{doing} failed: {text.tail(out, 3)}")
    return [f"{volume}:{assets['path']}"]


def clean_up_assets(t: SSHTarget, props: dict[str, Any], listing: list[dict[str, Any]]) -> None:
    """Once a rollout is over: the asset directories of versions the role no longer has a container of go."""
    assets = props.get("assets")
    if not assets:
        return
    versions = {(i.get("Labels") or {}).get("version") for i in of_role(listing, props, props["role"])} - {None}
    base = f"{hostfiles.home(t)}/{assets['dir']}"
    hosts.run(t, ["sh", "-c", payloads.asset_cleanup_script(base=base, role=props["role"], versions=sorted(versions))],
              doing=f"removing the assets of versions {props['role']} no longer has")


def host_shell_env(t: SSHTarget, props: dict[str, Any]) -> dict[str, str]:
    """The clear env; a Kamal app's `${...}` in it expanded by the host's shell, as Kamal's `docker run` is."""
    env = dict(props.get("env") or {})
    names = [k for k, v in env.items() if payloads.SHELL_EXPANDED.search(v)] if props.get("host_shell_env") else []
    if not names:
        return env
    doing = f"expanding ${{...}} in {', '.join(names)} with the host's shell, as Kamal does"
    status, out = hosts.run(t, ["sh", "-c", payloads.host_shell_script([env[k] for k in names])], doing=doing)
    values = payloads.host_shell_values(out, len(names)) if status == 0 else None
    if values is None:
        raise DockerError(t.host, f"{doing} failed: {text.tail(out, 3)}")
    return {**env, **dict(zip(names, values))}


def _last_output(c, cid: str, secrets: list[str]) -> str:
    """A failed container's last lines of output, as one line and with its secrets redacted: what the user has to
    go on once the container is removed."""
    return text.tail(c.logs(cid, tail=20).decode(errors="replace"), 5, secrets).replace("\n", " | ") or "-"


def wait_ready(c, t: SSHTarget, cid: str, props: dict[str, Any], *, kept: bool = False) -> None:
    proxy = props.get("proxy")
    delay = float(props.get("readiness_delay") if props.get("readiness_delay") is not None
                  else DEFAULT_READINESS_DELAY_S)
    timeout_s = float(proxy["deploy_timeout"]) if proxy else max(START_DEADLINE_S, delay + 3)
    start = time.monotonic()
    deadline = start + timeout_s
    last = "no health check answered yet"
    where = f"container {props['name']} (role {props['role']}) of destination {props['destination']}"
    done = "it was stopped (kept for the next `up`)" if kept else "it was removed"
    secrets = list((props.get("secret_env") or {}).values())
    polls = 0
    while True:
        info = c.inspect_container(cid)
        verdict = decisions.container_verdict(info["State"])
        if verdict.status in ("crashed", "unhealthy"):
            what = f"{verdict.detail} right after starting" if verdict.status == "crashed" else \
                f"reports unhealthy ({text.redact(verdict.detail, secrets)})"
            raise HealthCheckFailed(str(t), f"{where} {what}; {done} and the previous version keeps running. "
                                            f"Last output: {_last_output(c, cid, secrets)}")
        if proxy:
            answer = health_answer(t, info, props["network"], proxy)
            if answer is not None:
                status, last = answer
                if status is not None and 200 <= status < 300:
                    return
        elif verdict.status == "healthy":
            return
        elif verdict.status == "starting":
            last = verdict.detail
        elif time.monotonic() - start >= delay:
            return
        if time.monotonic() >= deadline:
            hint = f". If the app answers on another path or boots slower, set proxy.healthcheck.path (now " \
                   f"{proxy['healthcheck'].get('path') or '/up'}) or proxy.deploy_timeout (now {timeout_s:g}s; a Kamal " \
                   f"config's deploy_timeout)" if proxy else ""
            raise HealthCheckFailed(str(t), f"{where} did not become healthy within {timeout_s:g}s; {done} and "
                                            f"the previous version keeps serving. Last health check: "
                                            f"{text.redact(last, secrets)}. Last output: "
                                            f"{_last_output(c, cid, secrets)}{hint}")
        # The deployer's own look: often at first (an app that boots in 100 ms is seen then), then at most
        # every healthcheck interval (kamal-proxy's own checks keep that interval).
        cap = float(proxy["healthcheck"]["interval"]) if proxy else 0.2
        time.sleep(min(POLL_FIRST_S * 2 ** min(polls, 10), cap))
        polls += 1


def after_rollout(c, props: dict[str, Any], current: str, listing: list[dict[str, Any]] | None = None, *,
                  spared: Collection[str] = ()) -> set[str]:
    """Once `current` runs: only it runs (a proxied predecessor serves until its route has switched: the route
    stops it); `retain` stopped versions are kept, older ones and unused images of ours removed - and what an
    earlier run's failed create left under a pending name in any role or accessory (its clean-up failed with its
    connection: it may run, beside the version it was to replace). `listing`: the destination's containers on the
    host, all roles (listed here without it); `spared`: left to the engine's delete (an accessory's predecessor,
    which a run that goes no further puts back). Returns the IDs removed."""
    if listing is None:
        listing = c.containers(all=True, filters={"label": label_filters(props)})
    listing = [i for i in listing if i["Id"] not in spared]
    seen = [decisions.Seen.from_list(i) for i in of_role(listing, props, props["role"])]
    actions = decisions.after_rollout(seen, current, int(props.get("retain") or 5),
                                      stop_running=not props.get("proxy"))
    carry_out(c, actions, stop_timeout(props), seen)
    stale = [cid for cid in decisions.leftovers((decisions.Seen.from_list(i) for i in listing),
                                                besides_run=RUN_NONCE) if cid not in actions.remove]
    for cid in stale:
        remove_container(c, cid)
    return set(actions.remove) | set(stale)


def carry_out(c, actions: decisions.Actions, timeout: float, seen: list[decisions.Seen]) -> None:
    """Stop, then remove. A running container that goes is stopped first, with the role's stop timeout: a worker
    set aside by a same-version replacement drains as any other."""
    running = {s.id for s in seen if s.running}
    for cid in actions.stop + tuple(i for i in actions.remove if i in running and i not in actions.stop):
        c.stop(cid, timeout=timeout)
    for cid in actions.remove:
        remove_container(c, cid)


def remove_container(c, cid: str) -> None:
    """Remove a container, running or not, keeping its volumes. Gone already, or being removed right now (by the
    engine's delete of a replaced container while the rollout retires the same one) is done too."""
    import docker.errors  # loaded already: `c` is a Docker client
    try:
        c.remove_container(cid, v=False, force=True)
    except docker.errors.APIError as exc:
        gone = exc.status_code == 404 or (exc.status_code == 409 and "in progress" in str(exc.explanation or exc))
        if not gone:
            raise


def prune_images(c, props: dict[str, Any], used: set[str]) -> None:
    """Remove this destination's tagged images that no container of it (`used`: their image IDs) runs - unless
    another deploy is building on this host right now (its build may be taking their layers as its cache): then
    the next rollout prunes. `props`: any of the destination's resources on the host (its target, labels and
    lock settings)."""
    # untagged ones are build parents: they go with the image they belong to
    unused = [image for image in c.images(filters={"label": label_filters(props)})
              if [tag for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"]
              and image["Id"] not in used]
    if not unused:
        return
    try:
        with host_lock(target(props), props, f"pruning images of {props['destination']}", lock="images",
                       timeout=PRUNE_WAIT_S):
            for image in unused:
                remove_image(c, image, props)
    except LockTimeout:
        pass


def route_name(props: dict[str, Any]) -> str | None:
    """The name of an app role's route in kamal-proxy (an accessory's is not told here)."""
    if not props.get("rollout"):
        return None
    takeover = props.get("takeover")
    return naming.proxy_service(service_of(props), props["role"],
                                takeover.get("destination") if takeover else props["destination"])


class ContainerProvider(ResourceProvider):
    serialize_as_secret_always = False
    recheck_against_olds = True  # a replacement's second check looks at the host only where the first one did

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """At preview too, before anything is touched, what the host already gives others (looked up only where the
        container is new or asks for it anew; not while its host is unknown, at the first preview of hosts that come
        from other resources):
        - a host port this container is to publish that another container on the host already publishes - not found
          by the create, after the engine has removed what this replaces (an accessory goes first);
        - host names its role's route is to serve that a route of another stack or app holds in kamal-proxy - not
          found by the route's switch, after the rollout's workers have started."""
        # (labels: not yet known where the version comes from another resource)
        if not host_known(news) or not isinstance(news.get("labels"), dict):
            return CheckResult(news, [])
        return CheckResult(news, self._taken_ports(olds, news) + self._taken_host_names(olds, news))

    @staticmethod
    def _taken_ports(olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
        wanted = [p for p in news.get("ports") or [] if p.get("host_port") is not None]
        if not wanted or (olds and olds.get("ports") == news.get("ports")):
            return []
        t = target(news)
        try:
            with docker_errors(t, f"looking for what publishes the ports of {news['name']}"):
                listing = hosts.client(t).containers()
        except HostError:
            return []  # unreachable now: the create says so, or finds the port free by then
        return [CheckFailure("ports", f"host {t}: port {port} is already published by container "
                                      f"{(holder.get('Names') or ['?'])[0].lstrip('/')} of "
                                      f"{naming.describe_owner(holder.get('Labels'))}; nothing was changed. "
                                      f"Publish {news['name']} on another port, or stop that container")
                for port, holder in decisions.port_conflicts(
                    listing, wanted, lambda i: of_role([i], news, news["role"]) != [])]

    @staticmethod
    def _taken_host_names(olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
        proxy = news.get("proxy")
        if not isinstance(proxy, dict) or not news.get("rollout") or (olds and olds.get("proxy") == proxy):
            return []
        route = route_name(news)
        t = target(news)
        try:
            routes = proxy_routes_looked(t) or {}
            holders = decisions.host_holders(routes, route, proxy.get("hosts") or [],
                                             payloads.path_prefixes(proxy.get("path_prefix")))
            taken = [(name, info) for name in holders if not ours_to_take(info := route_target(t, routes[name]), news)]
        except HostError:
            return []  # unreachable now: the create says so
        return [CheckFailure("proxy", f"host {t}: {held_elsewhere(name, routes[name], info, route)}")
                for name, info in taken]

    def create(self, props: dict[str, Any]) -> CreateResult:
        t = target(props)
        c = hosts.client(t)
        name = props["name"]
        with docker_errors(t, f"creating container {name} of destination {props['destination']}"):
            listing = c.containers(all=True)  # once: the role's containers, and whoever holds the name
            role = of_role(listing, props, props["role"])
            leftovers = decisions.leftovers(decisions.Seen.from_list(i) for i in role)
            for leftover in leftovers:
                remove_container(c, leftover)  # an interrupted run's, never ready
            if props.get("rollout"):
                stop_unfinished(c, t, props, listing, [i for i in role if i["Id"] not in leftovers])
            existing = named(listing, name)
            if existing is not None and not owned(existing.get("Labels"), props):
                raise OwnershipConflict(
                    str(t), f"container {name} belongs to {naming.describe_owner(existing.get('Labels'))}; nothing "
                            f"was changed. Remove or rename that container, or deploy under another service or "
                            f"destination name.")
            cid, stopped = self._create(c, t, props, [i for i in role if i["Id"] not in leftovers],
                                        start=not standby(props))
            if existing is not None:
                if existing.get("State") == "running":  # same version, new config: the engine deletes it by ID
                    c.rename(existing["Id"], naming.replaced_name(name, existing["Id"]))
                else:  # a retained container of the version rolled back to: its successor is this one
                    c.remove_container(existing["Id"], v=False, force=True)
            c.rename(cid, name)
        if not props.get("rollout"):  # an accessory (an app role's rollout retires what it replaces)
            try:
                with docker_errors(t, f"cleaning up after {name}"):
                    after_rollout(c, props, cid, spared=stopped)
            except HostError:
                pass  # it runs and is ready: the deploy is done; the next rollout or delete cleans up again
            if props.get("exclusive") and stopped:
                from .rollout import accessory_switched  # (the rollout module imports this one)
                accessory_switched(props, cid, stopped)  # a run that goes no further puts back what it replaced
        elif not standby(props):
            from .rollout import made_ready  # (the rollout module imports this one)
            made_ready(props, cid)  # ready, unrouted: its rollout's `start` takes it, or a failed run stops it
        return CreateResult(id_=cid, outs={**props, "container_id": cid})

    def _create(self, c, t: SSHTarget, props: dict[str, Any], role: list[dict[str, Any]], *,
                start: bool = True) -> tuple[str, list[str]]:
        """The new container, started and ready (or, `start=False`, only created), and the containers stopped for
        it (`start_ready`). `role`: the role's other containers here, as listed just before."""
        exposed, bindings = payloads.port_bindings(props.get("ports") or [])
        env = {**host_shell_env(t, props), **(props.get("secret_env") or {})}
        binds = list(props.get("volumes") or []) + self._upload(t, props) + bridge_assets(t, props, role)
        host_options, container_options = payloads.run_options(props.get("options") or {})
        host_config = c.create_host_config(port_bindings=bindings or None, binds=binds or None,
                                           restart_policy=payloads.restart_policy(props["restart"]),
                                           network_mode=props.get("network") or None,
                                           log_config=payloads.log_config(props.get("logging")), **host_options)
        networking = None
        if props.get("network") and props.get("aliases"):
            networking = c.create_networking_config(
                {props["network"]: c.create_endpoint_config(aliases=list(props["aliases"]))})
        image = self._image(c, t, props)
        if naming.PROXY_NETWORK in (props.get("network"), *(props.get("extra_networks") or [])):
            # made first where the host lacks it (a new server, its kamal-proxy not started yet): Docker 20.10 refuses
            # a create on a missing network, but 29 takes it - and a connect to one - and fails only the start
            proxy_network(c, t, props)
        cid = c.create_container(
            image=image, name=naming.pending_name(props["name"], RUN_NONCE + nonce()[:4]),
            command=props.get("cmd") or None, environment=payloads.env_list(env), labels=props["labels"],
            ports=exposed or None, host_config=host_config, networking_config=networking, **container_options)["Id"]
        try:
            for extra in props.get("extra_networks") or []:
                c.connect_container_to_network(cid, extra)
        except BaseException:
            put_back(t, props, cid, [], keep=False)
            raise
        return cid, start_ready(c, t, cid, props, role, keep=False) if start else []

    @staticmethod
    def _image(c, t: SSHTarget, props: dict[str, Any]) -> str:
        """The image ID to create from: the app's pinned ID as given, or an accessory's image reference resolved
        (pulled if the host lacks it, with the stack's registry credentials when it comes from that registry) to
        its ID, so a later retag cannot change what this container runs."""
        ref = props["image"]
        if ref.startswith("sha256:"):
            return ref
        creds = props.get("registry_auth")
        use = creds if creds and ref.startswith(f"{creds.get('server')}/") else None
        return ensure_image(c, t, ref, {"username": use["username"], "password": use["password"]} if use else None,
                            props["name"])

    @staticmethod
    def _upload(t: SSHTarget, props: dict[str, Any]) -> list[str]:
        """Accessory files and directories: copied/created under the destination's state directory on the host and
        bind-mounted. Returns the binds."""
        if not props.get("files") and not props.get("directories"):
            return []
        base = f"{hostfiles.home(t)}/{props['state_dir']}"
        binds = []
        for i, f in enumerate(props.get("files") or []):
            # by content (and mode and owner): the container this one replaces keeps its own file, should it have
            # to start again
            held = "".join(f"-{f[k].replace(':', '.')}" for k in ("mode", "owner") if f.get(k))
            remote = f"{base}/files/{i}-{f['hash'].split(':')[-1][:12]}{held}-{Path(f['local']).name}"
            data = f["content"].encode() if f.get("content") is not None else Path(f["local"]).read_bytes()
            hostfiles.write_file(t, remote, data, mode=int(f["mode"], 8) if f.get("mode") else 0o644)
            if f.get("owner"):
                code, out = hosts.run(t, ["chown", f["owner"], remote], doing=f"setting the owner of {f['target']}")
                if code != 0:
                    raise HostError(str(t), f"accessory file {f['target']}: chown {f['owner']} failed ({out}): "
                                            f"the SSH user may not give files away - drop owner, or deploy as root")
            binds.append(f"{remote}:{f['target']}:{payloads.mount_options('ro', f.get('options'))}")
        for d in props.get("directories") or []:
            hostfiles.make_dir(t, f"{base}/{d['name']}")
            binds.append(f"{base}/{d['name']}:{d['target']}:{payloads.mount_options('rw', d.get('options'))}")
        return binds

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if not isinstance(news.get("image"), str) or news["image"] == UNKNOWN:
            # A preview while the image resource updates in place (a new host to ship to, new connection settings):
            # its ID is not known yet, but an update never changes it; a new build comes with a new version, which
            # changes this container's name and labels anyway.
            news = {**news, "image": olds.get("image")}
        if "stop_timeout" not in olds:  # recorded by an earlier release: no change of its own (the next version's
            # create stops this container with the stop timeout it has then)
            news = {k: v for k, v in news.items() if k != "stop_timeout"}
        # Create before delete, accessories too: an accessory (a database) never runs twice on the same data - its
        # create stops the old one just before the new one starts and starts it again if the new one is not ready
        # (`exclusive`), so a failed change leaves the old one as it was, not removed first.
        return exact_diff(_files_key(olds), _files_key(news), replace=REPLACE, update=UPDATE)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        t = target(news)
        c = hosts.client(t)
        handed_over: list[str] = []
        with docker_errors(t, f"updating container {news['name']}"):
            if olds.get("restart") != news["restart"]:
                c.update_container(id_, restart_policy=payloads.restart_policy(news["restart"]))
            if news.get("running") and not c.inspect_container(id_)["State"]["Running"]:
                if news.get("exclusive"):  # an accessory put back by a run that went no further takes over again
                    listing = c.containers(all=True)
                    handed_over = start_ready(c, t, id_, news, of_role(listing, news, news["role"]), keep=True)
                    take_name(c, id_, news["name"], (named(listing, news["name"]) or {}).get("Id"))
                else:
                    c.start(id_)
                    wait_ready(c, t, id_, news)
        if handed_over:  # what it took over from left the state in the run before: nothing puts it back now
            try:
                with docker_errors(t, f"cleaning up after {news['name']}"):
                    after_rollout(c, news, id_)
            except HostError:
                pass  # it runs and is ready; the next clean-up removes what is left
        return UpdateResult(outs={**news, "container_id": id_})

    @staticmethod
    def observed(id_: str, olds: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """What the diff compares against, and why it differs from the recorded outputs: those, but for an
        accessory's that a failed run stopped again (`put_accessory_back`), looked up on its host: `running` false,
        so this run starts it again (an update, before any role's new container is made). Unreachable now: as
        recorded (the run says so later)."""
        if not olds.get("exclusive") or not olds.get("running") or not host_known(olds):
            return olds, ""
        t = target(olds)
        try:
            with docker_errors(t, f"inspecting container {olds.get('name')}"):
                info = hosts.or_none(hosts.client(t).inspect_container, id_)
        except HostError:
            return olds, ""
        if info is None or info["State"]["Running"]:
            return olds, ""
        return {**olds, "running": False}, (
            f"host {t}: container {olds.get('name')} is stopped (a failed deploy put back the one it replaced, or it "
            f"was stopped by hand): this update starts it")

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        t = target(props)
        with docker_errors(t, f"inspecting container {props.get('name')}"):
            info = hosts.or_none(hosts.client(t).inspect_container, id_)
        if info is None:
            return ReadResult(id_="", outs={})
        running = bool(info["State"]["Running"])
        if standby(props) and info["State"].get("Status") == "created":
            running = bool(props.get("running"))  # never started: its rollout starts it, a refresh must not
        outs = {**props, "running": running, "name": info["Name"].lstrip("/"),
                "restart": info["HostConfig"]["RestartPolicy"]["Name"] or "no"}
        if props["image"].startswith("sha256:"):
            outs["image"] = info["Image"]  # another image than the pinned one is drift
        return ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Replaced (a newer container of this role runs here): stop it and keep it for rollback. Otherwise -
        destroy, or the role left the config - remove it and every retained container of the role here."""
        from .rollout import replaced_gone
        replaced_gone(id_)  # (a replaced accessory's delete: the run got to its end)
        t = target(props)
        c = hosts.client(t)
        with docker_errors(t, f"removing container {props['name']}"):
            role = ours(c, props, role=props["role"])
            if any(i["Id"] == id_ for i in role):
                seen = [decisions.Seen.from_list(i) for i in role]
                retain = int(props.get("retain") or 5)
                actions = decisions.on_delete(seen, id_, retain)
                running = {s.id for s in seen if s.running}
                if props.get("proxy") and running & {*actions.stop, *actions.remove} \
                        and not was_route_removed(t, route_name(props)):
                    # the route's switch retires what it served: a failed switch leaves the route on its container
                    # (running: a stopped one serves nothing), and the engine may run this delete (pending from
                    # that run) before the route's next switch; a route this run removed (a destroy, the role left
                    # the config) serves nothing
                    actions = decisions.on_delete(seen, id_, retain, decisions.routed(
                        (proxy_routes(t) or {}).values(), seen))
                carry_out(c, actions, stop_timeout(props), seen)
                if id_ not in actions.remove:
                    return
            elif hosts.or_none(c.inspect_container, id_) is not None:  # not ours: labels never change, so only
                # a state edit leads here; gone is fine
                raise OwnershipConflict(str(t), f"container {id_[:12]} is no longer labeled as this stack's; it "
                                                f"was left alone. Remove it from the state with `pulumi state "
                                                f"delete` if it is not yours.")
        if props.get("env_file"):  # written by earlier releases
            hostfiles.remove_file(t, props["env_file"])
