"""Dynamic providers for the objects a destination owns on its hosts: images and containers.

Providers hold no state and no clients: every method opens (or reuses, per process) its SSH/Docker connection
through `components.hosts`. Diffs are exact (`components.plan.diff`): computed outputs and the serialized provider
never count, and each input is declared either replace-on-change or update-in-place.
"""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from . import hostfiles, hosts, naming, plan, source
from .errors import BuildFailed, DeployError, DockerError, HealthCheckFailed, OwnershipConflict
from .hosts import SSHTarget, docker_errors

START_DEADLINE_S = 10


def _report_deploy_errors_without_traceback() -> None:
    """Pulumi's Python dynamic-provider server reports any exception as `traceback.format_exc()`. Our own errors
    already say what happened and what to do, so inside that server (and only there) they are reported as their
    message alone; every other exception keeps its traceback."""
    server = sys.modules.get("__main__")
    real = getattr(server, "traceback", None)
    if real is None or not hasattr(server, "DynamicResourceProviderServicer") or isinstance(real, _QuietTraceback):
        return
    server.traceback = _QuietTraceback(real)


class _QuietTraceback:
    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def format_exc(self, *args, **kwargs):
        exc = sys.exc_info()[1]
        return str(exc) if isinstance(exc, DeployError) else self._real.format_exc(*args, **kwargs)


_report_deploy_errors_without_traceback()
STOP_TIMEOUT_S = 10


def _owned(labels: dict[str, str] | None, props: dict[str, Any]) -> bool:
    """Whether an object's labels say it is this stack's, of this destination and service."""
    return naming.owned_by(labels, props["owner"], props["destination"]) and \
        (labels or {}).get(naming.SERVICE) == props["labels"][naming.SERVICE]


# -- Image ------------------------------------------------------------------------------------------------------------

IMAGE_REPLACE = ("tag", "labels", "context_hash", "dockerfile", "build_args", "build_target", "from_ref",
                 "registry_server", "build_host")
IMAGE_UPDATE = ("ship_to",)


def _auth(props: dict[str, Any]) -> dict[str, str] | None:
    if props.get("registry_username"):
        return {"username": props["registry_username"], "password": props["registry_password"]}
    return None


def _auth_error(error: str) -> bool:
    return any(w in error.lower() for w in ("unauthorized", "authentication required", "denied"))


