"""What to do on a host, decided from facts read off it: pure functions, facts in, actions out.

The providers read the facts (container lists, inspect output, `kamal-proxy list`), call these, and carry out the
answer. No pulumi, docker or paramiko here; tested with data (tests/unit/test_decisions.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from . import naming

# -- what changed ---------------------------------------------------------------------------------------------------------


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


def same(old: Any, new: Any) -> bool:
    """Whether two recorded values are the same, as `diff` compares them."""
    return _norm(old) == _norm(new)


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


# -- containers of one role on one host -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One container of this stack's role on a host, as the daemon lists it."""
    id: str
    name: str
    version: str
    created: int  # seconds
    running: bool
    started: bool = True  # false while only created: a worker the rollout has not started yet

    @classmethod
    def from_list(cls, item: Mapping[str, Any]) -> "Seen":
        names = item.get("Names") or ["/"]
        return cls(id=item["Id"], name=names[0].lstrip("/"), version=(item.get("Labels") or {}).get(
            naming.VERSION, ""), created=int(item.get("Created") or 0), running=item.get("State") == "running",
                   started=item.get("State") != "created")

    @property
    def aside(self) -> bool:
        """Moved aside by a replacement of the same version, or never finished (an interrupted create)."""
        return naming.is_aside(self.name)


@dataclass(frozen=True)
class Actions:
    stop: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


def leftovers(seen: Iterable[Seen], *, besides_run: str | None = None) -> tuple[str, ...]:
    """Containers an interrupted create left behind (still under their pending name): they never became ready, so
    nothing serves from them and no state knows them. `besides_run`: only those an earlier run left (a create
    whose clean-up failed with its connection), not the ones this run is creating."""
    return tuple(s.id for s in seen if naming.is_pending(s.name)
                 and (besides_run is None or not naming.of_run(s.name, besides_run)))


def after_rollout(seen: Iterable[Seen], current: str, retain: int, *, stop_running: bool = True) -> Actions:
    """Once `current` runs: stop every other running container of the role (the one it replaces, and any orphan of
    an interrupted run), remove the ones moved aside and older versions beyond `retain`, keep `retain` stopped
    versions for rollback (newest first). With `stop_running=False` the running ones are left to the engine's
    delete (a proxied predecessor serves until the route has switched)."""
    others = sorted((s for s in seen if s.id != current), key=lambda s: s.created, reverse=True)
    now = {s.id: s for s in seen if s.id == current}
    version = now[current].version if current in now else None
    stop, remove, kept = [], [], 0
    for s in others:
        if s.running and not stop_running:  # serves until its route switched: the engine's delete stops it
            kept += 0 if s.aside else 1
            continue
        if s.aside or s.version == version:
            remove.append(s.id)
            continue
        if s.running:
            stop.append(s.id)
        if kept < retain:
            kept += 1
        else:
            remove.append(s.id)
    return Actions(stop=tuple(stop), remove=tuple(remove))


def _started_key(started_at: str) -> tuple[str, str]:
    """Docker's StartedAt (RFC 3339, its nanoseconds with trailing zeros cut) in an order that compares."""
    whole, _, fraction = started_at.rstrip("Z").partition(".")
    return whole, fraction.ljust(9, "0")


def unfinished(started: Mapping[str, str], routed: Iterable[str] | None = None,
               served: Iterable[str] = ()) -> tuple[str, ...]:
    """Of a role's running containers on a host ({id: StartedAt}), those an interrupted rollout left next to the one
    of the version the destination runs (one Ctrl-C, or a cut connection, after the rollout started them): a new
    rollout stops them before it begins, so whether it succeeds or fails, one version of the role runs. A proxied
    role's (`routed`: the ones its route targets) are the unrouted ones, if the route targets one of them. A
    worker's: all but one - of the version the destination's routes serve (`served`: those of the worker's), if
    one is, else the one running longest (the interrupted rollout's started later)."""
    if len(started) < 2:
        return ()
    if routed is not None:
        routed = set(routed) & set(started)
        return tuple(i for i in started if i not in routed) if routed else ()
    served = set(served)
    candidates = [i for i in started if i in served] or list(started)
    keep = min(candidates, key=lambda i: _started_key(started[i]))
    return tuple(i for i in started if i != keep)


