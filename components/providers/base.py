"""What the providers share: reading a resource's host from its props, ownership, image removal, exact diffs that
tell a host change (replace) from a change of how we reach it (update)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

from pulumi.dynamic import DiffResult

from .. import decisions, hostlock, hosts, naming
from ..errors import DockerError
from ..hosts import SSHTarget, docker_errors

STOP_TIMEOUT_S = 10
DEFAULT_LOCK_TIMEOUT_S = 120
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def target(props: dict[str, Any], key: str = "target") -> SSHTarget:
    return SSHTarget.from_dict(props[key])


def owned(labels: dict[str, str] | None, props: dict[str, Any]) -> bool:
    """Whether an object's labels say it is this stack's, of this destination and service."""
    return naming.owned_by(labels, props["owner"], props["destination"]) and \
        (labels or {}).get(naming.SERVICE) == service_of(props)


def service_of(props: dict[str, Any]) -> str:
    return props["labels"][naming.SERVICE]


def label_filters(props: dict[str, Any], **more: str) -> list[str]:
    """Docker label filters for this destination's objects of this service (ownership is then checked with
    `owned`, which also accepts labels written before the organization left the ownership label)."""
    return [f"{naming.DESTINATION}={props['destination']}", f"{naming.SERVICE}={service_of(props)}",
            *(f"{k}={v}" for k, v in more.items())]


def ours(c, props: dict[str, Any], **more: str) -> list[dict[str, Any]]:
    """This stack's containers of this destination and service on the host (all states), newest first."""
    items = c.containers(all=True, filters={"label": label_filters(props, **more)})
    return [i for i in items if owned(i.get("Labels"), props)]