def _stream_errors(lines: Iterable[dict[str, Any]]) -> tuple[list[str], str | None]:
    """(log lines, error) from a docker build/push/pull JSON stream."""
    log: list[str] = []
    for chunk in lines:
        if "error" in chunk:
            return log, (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
        if "stream" in chunk and chunk["stream"].strip():
            log.append(chunk["stream"].rstrip())
    return log, None


def _image_present(c, image_id: str) -> bool:
    return hosts.or_none(c.inspect_image, image_id) is not None


class ImageProvider(ResourceProvider):
    """Builds the destination's image once, on the build host, and makes it present on every host that runs it:
    through the registry (push, then pull by digest) when one is configured, else by streaming `docker save` into
    `docker load`."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SSHTarget.from_dict(props["build_host"])
        c = hosts.client(target)
        tag = props["tag"]
        with docker_errors(target, f"inspecting {tag}"):
            existing = hosts.or_none(c.inspect_image, tag)
        if existing is not None and not _owned(existing["Config"].get("Labels"), props):
            raise OwnershipConflict(str(target), f"image tag {tag} belongs to "
                                                 f"{naming.describe_owner(existing['Config'].get('Labels'))}; nothing "
                                                 f"was changed. Use another image name or destination.")
        if existing is not None and existing["Config"].get("Labels") == props["labels"]:
            # A retained version, built from the same source: a rollback. No build, no push.
            digest = next((d for d in existing.get("RepoDigests") or []
                           if d.startswith(props["tag"].rpartition(":")[0] + "@")), "")
            if digest or not props.get("registry_server"):
                return self._finish(target, props, existing["Id"], digest)
        if props.get("from_ref"):
            context = source.dockerfile_tar(f"FROM {props['from_ref']}\n")
            dockerfile = "Dockerfile"
        else:
            context = source.context_tar(Path(props["context"]), props["dockerfile"])
            dockerfile = props["dockerfile"]
        with docker_errors(target, f"building {tag}"):
            stream = c.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, dockerfile=dockerfile,
                             labels=props["labels"], buildargs=props.get("build_args") or None,
                             target=props.get("build_target") or None, rm=True, forcerm=True, decode=True)
            log, error = _stream_errors(stream)
        if error:
            tail = "\n".join(log[-10:])
            raise BuildFailed(str(target), f"building {tag} for destination {props['destination']} failed: "
                                           f"{error}\n{tail}")
        with docker_errors(target, f"inspecting {tag}"):
            image_id = c.inspect_image(tag)["Id"]
        repo_digest = self._push(target, props) if props.get("registry_server") else ""
        return self._finish(target, props, image_id, repo_digest)

    def _finish(self, target: SSHTarget, props: dict[str, Any], image_id: str, repo_digest: str) -> CreateResult:
        outs = {**props, "image_id": image_id, "repo_digest": repo_digest}
        others = [h for h in props["ship_to"] if h["host"] != target.host]
        built_on_a_deploy_host = len(others) < len(props["ship_to"])
        outs["hosts"] = ([target.host] if built_on_a_deploy_host else []) + self._ship(outs, others)
        return CreateResult(id_=image_id, outs=outs)

    def _push(self, target: SSHTarget, props: dict[str, Any]) -> str:
        c = hosts.client(target)
        repo, _, tag = props["tag"].rpartition(":")
        with docker_errors(target, f"pushing {props['tag']}"):
            _, error = _stream_errors(c.push(repo, tag=tag, stream=True, decode=True, auth_config=_auth(props)))
            if error:
                hint = ": check registry.username and registry.password" if _auth_error(error) else ""
                raise DockerError(str(target), f"pushing {props['tag']} failed: {error}{hint}")
            digests = c.inspect_image(props["tag"])["RepoDigests"]
        for d in digests:
            if d.startswith(repo + "@"):
                return d
        raise DockerError(str(target), f"pushed {props['tag']} but the daemon reports no digest for {repo}")

    def _ship(self, outs: dict[str, Any], to: list[dict[str, Any]]) -> list[str]:
        """Make the image present (same ID, same tag) on each host of `to`; returns their names."""
        shipped = []
        source_target = SSHTarget.from_dict(outs["build_host"])
        repo, _, tag = outs["tag"].rpartition(":")
        for h in to:
            target = SSHTarget.from_dict(h)
            c = hosts.client(target)
            with docker_errors(target, f"shipping {outs['tag']}"):
                if _image_present(c, outs["image_id"]):
                    pass  # retained there from an earlier deploy
                elif outs.get("repo_digest"):
                    _, error = _stream_errors(c.pull(outs["repo_digest"], stream=True, decode=True,
                                                        auth_config=_auth(outs)))
                    if error:
                        raise DockerError(str(target), f"pulling {outs['repo_digest']} failed: {error}")
                else:
                    src = hosts.client(source_target)
                    with docker_errors(source_target, f"saving {outs['tag']}"):
                        data = src.get_image(outs["image_id"])
                        for _ in c.load_image(data):
                            pass
                c.tag(outs["image_id"], repo, tag)
            shipped.append(target.host)
        return shipped

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=IMAGE_REPLACE, update=IMAGE_UPDATE)
        if not d.has_changes and sorted(olds.get("hosts") or []) != sorted(h["host"] for h in news["ship_to"]):
            d = plan.Diff(changed=("ship_to",), replaces=())  # refresh found the image missing on a host
        return DiffResult(changes=d.has_changes, replaces=list(d.replaces), delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = {**news, "image_id": olds["image_id"], "repo_digest": olds.get("repo_digest")}
        present = set(olds.get("hosts") or [])
        wanted = [h["host"] for h in news["ship_to"]]
        outs["hosts"] = [h for h in wanted if h in present]
        outs["hosts"] += self._ship(outs, [h for h in news["ship_to"] if h["host"] not in present])
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        present = []
        for h in props.get("ship_to") or []:
            target = SSHTarget.from_dict(h)
            with docker_errors(target, f"inspecting image {id_}"):
                if hosts.or_none(hosts.client(target).inspect_image, id_) is not None:
                    present.append(target.host)
        if not present:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "hosts": present})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """A replaced version's image is retained for rollback while a container of this destination still uses it
        (retention and pruning happen when containers are replaced). When the destination has no container left on
        a host (destroy), this image and every retained image of the destination there are removed."""
        for h in props.get("ship_to") or []:
            target = SSHTarget.from_dict(h)
            c = hosts.client(target)
            with docker_errors(target, f"removing image {props['tag']}"):
                if c.containers(all=True, filters={"label": _ownership_filters(props)}):
                    continue  # still deployed here: retained
                for image in c.images(filters={"label": _ownership_filters(props)}):
                    _remove_image(c, image["Id"], props)


def _ownership_filters(props: dict[str, Any], **more: str) -> list[str]:
    """Label filters for this stack's objects of this service and destination (one Pulumi project may deploy
    several services under the same stack name, so the service is part of every query)."""
    return [f"{naming.OWNER_LABEL}={props['owner']}", f"{naming.DESTINATION}={props['destination']}",
            f"{naming.SERVICE}={props['labels'][naming.SERVICE]}", *(f"{k}={v}" for k, v in more.items())]


def _remove_image(c, image_id: str, props: dict[str, Any]) -> None:
    """Remove one of this destination's images: its tags, then the image and its build parents. Never an image
    whose labels say another stack or destination owns it; never one a container still uses."""
    image = hosts.or_none(c.inspect_image, image_id)
    if image is None:
        return
    if not _owned(image["Config"].get("Labels"), props):
        return
    try:
        for ref in image.get("RepoTags") or []:
            c.remove_image(ref)  # the last reference also deletes the image and its build parents
        c.remove_image(image_id)
    except Exception as exc:  # used by a container, or already gone with its last tag
        if getattr(exc, "status_code", None) not in (404, 409):
            raise


class Image(Resource, module="shipyard", name="Image"):
    image_id: pulumi.Output[str]
    repo_digest: pulumi.Output[str | None]
    tag: pulumi.Output[str]
    hosts: pulumi.Output[list[str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ImageProvider(), name, {**props, "image_id": None, "repo_digest": None, "hosts": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["registry_password"])))


# -- Container ------------------------------------------------------------------------------------------------------

CONTAINER_REPLACE = ("target", "name", "image", "cmd", "env", "secret_env", "ports", "volumes", "labels", "network",
                     "extra_networks", "aliases", "files", "directories")
CONTAINER_UPDATE = ("restart", "running", "proxy", "retain")  # proxy: only how readiness is checked


def _find(c, name: str) -> dict[str, Any] | None:
    for item in c.containers(all=True, filters={"name": f"^/{name}$"}):
        if f"/{name}" in item.get("Names", []):
            return item
    return None


def ensure_network(c, name: str) -> None:
    if not c.networks(names=[name]):
        try:
            c.create_network(name, driver="bridge")
        except Exception as exc:  # created concurrently by another deploy
            if getattr(exc, "status_code", None) != 409:
                raise


class ContainerProvider(ResourceProvider):
    """One container of one role of one destination on one host, created from the image pinned by ID.

    Ready means: running, and - for a proxied role - answering its health check (through SSH, from the host) within
    the deploy timeout; for other roles, healthy by the image's own HEALTHCHECK if it has one. A container that is
    not ready is removed and the deploy fails, so the version it replaces keeps serving. A replaced container is
    stopped and kept (`retain_containers` versions per role and host, for rollback); older ones are pruned."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        name = props["name"]
        with docker_errors(target, f"creating container {name}"):
            existing = _find(c, name)
            renamed = None
            if existing is not None:
                if not _owned(existing.get("Labels"), props):
                    raise OwnershipConflict(
                        str(target), f"container {name} belongs to {naming.describe_owner(existing.get('Labels'))}; "
                                     f"nothing was changed. Remove or rename that container, or deploy under another "
                                     f"service or destination name.")
                # Ours: the container this one replaces (same version, new config), or a retained one of a version
                # we roll back to. It moves aside under another name; the engine deletes the replaced one by ID.
                renamed = naming.replaced_name(name, existing["Id"])
                c.rename(existing["Id"], renamed)
            try:
                container_id = self._create(c, props)
            except Exception:
                if renamed:
                    c.rename(existing["Id"], name)
                raise
            self._prune(c, props, keep=container_id)
        return CreateResult(id_=container_id, outs={**props, "container_id": container_id})

    def _create(self, c, props: dict[str, Any]) -> str:
        target = SSHTarget.from_dict(props["target"])
        exposed, bindings = plan.port_bindings(props.get("ports") or [])
        if props.get("network") == naming.PROXY_NETWORK:
            ensure_network(c, props["network"])
        env = {**(props.get("env") or {}), **(props.get("secret_env") or {})}
        binds = list(props.get("volumes") or []) + self._upload(target, props)
        if props.get("env_file"):
            # The role's environment on the host: only the deploy user can read it (Kamal's env files).
            hostfiles.write_file(target, props["env_file"], "".join(f"{line}\n" for line in plan.env_list(env)).encode())
        host_config = c.create_host_config(port_bindings=bindings or None, binds=binds or None,
                                           restart_policy=plan.restart_policy(props["restart"]),
                                           network_mode=props.get("network") or None)
        networking = None
        if props.get("network") and props.get("aliases"):
            networking = c.create_networking_config(
                {props["network"]: c.create_endpoint_config(aliases=list(props["aliases"]))})
        created = c.create_container(image=self._image(c, target, props), name=props["name"],
                                     command=props.get("cmd") or None, environment=plan.env_list(env),
                                     labels=props["labels"], ports=exposed or None, host_config=host_config,
                                     networking_config=networking)
        cid = created["Id"]
        for extra in props.get("extra_networks") or []:
            c.connect_container_to_network(cid, extra)
        # Without a proxy, a fixed host port can only be bound by one container: the one this replaces is stopped
        # just before the new one starts (Kamal 1's order), and started again if the new one does not come up.
        handing_over = self._holders_of_our_ports(c, props, exclude=cid)
        for old in handing_over:
            c.stop(old, timeout=STOP_TIMEOUT_S)
        try:
            c.start(cid)
            self._wait_ready(c, target, cid, props)
        except Exception:
            c.remove_container(cid, force=True)
            for old in handing_over:
                c.start(old)
            raise
        return cid

    @staticmethod
    def _image(c, target: SSHTarget, props: dict[str, Any]) -> str:
        """The image ID to create from: the app's pinned ID as given, or an accessory's image reference resolved
        (pulled if the host lacks it) to its ID, so a later retag cannot change what this container runs."""
        ref = props["image"]
        if ref.startswith("sha256:"):
            return ref
        image = hosts.or_none(c.inspect_image, ref)
        if image is not None:
            return image["Id"]
        _, error = _stream_errors(c.pull(ref, stream=True, decode=True))
        if error:
            raise DockerError(str(target), f"pulling {ref} for {props['name']} failed: {error}")
        return c.inspect_image(ref)["Id"]

    @staticmethod
    def _upload(target: SSHTarget, props: dict[str, Any]) -> list[str]:
        """Accessory files and directories: copied/created under the destination's state directory on the host and
        bind-mounted. Returns the binds."""
        if not props.get("files") and not props.get("directories"):
            return []
        base = f"{hostfiles.home(target)}/{props['state_dir']}"
        binds = []
        for i, f in enumerate(props.get("files") or []):
            remote = f"{base}/files/{i}-{Path(f['local']).name}"
            hostfiles.write_file(target, remote, Path(f["local"]).read_bytes(), mode=0o644)
            binds.append(f"{remote}:{f['target']}:ro")
        for d in props.get("directories") or []:
            hostfiles.make_dir(target, f"{base}/{d['name']}")
            binds.append(f"{base}/{d['name']}:{d['target']}:rw")
        return binds

    @staticmethod
    def _holders_of_our_ports(c, props: dict[str, Any], exclude: str) -> list[str]:
        """Running containers of this stack, destination and role on this host that publish a host port the new
        container needs."""
        wanted = {int(p["host_port"]) for p in props.get("ports") or [] if p.get("host_port") is not None}
        if not wanted:
            return []
        filters = {"status": "running", "label": _ownership_filters(props, role=props["role"])}
        return [item["Id"] for item in c.containers(filters=filters)
                if item["Id"] != exclude and wanted & {p.get("PublicPort") for p in item.get("Ports") or []}]

    def _wait_ready(self, c, target: SSHTarget, cid: str, props: dict[str, Any]) -> None:
        proxy = props.get("proxy")
        timeout_s = float(proxy["deploy_timeout"]) if proxy else START_DEADLINE_S
        deadline = time.monotonic() + timeout_s
        settled = time.monotonic() + 1.0  # a container that dies at once is caught here, not later
        last = "no health check answered yet"
        where = f"container {props['name']} of destination {props['destination']}"
        while True:
            info = c.inspect_container(cid)
            state = info["State"]
            if not state["Running"]:
                logs = c.logs(cid, tail=10).decode(errors="replace").strip()
                raise HealthCheckFailed(str(target), f"{where} exited with code {state['ExitCode']} right after "
                                                     f"starting; it was removed. Last output:\n{logs}")
            if proxy:
                hc = proxy["healthcheck"]
                address = (info["NetworkSettings"]["Networks"].get(props["network"]) or {}).get("IPAddress")
                if address:
                    status, last = hosts.http_probe(target, address, int(proxy["app_port"]), hc["path"],
                                                    float(hc["timeout"]))
                    if status is not None and 200 <= status < 300:
                        return
            elif "Health" in state:
                if state["Health"]["Status"] == "healthy":
                    return
                log = state["Health"].get("Log") or []
                last = f"health status {state['Health']['Status']}" + (
                    f", last check: {log[-1].get('Output', '').strip()[:200]}" if log else "")
                if state["Health"]["Status"] == "unhealthy":
                    raise HealthCheckFailed(str(target), f"{where} reports unhealthy; it was removed and the "
                                                         f"previous version keeps serving. Last check: {last}")
            elif time.monotonic() >= settled:
                return
            if time.monotonic() >= deadline:
                raise HealthCheckFailed(str(target), f"{where} did not become healthy within {timeout_s:g}s; it "
                                                     f"was removed and the previous version keeps serving. Last "
                                                     f"health check: {last}")
            time.sleep(float(proxy["healthcheck"]["interval"]) if proxy else 0.2)

    @staticmethod
    def _prune(c, props: dict[str, Any], keep: str) -> None:
        """Keep the newest `retain` stopped containers of this stack, destination and role on this host; remove
        older ones and this destination's images no container uses any more. Never anything else's."""
        retain = int(props.get("retain") or 5)
        # the version being replaced still runs now and is stopped right after: it counts as the newest retained
        previous = [item for item in c.containers(all=True, filters={"label": _ownership_filters(
            props, role=props["role"])}) if item["Id"] != keep]
        previous.sort(key=lambda item: item.get("Created", 0), reverse=True)
        for item in previous[retain:]:
            if item.get("State") != "running":
                c.remove_container(item["Id"], v=False)
        if not props["image"].startswith("sha256:"):
            return  # an accessory: it runs someone else's image, and the app's current image is not its to judge
        used = {item["ImageID"] for item in c.containers(all=True, filters={"label": _ownership_filters(props)})}
        for image in c.images(filters={"label": _ownership_filters(props)}):
            tagged = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
            # untagged ones are build parents: they go with the image they belong to
            if tagged and image["Id"] not in used and image["Id"] != props["image"]:
                _remove_image(c, image["Id"], props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=CONTAINER_REPLACE, update=CONTAINER_UPDATE)
        # Accessories (databases) never run twice on the same data: the old one stops before the new one starts.
        return DiffResult(changes=d.has_changes, replaces=list(d.replaces),
                          delete_before_replace=bool(news.get("delete_first")))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        target = SSHTarget.from_dict(news["target"])
        c = hosts.client(target)
        with docker_errors(target, f"updating container {news['name']}"):
            if olds.get("restart") != news["restart"]:
                c.update_container(id_, restart_policy=plan.restart_policy(news["restart"]))
            if news.get("running") and not c.inspect_container(id_)["State"]["Running"]:
                c.start(id_)
                self._wait_ready(c, target, id_, news)
        return UpdateResult(outs={**news, "container_id": id_})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        with docker_errors(target, f"inspecting container {props.get('name')}"):
            info = hosts.or_none(hosts.client(target).inspect_container, id_)
            if info is None:
                return ReadResult(id_="", outs={})
        outs = {**props, "image": info["Image"], "running": bool(info["State"]["Running"]),
                "name": info["Name"].lstrip("/"), "restart": info["HostConfig"]["RestartPolicy"]["Name"] or "no"}
        return ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Replaced (another container of this role and destination runs here): stop it and keep it for
        rollback. Otherwise - destroy, or the role left the config - remove it and every retained container of the
        role here."""
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"removing container {props['name']}"):
            info = hosts.or_none(c.inspect_container, id_)
            if info is None:
                return
            if not _owned(info["Config"].get("Labels"), props):
                raise OwnershipConflict(str(target), f"container {id_[:12]} is no longer labeled as this stack's; "
                                                     f"it was left alone. Remove it from the state with `pulumi "
                                                     f"state delete` if it is not yours.")
            role = _ownership_filters(props, role=props["role"])
            successors = [i for i in c.containers(filters={"status": "running", "label": role}) if i["Id"] != id_]
            c.stop(id_, timeout=STOP_TIMEOUT_S)
            if successors:
                return
            for item in c.containers(all=True, filters={"label": role}):
                c.remove_container(item["Id"], v=False, force=True)
        if props.get("env_file"):
            hostfiles.remove_file(target, props["env_file"])


class Container(Resource, module="shipyard", name="Container"):
    container_id: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ContainerProvider(), name, {**props, "container_id": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["secret_env"])))


# -- Proxy (one per host, shared by every destination) -----------------------------------------------------------------

PROXY_UPDATE = ("image",)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _proxy_routes(listing: str) -> list[str]:
    """Service names from `kamal-proxy list` (a table with a header row, coloured even without a terminal)."""
    rows = [ANSI.sub("", ln).split() for ln in listing.splitlines()]
    return [row[0] for row in rows[1:] if row]


class ProxyProvider(ResourceProvider):
    """Ensures kamal-proxy runs on a host - Kamal's container, network and config volume - for every destination that
    routes through it. No stack owns it: deleting this resource (a destination's destroy) removes the proxy only when
    it serves no route any more, so destroying staging never takes production offline."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{naming.PROXY_CONTAINER}@{props['target']['host']}", outs=self._ensure(props))

    def _ensure(self, props: dict[str, Any]) -> dict[str, Any]:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"starting {naming.PROXY_CONTAINER}"):
            ensure_network(c, naming.PROXY_NETWORK)
            existing = _find(c, naming.PROXY_CONTAINER)
            if existing is not None:
                info = c.inspect_container(existing["Id"])
                if info["Config"]["Image"] == props["image"]:
                    if not info["State"]["Running"]:
                        c.start(existing["Id"])
                    return {**props, "container_id": existing["Id"]}
                # An upgrade: routes live in the config volume and come back with the new container.
                c.stop(existing["Id"], timeout=STOP_TIMEOUT_S)
                c.remove_container(existing["Id"])
            host_config = c.create_host_config(
                port_bindings={"80/tcp": [80], "443/tcp": [443]},
                binds=[f"{naming.PROXY_VOLUME}:/home/kamal-proxy/.config/kamal-proxy:rw"],
                restart_policy=plan.restart_policy("unless-stopped"), network_mode=naming.PROXY_NETWORK,
                log_config={"type": "json-file", "config": {"max-size": "10m"}})
            cid = c.create_container(image=props["image"], name=naming.PROXY_CONTAINER, ports=[80, 443],
                                     labels={naming.PROXY_LABEL: "true"}, host_config=host_config)["Id"]
            c.start(cid)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:  # ready when its control socket answers
            code, out = hosts.exec_in(target, naming.PROXY_CONTAINER, ["kamal-proxy", "list"])
            if code == 0:
                return {**props, "container_id": cid}
            if time.monotonic() > deadline:
                raise HealthCheckFailed(str(target), f"{naming.PROXY_CONTAINER} did not start: {out}")
            time.sleep(0.3)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=(), update=PROXY_UPDATE + ("target",))
        return DiffResult(changes=d.has_changes, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._ensure(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        with docker_errors(target, f"inspecting {naming.PROXY_CONTAINER}"):
            existing = _find(hosts.client(target), naming.PROXY_CONTAINER)
        if existing is None:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "image": existing["Image"], "container_id": existing["Id"]})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"removing {naming.PROXY_CONTAINER}"):
            existing = _find(c, naming.PROXY_CONTAINER)
            if existing is None or existing.get("State") != "running":
                return
        code, out = hosts.exec_in(target, naming.PROXY_CONTAINER, ["kamal-proxy", "list"])
        if code != 0 or _proxy_routes(out):
            return  # still routes for some destination (or cannot tell): leave it serving
        with docker_errors(target, f"removing {naming.PROXY_CONTAINER}"):
            c.stop(existing["Id"], timeout=STOP_TIMEOUT_S)
            c.remove_container(existing["Id"])