def on_delete(seen: Iterable[Seen], deleted: str, retain: int, serving: Iterable[str] = ()) -> Actions:
    """The engine deletes a container. If a newer container of the role exists, this one was replaced: stop it and
    keep it for rollback (or remove it if it was moved aside or is beyond retention). If none exists, the role left
    the config or the stack is destroyed: remove it and every retained container of the role. While every newer one
    is only created (its rollout failed before starting it), or moved aside while this one was put back in its
    place (a failed run's, `providers.rollout`), this one still runs the role and is left alone. A
    container a route still targets (`serving`) is neither stopped nor removed: the route's switch retires it (a
    failed switch left the route on it, and the engine may run this delete before the route's next switch)."""
    seen = list(seen)
    serving = set(serving)
    this = next((s for s in seen if s.id == deleted), None)
    if this is None:
        return Actions()
    successors = [s for s in seen if s.id != deleted and not s.aside and s.created >= this.created]
    if not successors:
        if this.running and not this.aside and any(naming.is_replaced(s.name) and s.created > this.created
                                                   for s in seen):
            return Actions()  # a failed run put it back in place of its newer successor (an accessory's): it serves
        return Actions(stop=(), remove=tuple(s.id for s in seen if s.id not in serving))
    if this.running and not any(s.started for s in successors):
        return Actions()  # its successor was never started (a rollout failed in another role): it still serves
    newest = max(successors, key=lambda s: s.created)
    actions = after_rollout(seen, newest.id, retain)
    stop = tuple(i for i in actions.stop if i not in actions.remove and i not in serving)
    return Actions(stop=stop, remove=tuple(i for i in actions.remove if i not in serving))


def port_holders(items: Iterable[Mapping[str, Any]], wanted: set[int], exclude: str) -> list[str]:
    """Running containers (of this role) that publish a host port the new container needs."""
    if not wanted:
        return []
    return [i["Id"] for i in items if i["Id"] != exclude and i.get("State", "running") == "running"
            and wanted & {p.get("PublicPort") for p in i.get("Ports") or []}]


def port_conflicts(items: Iterable[Mapping[str, Any]], wanted: Iterable[Mapping[str, Any]],
                   replaced: Callable[[Mapping[str, Any]], bool]) -> list[tuple[int, Mapping[str, Any]]]:
    """(host port, holder) for each published port a new container needs (`wanted`: its port mappings) that a
    running container on the host (`items`, a listing) already publishes - unless `replaced` says the holder is one
    this container takes over from (its role's previous version: the rollout hands the port over)."""
    def overlap(a: str | None, b: str | None) -> bool:
        return not a or not b or a in ("0.0.0.0", "::") or b in ("0.0.0.0", "::") or a == b
    found = []
    for want in wanted:
        if want.get("host_port") is None:
            continue
        for item in items:
            if item.get("State", "running") != "running" or replaced(item):
                continue
            if any(int(p.get("PublicPort") or 0) == int(want["host_port"]) and p.get("Type", "tcp") ==
                   want.get("protocol", "tcp") and overlap(p.get("IP"), want.get("host_ip"))
                   for p in item.get("Ports") or []):
                found.append((int(want["host_port"]), item))
                break
    return found


# -- readiness ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: str  # "crashed", "unhealthy", "healthy", "running" (no health check of its own), "starting"
    detail: str = ""


def container_verdict(state: Mapping[str, Any]) -> Verdict:
    """How a just-started container is doing, from `docker inspect`'s State. A container that exited, or that
    Docker is restarting (restart policy), or that already restarted once, has crashed."""
    restarts = int(state.get("RestartCount") or 0)
    if not state.get("Running") or state.get("Restarting") or restarts:
        again = f", restarted {restarts} time{'s' if restarts != 1 else ''}" if restarts else ""
        return Verdict("crashed", f"exited with code {state.get('ExitCode')}{again}")
    health = state.get("Health")
    if health:
        log = health.get("Log") or []
        last = (log[-1].get("Output") or "").strip()[:200] if log else ""
        detail = f"health status {health.get('Status')}" + (f", last check: {last}" if last else "")
        if health.get("Status") == "healthy":
            return Verdict("healthy", detail)
        if health.get("Status") == "unhealthy":
            return Verdict("unhealthy", detail)
        return Verdict("starting", detail)
    return Verdict("running")