def of_role(items: Iterable[dict[str, Any]], props: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Of a container listing: this stack's containers of `role` (of this destination and service)."""
    return [i for i in items if (i.get("Labels") or {}).get(naming.ROLE) == role and owned(i.get("Labels"), props)]


def named(items: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Of a container listing: the container called `name`, whoever's it is."""
    return next((i for i in items if f"/{name}" in (i.get("Names") or [])), None)


def takeover_candidates(c, props: dict[str, Any], *, stopped: bool = False) -> list[dict[str, Any]]:
    """The host's containers of the service and role a takeover of Kamal's deployment (`takeover` in props) concerns
    (`stopped`: those too), for `decisions` to tell Kamal's app containers among them; none without a takeover."""
    takeover = props.get("takeover")
    if not takeover:
        return []
    return c.containers(all=stopped, filters={"label": [f"{naming.SERVICE}={service_of(props)}",
                                                    f"{naming.ROLE}={takeover['role']}"]})


def stop_kamal(c, props: dict[str, Any]) -> None:
    """Taking over a Kamal deployment (`takeover` in props): stop Kamal's running app containers of this service,
    role and destination on the host, once this stack's container serves. Stopped, never removed: Kamal can take
    them back (`kamal rollback`)."""
    for cid in decisions.kamal_to_stop(takeover_candidates(c, props), props.get("takeover"), service_of(props)):
        c.stop(cid, timeout=STOP_TIMEOUT_S)


def each_at_once(work: dict[K, V], fn: Callable[[V], T], at_once: int | None = None) -> dict[K, T | Exception]:
    """`fn` on each value of `work` (one per host: each waits on its host far more than on this process), `at_once`
    at a time (None: all); key -> its result or the exception it raised."""
    def run(item: V) -> T | Exception:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return exc
    if not work:
        return {}
    with ThreadPoolExecutor(max_workers=min(at_once or len(work), len(work))) as pool:
        futures = {key: pool.submit(run, item) for key, item in work.items()}
    return {key: f.result() for key, f in futures.items()}


def on_each(targets: list[dict[str, Any]], fn: Callable[[SSHTarget], T], at_once: int = 8) -> list[T]:
    """`fn` on each host of `targets` (SSH target dicts), `at_once` hosts at a time; results in order. Every host
    is tried; the first failure is raised once all have finished."""
    results = list(each_at_once({i: SSHTarget.from_dict(t) for i, t in enumerate(targets)}, fn, at_once).values())
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def proxy_routes(t: SSHTarget) -> dict[str, dict[str, str]] | None:
    """kamal-proxy's routes on the host, or None when it does not answer (not started yet, or just removed by a
    destroy)."""
    try:
        code, out = hosts.exec_in(t, naming.PROXY_CONTAINER, ["kamal-proxy", "list"])
    except DockerError:  # no such container, or not running: the daemon itself answered
        return None
    return decisions.parse_proxy_list(out) if code == 0 else None


_looks: dict[SSHTarget, Future] = {}  # a look at kamal-proxy's routes begun ahead, until a check takes it
_looked: set[SSHTarget] = set()  # every host a look was begun ahead on (one plugin process serves one run)
_looks_lock = threading.Lock()


def proxy_routes_looked(t: SSHTarget) -> dict[str, dict[str, str]] | None:
    """`proxy_routes` for a check: the engine checks resources one at a time, so the first check that must look at
    its host's routes (a new container's, at a fleet's first deploy) begins the same look on every other host this
    run reaches, and a later check takes its host's look as it is - begun moments before, by the same run. Each
    look is taken once; a second one on the same host looks again."""
    with _looks_lock:
        for other in (t, *hosts.reached()):
            if other not in _looked:
                _looked.add(other)
                _looks[other] = hosts.ahead(proxy_routes, other)
        look = _looks.pop(t, None)
    return proxy_routes(t) if look is None else look.result()


_removed_routes: set[tuple[str, str]] = set()  # (host, route) this run removed and has not switched again since
_removed_routes_lock = threading.Lock()


def route_removed(t: SSHTarget, name: str) -> None:
    """This run removed route `name` on host `t` (or found it gone, or serving another's container): it routes none
    of this stack's containers (one plugin process serves one run)."""
    with _removed_routes_lock:
        _removed_routes.add((t.host, name))


def route_switched(t: SSHTarget, name: str) -> None:
    """This run switched route `name` on host `t`: it serves again."""
    with _removed_routes_lock:
        _removed_routes.discard((t.host, name))


def was_route_removed(t: SSHTarget, name: str | None) -> bool:
    """Whether route `name` on host `t` is one this run removed last (`route_removed`, not switched since)."""
    with _removed_routes_lock:
        return name is not None and (t.host, name) in _removed_routes


def route_target(t: SSHTarget, route: dict[str, str] | None) -> dict[str, Any] | None:
    """The container a route (`kamal-proxy list`) targets (inspect output), or None (no route, or it is gone)."""
    if not route or not route.get("target"):
        return None
    upstream = decisions.upstream_container(route["target"])
    with docker_errors(t, f"inspecting container {upstream}, which a kamal-proxy route targets"):
        return hosts.or_none(hosts.client(t).inspect_container, upstream)


def ours_to_take(info: dict[str, Any] | None, props: dict[str, Any]) -> bool:
    """Whether a route that targets container `info` is this stack's route of this role (two roles never share host
    names), whose host names this role's route may take over; any other route's are not ours to take."""
    labels = (info or {}).get("Config", {}).get("Labels") or {}
    return info is not None and naming.owned_by(labels, props["owner"], props["destination"]) \
        and labels.get(naming.ROLE) == props.get("role", labels.get(naming.ROLE))


def held_elsewhere(name: str, route: dict[str, str], info: dict[str, Any] | None, service: str) -> str:
    """Why route `service` cannot have its host names: route `name`, which serves container `info`, holds them."""
    labels = (info or {}).get("Config", {}).get("Labels") or {}
    whose = f"container {info['Name'].lstrip('/')} of {naming.describe_owner(labels)}" if info else \
        f"{decisions.upstream_container(route.get('target') or '')}, which no longer exists"
    return (f"kamal-proxy route {name} holds the host names of route {service} and serves {whose}; nothing was "
            f"changed. Use other proxy hosts, or remove that route (`docker exec {naming.PROXY_CONTAINER} "
            f"kamal-proxy remove {name}`) if it is no one's.")


def find(c, name: str) -> dict[str, Any] | None:
    return named(c.containers(all=True, filters={"name": f"^/{name}$"}), name)


def ensure_proxy_network(c) -> None:
    """The `kamal` network, exactly one (Docker allows two of one name, which breaks every later lookup). Call it
    under the exclusive host lock."""
    if not _has_proxy_network(c):
        c.create_network(naming.PROXY_NETWORK, driver="bridge")


def _has_proxy_network(c) -> bool:
    return any(n["Name"] == naming.PROXY_NETWORK for n in c.networks(names=[naming.PROXY_NETWORK]))


def proxy_network(c, t: SSHTarget, props: dict[str, Any]) -> None:
    """The `kamal` network for a container that joins it, made where the host lacks it - a new server, before
    kamal-proxy first starts there (a destination's containers do not wait for its proxy) - under the exclusive
    host lock."""
    if not _has_proxy_network(c):
        with host_lock(t, props, f"creating the {naming.PROXY_NETWORK} network"):
            ensure_proxy_network(c)


def health_answer(t: SSHTarget, info: dict[str, Any], network: str, proxy: dict[str, Any]
                  ) -> tuple[int | None, str] | None:
    """What a container (`info`: its inspect output) answers on its proxy health check path, asked from its host
    on `network` (`hosts.http_probe`); None when it has no address there (it does not run)."""
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(network) or {}).get("IPAddress")
    if not address:
        return None
    hc = proxy["healthcheck"]
    return hosts.http_probe(t, address, int(proxy["app_port"]), hc["path"], float(hc["timeout"]))


def host_lock(t: SSHTarget, props: dict[str, Any], doing: str, *, shared: bool = False, lock: str = "host",
              timeout: float | None = None):
    """One of the host's locks (`hostlock.LOCKS`), taken for this stack: under its `lock` settings (stack name and
    `lock_timeout`) where the props carry them, else its owner and the default wait."""
    settings = props.get("lock") or {}
    return hostlock.held(t, stack=settings.get("stack") or props.get("owner") or "?", doing=doing, shared=shared,
                         lock=lock, timeout=timeout if timeout is not None
                         else float(settings.get("timeout") or DEFAULT_LOCK_TIMEOUT_S))


def ensure_image(c, t: SSHTarget, ref: str, creds: dict[str, str] | None, doing: str) -> str:
    """The ID of image `ref` on the host, pulled first if the host lacks it (a new server has no image at all).
    The pull sends `creds` (the stack's registry login) or explicitly none: docker-py would otherwise send the
    operator's own login for that registry from the deploying machine's Docker config."""
    image = hosts.or_none(c.inspect_image, ref)
    if image is not None:
        return image["Id"]
    import docker.errors  # loaded already: `c` is a Docker client
    try:
        _, error = stream_errors(c.pull(ref, stream=True, decode=True, auth_config=dict(creds or {})))
    except docker.errors.APIError as exc:  # current engines refuse at once, older ones in the stream
        error = exc.explanation or str(exc)
    if error:
        hint = ": check the registry's username and password" if auth_error(error) else ""
        raise DockerError(str(t), f"pulling {ref} for {doing} failed: {error}{hint}")
    return c.inspect_image(ref)["Id"]


def auth_error(error: str) -> bool:
    return any(w in error.lower() for w in ("unauthorized", "authentication required", "denied"))


def remove_image(c, image: dict[str, Any], props: dict[str, Any]) -> None:
    """Remove one of this destination's images (`image`: its entry in the daemon's image list - ID, tags, labels):
    its tags, then the image and its build parents, unless removing its last tag took them already. Never an image
    whose labels say another stack or destination owns it; never one a container still uses."""
    if not owned(image.get("Labels"), props):
        return
    try:
        gone = False
        for ref in [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]:
            # the last reference also deletes the image and its build parents
            answer = c.remove_image(ref)
            gone = isinstance(answer, list) and any(a.get("Deleted") == image["Id"] for a in answer)
        if not gone:
            c.remove_image(image["Id"])
    except Exception as exc:
        # used by a container (409), gone with its last tag (404), or a build parent another destination's removal
        # took at the same moment: fine, unless this image is still there
        if getattr(exc, "status_code", None) not in (404, 409) and hosts.or_none(c.inspect_image, image["Id"]):
            raise


def remove_build_leftovers(c, props: dict[str, Any], keep: set[str]) -> None:
    """Once this destination's images on the host are gone: the untagged images with its labels that the builder
    left (build steps no image is built on any more, a rebuild's predecessor under a tag it took over) - leaves
    first, as the daemon leaves their parents; never one in `keep`, another stack's or service's, or one a container
    or another image uses (the daemon refuses those). The builder adds the labels one step each, in their order, so
    its first step carries the destination alone: listed by it. Listed once: a step whose every child went is
    removed next. (Under the host's images lock: no build is under way here.)"""
    every = {i["Id"]: i for i in c.images(all=True,
                                          filters={"label": [f"{naming.DESTINATION}={props['destination']}"]})}
    children: dict[str, int] = {}
    for image in every.values():
        children[image.get("ParentId")] = children.get(image.get("ParentId"), 0) + 1

    def leftover(i: dict[str, Any]) -> bool:
        labels = i.get("Labels") or {}
        return i["Id"] not in keep and not children.get(i["Id"]) \
            and not [r for r in i.get("RepoTags") or [] if r != "<none>:<none>"] \
            and labels.get(naming.SERVICE, service_of(props)) == service_of(props) \
            and (naming.OWNER_LABEL not in labels or owned(labels, props))

    todo, gone = [i for i in every.values() if leftover(i)], set()
    while todo:
        deleted = _deleted(c, todo.pop()["Id"]) - gone  # with what the daemon deleted with it
        gone |= deleted
        for image_id in deleted:
            parent = every.get(every.get(image_id, {}).get("ParentId"))
            if parent is not None:
                children[parent["Id"]] -= 1
                if parent["Id"] not in gone and leftover(parent):
                    todo.append(parent)


def _deleted(c, image_id: str) -> set[str]:
    """Remove an image: the IDs that went (it and any parents the daemon took with it; it alone when it was gone
    already), none when it is in use (409: by a container, or another image built on it)."""
    try:
        answer = c.remove_image(image_id)
    except Exception as exc:
        code = getattr(exc, "status_code", None)
        if code == 404:
            return {image_id}
        if code == 409:
            return set()
        raise
    return {a["Deleted"] for a in answer or [] if isinstance(a, dict) and a.get("Deleted")} or {image_id}


def removed(remove: Callable[..., Any], *args: Any) -> bool:
    """A Docker removal (`c.remove_image`, `c.remove_volume`): whether it removed the object - not when it is in use
    (409: by a container, or another image built on it) or gone already (404)."""
    try:
        remove(*args)
    except Exception as exc:
        if getattr(exc, "status_code", None) not in (404, 409):
            raise
        return False
    return True


def stream_errors(lines: Iterable[dict[str, Any]]) -> tuple[list[str], str | None]:
    """(log lines, error) from a docker build/push/pull JSON stream."""
    log, error, _ = stream_result(lines)
    return log, error


def stream_result(lines: Iterable[dict[str, Any]]) -> tuple[list[str], str | None, str | None]:
    """(log lines, error, digest) from a docker build/push/pull JSON stream; a push reports the digest the registry
    stored (its `aux` record), which is what other hosts pull - the daemon's own RepoDigests may name another one
    (an image index, on the containerd image store)."""
    log: list[str] = []
    digest = error = None
    for chunk in lines:  # read to its end even after an error: a response left half-read keeps its channel
        if "error" in chunk:
            error = error or (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            continue
        if isinstance(chunk.get("aux"), dict) and chunk["aux"].get("Digest"):
            digest = chunk["aux"]["Digest"]
        if "stream" in chunk and chunk["stream"].strip():
            log.append(chunk["stream"].rstrip())
    return log, error, digest


def nonce() -> str:
    return uuid.uuid4().hex[:8]


RUN_NONCE = nonce()  # this process's run (one plugin process serves one run): the start of its pending names' nonces


# -- diffs --------------------------------------------------------------------------------------------------------

def _split_targets(props: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Each SSH target becomes its host (whose change moves the object: replace) and how we reach it (user, port,
    keys, known_hosts, policy: a change there moves nothing: update)."""
    out = dict(props)
    for key in keys:
        value = props.get(key)
        if isinstance(value, dict):
            out[key] = value.get("host")
            out[f"{key}.ssh"] = {k: v for k, v in value.items() if k != "host"}
        elif isinstance(value, list):
            out[key] = [v.get("host") for v in value]
            out[f"{key}.ssh"] = [{k: x for k, x in v.items() if k != "host"} for v in value]
    return out


def exact_diff(olds: dict[str, Any], news: dict[str, Any], *, replace: Iterable[str], update: Iterable[str],
               targets: Iterable[str] = ("target",), delete_first: bool = False, replace_targets: bool = True
               ) -> DiffResult:
    targets = tuple(targets)
    connection = tuple(f"{k}.ssh" for k in targets)
    moved = targets if replace_targets else ()
    d = decisions.diff(_split_targets(olds, targets), _split_targets(news, targets),
                  replace=tuple(replace) + moved, update=tuple(update) + connection + (() if replace_targets
                                                                                       else targets))
    return DiffResult(changes=d.has_changes, replaces=list(d.replaces), delete_before_replace=delete_first)