class Proxy(Resource, module="shipyard", name="Proxy"):
    container_id: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ProxyProvider(), name, {**props, "container_id": None}, opts)


# -- ProxyRoute (one destination's route on one host's proxy) ---------------------------------------------------------

ROUTE_UPDATE = ("target", "service", "upstream", "proxy")


class RouteProvider(ResourceProvider):
    """A destination's route in kamal-proxy. Create and update run `kamal-proxy deploy`: health-check the new
    container, switch traffic, drain the old one. A failure fails the update, so the engine never deletes the old
    container, which keeps serving. Delete removes this destination's route only."""

    serialize_as_secret_always = False

    def _deploy(self, props: dict[str, Any]) -> dict[str, Any]:
        target = SSHTarget.from_dict(props["target"])
        argv = plan.proxy_deploy_argv(props["service"], props["upstream"], props["proxy"])
        code, out = hosts.exec_in(target, naming.PROXY_CONTAINER, argv)
        if code != 0:
            raise HealthCheckFailed(str(target), f"kamal-proxy did not switch {props['service']} (destination "
                                                 f"{props['destination']}) to {props['upstream']}: {out}; the previous "
                                                 f"version keeps serving")
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['service']}@{props['target']['host']}", outs=self._deploy(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=(), update=ROUTE_UPDATE)
        return DiffResult(changes=d.has_changes, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._deploy(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        code, out = hosts.exec_in(target, naming.PROXY_CONTAINER, ["kamal-proxy", "list"])
        routes = set(_proxy_routes(out)) if code == 0 else set()
        return ReadResult(id_=id_ if props["service"] in routes else "", outs=props if props["service"] in routes
                          else {})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        target = SSHTarget.from_dict(props["target"])
        code, out = hosts.exec_in(target, naming.PROXY_CONTAINER, ["kamal-proxy", "remove", props["service"]])
        if code != 0 and "not found" not in out.lower() and "no such" not in out.lower():
            raise DockerError(str(target), f"kamal-proxy could not remove route {props['service']}: {out}")


class ProxyRoute(Resource, module="shipyard", name="ProxyRoute"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(RouteProvider(), name, props, opts)


# -- Network and Volume (a destination's own, per host) -----------------------------------------------------------------


class NetworkProvider(ResourceProvider):
    """The destination's Docker network on a host: its containers and accessories reach each other by name, and
    no other destination's containers are on it."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"creating network {props['name']}"):
            existing = c.networks(names=[props["name"]])
            existing = [n for n in existing if n["Name"] == props["name"]]
            if existing:
                if not _owned(existing[0].get("Labels"), props):
                    raise OwnershipConflict(str(target), f"network {props['name']} belongs to "
                                                         f"{naming.describe_owner(existing[0].get('Labels'))}; "
                                                         f"nothing was changed")
                return CreateResult(id_=existing[0]["Id"], outs={**props, "network_id": existing[0]["Id"]})
            nid = c.create_network(props["name"], driver="bridge", labels=props["labels"])["Id"]
        return CreateResult(id_=nid, outs={**props, "network_id": nid})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=("target", "name", "labels"), update=())
        return DiffResult(changes=d.has_changes, replaces=list(d.replaces), delete_before_replace=True)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        with docker_errors(target, f"inspecting network {props['name']}"):
            found = [n for n in hosts.client(target).networks(ids=[id_]) if n["Id"] == id_]
        return ReadResult(id_=id_, outs=props) if found else ReadResult(id_="", outs={})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"removing network {props['name']}"):
            info = hosts.or_none(c.inspect_network, id_)
            if info is None:
                return
            if not _owned(info.get("Labels"), props):
                return
            attached = [hosts.or_none(c.inspect_container, cid) for cid in info.get("Containers") or {}]
            if any(a is not None and not _owned(a["Config"].get("Labels"), props) for a in attached):
                return  # someone else attached a container: leave the network to them
            for a in attached:  # retained, stopped containers of ours
                if a is not None:
                    c.disconnect_container_from_network(a["Id"], id_, force=True)
            c.remove_network(id_)


class Network(Resource, module="shipyard", name="Network"):
    network_id: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(NetworkProvider(), name, {**props, "network_id": None}, opts)


class VolumeProvider(ResourceProvider):
    """A named volume of the destination on a host. Data outlives `pulumi destroy` unless the stack opts in
    (`delete_volumes_on_destroy`): the component then drops Pulumi's retainOnDelete, which preview shows."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"creating volume {props['name']}"):
            existing = hosts.or_none(c.inspect_volume, props["name"])
            if existing is not None and not _owned(existing.get("Labels"), props):
                raise OwnershipConflict(str(target), f"volume {props['name']} belongs to "
                                                     f"{naming.describe_owner(existing.get('Labels'))}; nothing was "
                                                     f"changed")
            if existing is None:  # an existing one of ours (kept by an earlier destroy) is taken back, data and all
                c.create_volume(props["name"], labels=props["labels"])
        return CreateResult(id_=f"{props['name']}@{target.host}", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=("target", "name"), update=("labels",))
        return DiffResult(changes=d.has_changes, replaces=list(d.replaces), delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        with docker_errors(target, f"inspecting volume {props['name']}"):
            if hosts.or_none(hosts.client(target).inspect_volume, props["name"]) is None:
                return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"removing volume {props['name']}"):
            info = hosts.or_none(c.inspect_volume, props["name"])
            if info is None:
                return
            if _owned(info.get("Labels"), props):
                c.remove_volume(props["name"])


class Volume(Resource, module="shipyard", name="Volume"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(VolumeProvider(), name, props, opts)