# -- images -------------------------------------------------------------------------------------------------------


def image_conflict(existing: Mapping[str, str], wanted: Mapping[str, str], version: str) -> str | None:
    """Whether an image already tagged for this version may serve it. A version names one build: the retained
    image of a version is reused whatever the checkout holds now (a rollback), but a version that already names a
    build made with other builder settings (Dockerfile, args, target, or another promoted source) is refused.
    Returns None (reuse) or the reason to refuse."""
    if existing.get(naming.BUILD_LABEL) == wanted.get(naming.BUILD_LABEL):
        return None
    if naming.BUILD_LABEL not in existing:  # built by an earlier release, before builds were fingerprinted
        had, has = existing.get(naming.SOURCE_LABEL) or "", wanted.get(naming.SOURCE_LABEL) or ""
        if had == has or had.split(":")[0] != has.split(":")[0]:  # the same, or hashed another way: not comparable
            return None
        return f"version {version} already names another build (made from other sources)"
    return (f"version {version} already names a build made with other builder settings (Dockerfile, args, target "
            f"or promoted source)")


# -- kamal-proxy ----------------------------------------------------------------------------------------------------

_CELL = re.compile(r"\x1b\[[0-9;]*m(.*?)\x1b\[0m")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COLUMNS = ("service", "host", "path", "target", "state", "tls")


def parse_proxy_list(listing: str) -> dict[str, dict[str, str]]:
    """`kamal-proxy list`: a table whose every cell is wrapped in its own colour escape (even without a terminal),
    so cells are read exactly, whatever their width; without escapes, columns split on runs of spaces."""
    out: dict[str, dict[str, str]] = {}
    lines = [ln for ln in listing.splitlines() if ln.strip()]
    for line in lines[1:]:
        cells = _CELL.findall(line)
        if len(cells) < len(_COLUMNS):
            cells = _ANSI.sub("", line).split()
            if len(cells) == len(_COLUMNS) - 1:  # an empty Path column
                cells = cells[:2] + [""] + cells[2:]
        if cells and cells[0].strip():
            row = dict(zip(_COLUMNS, (c.strip() for c in cells)))
            out[row["service"]] = row
    return out


PROXY_DEPLOY_MARGIN_S = 30  # the exec itself, the switch, and a busy host


def proxy_deploy_wait(proxy: Mapping[str, Any]) -> float:
    """How long `kamal-proxy deploy` may run (silently): its health checks of the new target (`deploy_timeout`),
    then draining the old one (`drain_timeout`), and a margin. The channel it runs on waits that long."""
    return float(proxy["deploy_timeout"]) + float(proxy["drain_timeout"]) + PROXY_DEPLOY_MARGIN_S


def upstream_container(target: str) -> str:
    """The container a route's target names (`<container>:<port>`)."""
    return target.split(",")[0].rsplit(":", 1)[0]


def upstream_port(target: str) -> str:
    """The port a route's target names (`<container>:<port>`; empty without one)."""
    first = target.split(",")[0]
    return first.rsplit(":", 1)[1] if ":" in first else ""


def names_container(ref: str, container_id: str | None, name: str | None) -> bool:
    """Whether a route target's container (`ref`: a name, or an ID or its 12-character prefix, as `deploy --target`
    took it) is the container with this ID or name."""
    if not ref:
        return False
    return ref == name or (bool(container_id) and len(ref) >= 12 and str(container_id).startswith(ref))


def routed(routes: Iterable[Mapping[str, str]], seen: Iterable[Seen]) -> tuple[str, ...]:
    """Of containers `seen`, those a route (`kamal-proxy list` rows) targets."""
    refs = [t.rsplit(":", 1)[0] for r in routes for t in (r.get("target") or "").split(",") if t]
    return tuple(s.id for s in seen if any(names_container(ref, s.id, s.name) for ref in refs))


