"""Dynamic providers for the objects a destination owns on its hosts: images and containers.

Providers hold no state and no clients: every method opens (or reuses, per process) its SSH/Docker connection
through `components.hosts`. Diffs are exact (`components.plan.diff`): computed outputs and the serialized provider
never count, and each input is declared either replace-on-change or update-in-place.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from . import hosts, naming, plan, source
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
    return naming.owned_by(labels, props["owner"], props["destination"])


# -- Image ------------------------------------------------------------------------------------------------------------

IMAGE_REPLACE = ("tag", "labels", "context_hash", "dockerfile", "build_args", "build_target", "from_ref",
                 "registry_server", "build_host")
IMAGE_UPDATE = ("ship_to",)


def _auth(props: dict[str, Any]) -> dict[str, str] | None:
    if props.get("registry_username"):
        return {"username": props["registry_username"], "password": props["registry_password"]}
    return None


def _stream_errors(lines: Iterable[dict[str, Any]]) -> tuple[list[str], str | None, str | None]:
    """(log lines, error, image id) from a docker build/push/pull JSON stream."""
    log: list[str] = []
    image_id = None
    for chunk in lines:
        if "error" in chunk:
            return log, (chunk.get("errorDetail") or {}).get("message") or chunk["error"], image_id
        if "stream" in chunk and chunk["stream"].strip():
            log.append(chunk["stream"].rstrip())
        aux = chunk.get("aux") or {}
        image_id = aux.get("ID", image_id)
    return log, None, image_id


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
            try:
                existing = c.inspect_image(tag)
            except Exception as exc:
                if not hosts.not_found(exc):
                    raise
                existing = None
        if existing is not None and not _owned(existing["Config"].get("Labels"), props):
            raise OwnershipConflict(str(target), f"image tag {tag} belongs to "
                                                 f"{naming.describe_owner(existing['Config'].get('Labels'))}; nothing "
                                                 f"was changed. Use another image name or destination.")
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
            log, error, _ = _stream_errors(stream)
        if error:
            tail = "\n".join(log[-10:])
            raise BuildFailed(str(target), f"building {tag} for destination {props['destination']} failed: "
                                           f"{error}\n{tail}")
        with docker_errors(target, f"inspecting {tag}"):
            image_id = c.inspect_image(tag)["Id"]
        repo_digest = self._push(target, props) if props.get("registry_server") else None
        outs = {**props, "image_id": image_id, "repo_digest": repo_digest or ""}
        others = [h for h in props["ship_to"] if h["host"] != target.host]
        built_on_a_deploy_host = len(others) < len(props["ship_to"])
        outs["hosts"] = ([target.host] if built_on_a_deploy_host else []) + self._ship(outs, others)
        return CreateResult(id_=image_id, outs=outs)

    def _push(self, target: SSHTarget, props: dict[str, Any]) -> str:
        c = hosts.client(target)
        repo, _, tag = props["tag"].rpartition(":")
        with docker_errors(target, f"pushing {props['tag']}"):
            _, error, _ = _stream_errors(c.push(repo, tag=tag, stream=True, decode=True, auth_config=_auth(props)))
            if error:
                raise DockerError(str(target), f"pushing {props['tag']} failed: {error}")
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
                if outs.get("repo_digest"):
                    _, error, _ = _stream_errors(c.pull(outs["repo_digest"], stream=True, decode=True,
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
                try:
                    hosts.client(target).inspect_image(id_)
                    present.append(target.host)
                except Exception as exc:
                    if not hosts.not_found(exc):
                        raise
        if not present:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "hosts": present})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        repo, _, _ = props["tag"].rpartition(":")
        for h in props.get("ship_to") or []:
            target = SSHTarget.from_dict(h)
            c = hosts.client(target)
            with docker_errors(target, f"removing image {props['tag']}"):
                try:
                    image = c.inspect_image(id_)
                except Exception as exc:
                    if hosts.not_found(exc):
                        continue
                    raise
                if not _owned(image["Config"].get("Labels"), props):
                    continue  # not ours: never touch it
                if props["tag"] in (image.get("RepoTags") or []):
                    c.remove_image(props["tag"])  # untags; the last reference also deletes it and its build parents
                try:
                    c.remove_image(id_)
                except Exception as exc:  # still used by a container or tagged by someone else: leave it
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

CONTAINER_REPLACE = ("target", "name", "image", "cmd", "env", "secret_env", "ports", "volumes", "labels")
CONTAINER_UPDATE = ("restart", "running")


def _find(c, name: str) -> dict[str, Any] | None:
    for item in c.containers(all=True, filters={"name": f"^/{name}$"}):
        if f"/{name}" in item.get("Names", []):
            return item
    return None


class ContainerProvider(ResourceProvider):
    """One container of one role of one destination on one host, created from the image pinned by ID."""

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
                # Ours: the container this one replaces (same version, new config). It keeps serving under another
                # name until the engine deletes it by ID once this one is up.
                renamed = naming.replaced_name(name, existing["Id"])
                c.rename(existing["Id"], renamed)
            try:
                container_id = self._create(c, props)
            except Exception:
                if renamed:
                    c.rename(existing["Id"], name)
                raise
        return CreateResult(id_=container_id, outs={**props, "container_id": container_id})

    def _create(self, c, props: dict[str, Any]) -> str:
        target = SSHTarget.from_dict(props["target"])
        exposed, bindings = plan.port_bindings(props.get("ports") or [])
        host_config = c.create_host_config(port_bindings=bindings or None,
                                           binds=plan.volume_binds(props.get("volumes") or []) or None,
                                           restart_policy=plan.restart_policy(props["restart"]))
        env = {**(props.get("env") or {}), **(props.get("secret_env") or {})}
        created = c.create_container(image=props["image"], name=props["name"], command=props.get("cmd") or None,
                                     environment=plan.env_list(env), labels=props["labels"], ports=exposed or None,
                                     host_config=host_config)
        cid = created["Id"]
        # Without a proxy, a fixed host port can only be bound by one container: the one this replaces is stopped
        # just before the new one starts (Kamal 1's order), and started again if the new one does not come up.
        handing_over = self._holders_of_our_ports(c, props, exclude=cid)
        for old in handing_over:
            c.stop(old, timeout=STOP_TIMEOUT_S)
        try:
            c.start(cid)
            self._wait_running(c, target, cid, props)
        except Exception:
            c.remove_container(cid, force=True)
            for old in handing_over:
                c.start(old)
            raise
        return cid

    @staticmethod
    def _holders_of_our_ports(c, props: dict[str, Any], exclude: str) -> list[str]:
        """Running containers of this stack, destination and role on this host that publish a host port the new
        container needs."""
        wanted = {int(p["host_port"]) for p in props.get("ports") or [] if p.get("host_port") is not None}
        if not wanted:
            return []
        filters = {"status": "running", "label": [f"{naming.OWNER_LABEL}={props['owner']}",
                                                  f"{naming.DESTINATION}={props['destination']}",
                                                  f"{naming.ROLE}={props['role']}"]}
        return [item["Id"] for item in c.containers(filters=filters)
                if item["Id"] != exclude and wanted & {p.get("PublicPort") for p in item.get("Ports") or []}]

    def _wait_running(self, c, target: SSHTarget, cid: str, props: dict[str, Any]) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        settled = time.monotonic() + 1.0  # a container that dies at once is caught here, not later
        while True:
            state = c.inspect_container(cid)["State"]
            if not state["Running"]:
                logs = c.logs(cid, tail=10).decode(errors="replace").strip()
                raise HealthCheckFailed(str(target), f"container {props['name']} of destination "
                                                     f"{props['destination']} exited with code {state['ExitCode']} "
                                                     f"right after starting; it was removed. Last output:\n{logs}")
            if time.monotonic() >= settled or time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        d = plan.diff(olds, news, replace=CONTAINER_REPLACE, update=CONTAINER_UPDATE)
        return DiffResult(changes=d.has_changes, replaces=list(d.replaces), delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        target = SSHTarget.from_dict(news["target"])
        c = hosts.client(target)
        with docker_errors(target, f"updating container {news['name']}"):
            if olds.get("restart") != news["restart"]:
                c.update_container(id_, restart_policy=plan.restart_policy(news["restart"]))
            if news.get("running") and not c.inspect_container(id_)["State"]["Running"]:
                c.start(id_)
                self._wait_running(c, target, id_, news)
        return UpdateResult(outs={**news, "container_id": id_})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        target = SSHTarget.from_dict(props["target"])
        with docker_errors(target, f"inspecting container {props.get('name')}"):
            try:
                info = hosts.client(target).inspect_container(id_)
            except Exception as exc:
                if hosts.not_found(exc):
                    return ReadResult(id_="", outs={})
                raise
        outs = {**props, "image": info["Image"], "running": bool(info["State"]["Running"]),
                "name": info["Name"].lstrip("/"), "restart": info["HostConfig"]["RestartPolicy"]["Name"] or "no"}
        return ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        target = SSHTarget.from_dict(props["target"])
        c = hosts.client(target)
        with docker_errors(target, f"removing container {props['name']}"):
            try:
                info = c.inspect_container(id_)
            except Exception as exc:
                if hosts.not_found(exc):
                    return
                raise
            if not _owned(info["Config"].get("Labels"), props):
                raise OwnershipConflict(str(target), f"container {id_[:12]} is no longer labeled as this stack's; "
                                                     f"it was left alone. Remove it from the state with `pulumi "
                                                     f"state delete` if it is not yours.")
            c.stop(id_, timeout=STOP_TIMEOUT_S)
            c.remove_container(id_, v=False)


class Container(Resource, module="shipyard", name="Container"):
    container_id: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ContainerProvider(), name, {**props, "container_id": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["secret_env"])))