def _bindings(hosts: Iterable[str], paths: Iterable[str]) -> set[tuple[str, str]]:
    """kamal-proxy's (host, path prefix) pairs of a route: no host is every host (`*` in its list), no path `/`."""
    hosts = [h for h in hosts if h and h != "*"] or [""]
    paths = [p if p.startswith("/") else f"/{p}" for p in paths if p] or ["/"]
    return {(h, p) for h in hosts for p in paths}


def host_holders(routes: Mapping[str, Mapping[str, str]], service: str, hosts: Iterable[str],
                 path_prefixes: Iterable[str]) -> tuple[str, ...]:
    """The other routes (`kamal-proxy list`) holding a host name and path prefix that route `service` needs:
    kamal-proxy refuses to deploy it while they do."""
    wanted = _bindings(hosts, list(path_prefixes) or [""])
    return tuple(sorted(name for name, r in routes.items() if name != service
                        and _bindings((r.get("host") or "").split(","), (r.get("path") or "").split(",")) & wanted))


def route_binding(route: Mapping[str, str]) -> dict[str, Any]:
    """What a listed route serves (host names, path prefix, TLS), as `proxy` settings for `kamal-proxy deploy`."""
    hosts = [h for h in (route.get("host") or "").split(",") if h and h != "*"]
    paths = [p for p in (route.get("path") or "").split(",") if p not in ("", "/")]
    return {"hosts": hosts, "path_prefix": (paths[0] if len(paths) == 1 else paths) or None,
            "ssl": route.get("tls") == "yes"}


def route_in_sync(target: str, container_id: str | None, upstream: str) -> bool:
    """Whether a route's live target (`kamal-proxy list`) is the container recorded for it: by ID, or - recorded by
    an earlier release, which routed by name - by the name in `upstream` (`<name>:<port>`)."""
    return names_container(upstream_container(target), container_id, upstream.rsplit(":", 1)[0])


def reclaimable(target_labels: Mapping[str, str] | None) -> bool:
    """A route this stack made, pointed since by hand (or by Kamal) at a container that no stack of this deployer
    owns, is drift: this stack switches it back. One another stack owns is that stack's: never taken."""
    return naming.OWNER_LABEL not in (target_labels or {})


# -- taking over a Kamal deployment -----------------------------------------------------------------------------


def kamal_app(labels: Mapping[str, str] | None, service: str, role: str, destination: str | None) -> bool:
    """Whether a container is Kamal's app container of this service, role and (Kamal's) destination: Kamal labels
    it `service`, `role` and `destination` (empty without one) and no deployer of this project's ownership label."""
    labels = labels or {}
    return naming.OWNER_LABEL not in labels and labels.get(naming.SERVICE) == service and \
        labels.get(naming.ROLE) == role and (labels.get(naming.DESTINATION) or "") == (destination or "")


def route_takeover(target_labels: Mapping[str, str] | None, takeover: Mapping[str, Any] | None,
                   service: str) -> bool:
    """Whether a route whose target is not this stack's may be deployed over: only when the stack takes over
    Kamal's deployment (`takeover`: Kamal's `destination` and the route's `role`) and the target is Kamal's app
    container of the same service, role and destination. kamal-proxy's deploy then switches and drains."""
    return bool(takeover) and kamal_app(target_labels, service, takeover["role"], takeover.get("destination"))


def kamal_to_stop(items: Iterable[Mapping[str, Any]], takeover: Mapping[str, Any] | None,
                  service: str) -> tuple[str, ...]:
    """After this stack's container serves (its route switched, or it is ready), Kamal's running app containers of
    the same service, role and destination on the host are stopped - never removed, so Kamal can take them back."""
    if not takeover:
        return ()
    return tuple(i["Id"] for i in items if i.get("State") == "running"
                 and kamal_app(i.get("Labels"), service, takeover["role"], takeover.get("destination")))
