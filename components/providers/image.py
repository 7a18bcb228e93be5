"""`shipyard:index:Image`: the destination's image of one version, built once on the build host and made present on
every host that runs it (through the registry when one is configured, else `docker save | docker load`).

A version names one build: the image already tagged for a version is reused whatever the checkout holds now (a
rollback, said in the preview), and a version that names a build made with other builder settings is refused."""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, \
    ResourceProvider, UpdateResult

from .. import decisions, hosts, naming, source, text
from ..errors import BuildFailed, DockerError, HostError, OwnershipConflict
from ..hosts import SSHTarget, docker_errors
from .base import auth_error, exact_diff, host_lock, label_filters, on_each, owned, remove_build_leftovers, \
    remove_image, stream_errors, stream_result, target

REPLACE = ("tag", "labels", "context_hash", "dockerfile", "build_args", "build_target", "build_platform", "from_ref",
           "registry_server")
UPDATE = ("ship_to", "registry_username")
# what a build is made of
BUILD_INPUTS = ("context_hash", "dockerfile", "build_args", "build_target", "build_platform", "from_ref")
# hosts shipped to at once: pulling from the registry (each host's own download, as Kamal pulls on every host at
# once), or copying from a host that has it (its uplink is shared)
PULL_PARALLEL, COPY_PARALLEL = 32, 8
COPY_CHUNK = 2 << 20  # bytes read at once from the host an image is copied from (docker-py's default)


def auth(props: dict[str, Any]) -> dict[str, str]:
    """The stack's registry login, or explicitly none (`{}`): given no `auth_config`, docker-py sends the
    operator's own login for that registry from the deploying machine's Docker config."""
    if props.get("registry_username"):
        return {"username": props["registry_username"], "password": props["registry_password"]}
    return {}


def _build_auth(c, props: dict[str, Any]) -> None:
    """The credentials a build may use for its FROM pulls: the stack's registry only. docker-py would otherwise
    send every credential of the operator's own Docker config to the (remote) daemon."""
    creds = auth(props)
    auths = {props["registry_server"]: {"auth": base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()}} if creds else {"shipyard.invalid": {}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"auths": auths}, fh)
    try:
        c.reload_config(fh.name)
    finally:
        os.unlink(fh.name)


def _comparable(olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
    """`news` as it compares with what an earlier release recorded: no build fingerprint label if it had none, and
    a context hash of another kind (files then, the tar now) taken as unchanged - an upgrade rebuilds nothing."""
    labels = dict(news["labels"])
    if naming.BUILD_LABEL not in (olds.get("labels") or {}):
        labels.pop(naming.BUILD_LABEL, None)
    if olds.get("context_hash") and not source.same_hash_kind(olds["context_hash"], news.get("context_hash")):
        news = {**news, "context_hash": olds["context_hash"]}
        labels.pop(naming.SOURCE_LABEL, None)
        if naming.SOURCE_LABEL in (olds.get("labels") or {}):
            labels[naming.SOURCE_LABEL] = olds["labels"][naming.SOURCE_LABEL]
    return {**news, "labels": labels}


class ImageProvider(ResourceProvider):
    serialize_as_secret_always = False

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """At preview too: a promotion must come from the same service and image; a version that already has an
        image on the build host is reused (said in `reuse`) or, built with other settings, refused."""
        failures = []
        promote = news.get("promote")
        if promote:
            if promote.get("service") != news["labels"][naming.SERVICE]:
                failures.append(CheckFailure("promote", f"stack {promote['stack']} deploys service "
                                             f"{promote.get('service')!r}, not {news['labels'][naming.SERVICE]!r}: "
                                             f"promote only from a stack of the same service"))
            elif promote.get("repository") != news["tag"].rpartition(":")[0]:
                failures.append(CheckFailure("promote", f"stack {promote['stack']} builds image "
                                             f"{promote.get('repository')}, not {news['tag'].rpartition(':')[0]}: "
                                             f"promote only between stacks of the same image and registry"))
        news = {**news, "reuse": olds.get("reuse") if olds.get("tag") == news["tag"] else None}
        same = _comparable(olds, news)
        changed = [k for k in BUILD_INPUTS if olds and (olds.get(k) or None) != (same.get(k) or None)]
        if news.get("pinned") and olds.get("tag") == news["tag"] and "context_hash" in changed:
            # a pinned version is that build, reused whatever the checkout holds now: what it was made from stays
            # recorded as it was, so the checkout changes nothing (other builder settings under it are still
            # refused below, named alone)
            changed = [k for k in changed if k != "context_hash"]
            if not changed:
                news = {**news, **{k: olds.get(k) for k in ("context_hash", "context", "labels")}}
                same = _comparable(olds, news)
        if not failures and olds.get("tag") == news["tag"] and changed and promote:
            # a promoting stack sets no version: the one it takes over is its source's
            built = "another promoted build" if olds.get("from_ref") else "a build of this destination's own"
            failures.append(CheckFailure("promote", f"version {news['labels'][naming.VERSION]} already names "
                                         f"{built}; a promotion takes stack {promote['stack']}'s build of a "
                                         f"version this destination has not deployed: deploy a new commit to "
                                         f"{promote['stack']} first, then this stack; nothing was changed"))
        elif not failures and olds.get("tag") == news["tag"] and changed:
            failures.append(CheckFailure("tag", f"version {news['labels'][naming.VERSION]} already names a build "
                                         f"and {', '.join(changed)} changed: set a new version (`pulumi config set "
                                         f"shipyard:version ...`) or, for the default version, commit the change; "
                                         f"nothing was changed"))
        if not failures and decisions.diff(olds, same, replace=("tag", "labels"), update=()).has_changes:
            existing = self._existing(news)
            if existing is not None:
                conflict = decisions.image_conflict(existing["Config"].get("Labels") or {}, news["labels"],
                                                    news["labels"][naming.VERSION])
                if conflict:
                    failures.append(CheckFailure("tag", f"{conflict}: set a new version "
                                                 f"(`pulumi config set shipyard:version ...`) or roll back the "
                                                 f"builder settings too; nothing was changed"))
                else:
                    made_from = (existing["Config"].get("Labels") or {}).get(naming.SOURCE_LABEL)
                    news["reuse"] = (f"the image already built for version {news['labels'][naming.VERSION]} "
                                     f"({existing['Id'][:19]})" + ("" if made_from == news.get("context_hash") else
                                                                  ", not the current checkout"))
                    # recorded as what that image was made from, not what the checkout holds now (a rollback from
                    # a later commit): once the checkout holds that version's commit again, nothing differs
                    if news.get("context_hash") and source.same_hash_kind(made_from, news["context_hash"]):
                        news["context_hash"] = made_from
                        news["labels"] = {**news["labels"], naming.SOURCE_LABEL: made_from}
        return CheckResult(news, failures)

    @staticmethod
    def _existing(props: dict[str, Any]) -> dict[str, Any] | None:
        t = target(props, "build_host")
        c = hosts.client(t)
        with docker_errors(t, f"inspecting {props['tag']}"):
            existing = hosts.or_none(c.inspect_image, props["tag"])
        if existing is not None and not owned(existing["Config"].get("Labels"), props):
            raise OwnershipConflict(str(t), f"image tag {props['tag']} belongs to "
                                            f"{naming.describe_owner(existing['Config'].get('Labels'))}; nothing "
                                            f"was changed. Use another image name or destination.")
        return existing

    def create(self, props: dict[str, Any]) -> CreateResult:
        t = target(props, "build_host")
        # the hosts it ships to are connected to while it builds, and the build host for its lock
        hosts.open_ahead([t, *(SSHTarget.from_dict(h) for h in props["ship_to"] if h["host"] != t.host)])
        c = hosts.client(t)
        tag = props["tag"]
        existing = self._existing(props)
        if existing is not None:
            conflict = decisions.image_conflict(existing["Config"].get("Labels") or {}, props["labels"],
                                                props["labels"][naming.VERSION])
            if conflict:
                raise BuildFailed(str(t), f"{conflict}: set a new version or roll back the builder settings too; "
                                          f"nothing was changed")
            if not props.get("registry_server"):
                return self._finish(t, props, existing["Id"], "")
            digest = self._in_registry(c, t, props, existing)
            # a rollback: no build; a push only if the registry lacks it (an earlier push failed)
            return self._finish(t, props, existing["Id"], digest or self._push(t, props))
        with docker_errors(t, f"building {tag}"):
            image_id = self._build(c, t, props)
        repo_digest = self._push(t, props) if props.get("registry_server") else ""
        return self._finish(t, props, image_id, repo_digest)

    @staticmethod
    def _build(c, t: SSHTarget, props: dict[str, Any]) -> str:
        tag = props["tag"]
        if props.get("from_ref"):
            context = source.dockerfile_tar(f"FROM {props['from_ref']}\n")
            dockerfile = "Dockerfile"
        else:
            context = source.context_tar(Path(props["context"]), props["dockerfile"],
                                         expect_hash=props.get("context_hash"), commit=props.get("commit"))
            dockerfile = props["dockerfile"]
        _build_auth(c, props)
        with host_lock(t, props, f"building {tag}", shared=True, lock="images"):  # builds may share cached layers
            stream = c.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, dockerfile=dockerfile,
                             labels=props["labels"], buildargs=props.get("build_args") or None,
                             target=props.get("build_target") or None, platform=props.get("build_platform") or None,
                             rm=True, forcerm=True, decode=True)
            log, error = stream_errors(stream)
        if error:
            secrets = [props.get("registry_password") or ""]
            raise BuildFailed(str(t), f"building {tag} for destination {props['destination']} failed: "
                                      f"{text.tail(error, 3, secrets)}\n{text.tail(chr(10).join(log), 10, secrets)}")
        return c.inspect_image(tag)["Id"]

    def _finish(self, t: SSHTarget, props: dict[str, Any], image_id: str, repo_digest: str) -> CreateResult:
        outs = {**props, "image_id": image_id, "repo_digest": repo_digest}
        others = [h for h in props["ship_to"] if h["host"] != t.host]
        built_on_a_deploy_host = len(others) < len(props["ship_to"])
        outs["hosts"] = ([t.host] if built_on_a_deploy_host else []) + self._ship(outs, others)
        return CreateResult(id_=image_id, outs=outs)

    @staticmethod
    def _in_registry(c, t: SSHTarget, props: dict[str, Any], image: dict[str, Any]) -> str:
        """The image's digest in the stack's registry, if the registry really has it (the daemon's RepoDigests can
        name a digest whose push failed, or an image index the registry never got)."""
        import docker.errors  # loaded already: `c` is a Docker client
        repo = props["tag"].rpartition(":")[0]
        for ref in image.get("RepoDigests") or []:
            if ref.startswith(repo + "@"):
                with docker_errors(t, f"asking the registry for {ref}"):
                    try:
                        c.inspect_distribution(ref, auth_config=auth(props))
                        return ref
                    except docker.errors.APIError:
                        continue  # not there (or not readable): pushed again below
        return ""

    def _push(self, t: SSHTarget, props: dict[str, Any]) -> str:
        c = hosts.client(t)
        repo, _, tag = props["tag"].rpartition(":")
        with docker_errors(t, f"pushing {props['tag']}"):
            _, error, pushed = stream_result(c.push(repo, tag=tag, stream=True, decode=True,
                                                    auth_config=auth(props)))
            if error:
                hint = ": check registry.username and registry.password" if auth_error(error) else ""
                raise DockerError(str(t), f"pushing {props['tag']} failed: {error}{hint}")
            if pushed:
                return f"{repo}@{pushed}"
            digests = c.inspect_image(props["tag"])["RepoDigests"]
        for d in digests:
            if d.startswith(repo + "@"):
                return d
        raise DockerError(str(t), f"pushed {props['tag']} but the daemon reports no digest for {repo}")

    def _ship(self, outs: dict[str, Any], to: list[dict[str, Any]],
              sources: list[dict[str, Any]] | None = None) -> list[str]:
        """Make the image present (same ID, same tag) on each host of `to`, several hosts at a time, pulled from the
        registry or else copied from the build host, which has just built it (or, `sources`, from the first host it
        was on that still has it); returns their names. Every host is tried; the first failure is raised after the
        others have finished."""
        on_each(to, lambda t: self._ship_one(outs, t, sources), PULL_PARALLEL if outs.get("repo_digest")
                else COPY_PARALLEL)
        return [h["host"] for h in to]

    @staticmethod
    def _ship_one(outs: dict[str, Any], t: SSHTarget, sources: list[dict[str, Any]] | None) -> None:
        repo, _, tag = outs["tag"].rpartition(":")
        c = hosts.client(t)
        with docker_errors(t, f"shipping {outs['tag']}"):
            if hosts.or_none(c.inspect_image, outs["image_id"]) is not None:
                pass  # retained there from an earlier deploy
            elif outs.get("repo_digest"):
                _, error = stream_errors(c.pull(outs["repo_digest"], stream=True, decode=True,
                                                auth_config=auth(outs)))
                if error:
                    raise DockerError(str(t), f"pulling {outs['repo_digest']} failed: {error}")
            else:
                if sources is None:  # the build host, which has just built it
                    source_target = target(outs, "build_host")
                    src = hosts.client(source_target)
                else:
                    src, source_target = _holder(outs, t, [s for s in sources if s["host"] != t.host])
                from ..dockerapi import saved_image  # loaded with the first connection
                saving = f"saving {outs['tag']}"
                with docker_errors(source_target, saving):
                    saved = saved_image(src, outs["image_id"])
                try:
                    for _ in c.load_image(_read_from(source_target, saving, saved.iter_content(COPY_CHUNK))):
                        pass
                finally:  # read to its end, or given up as this host failed: the build host's channel goes back
                    saved.close()
            c.tag(outs["image_id"], repo, tag)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        news = _comparable(olds, news)
        d = exact_diff(olds, news, replace=REPLACE, update=UPDATE, targets=("build_host", "ship_to"),
                       replace_targets=False)
        if not d.changes and sorted(olds.get("hosts") or []) != sorted(h["host"] for h in news["ship_to"]):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)  # missing on a host
        if olds.get("build_host", {}).get("host") != news["build_host"]["host"] and not d.replaces:
            # where it is built matters only for the next build: record it
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        return d

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = {**news, "image_id": olds["image_id"], "repo_digest": olds.get("repo_digest")}
        present = set(olds.get("hosts") or [])
        outs["hosts"] = [h["host"] for h in news["ship_to"] if h["host"] in present]
        # copied from where it is: the build host it was built on, then the hosts it was shipped to (a destination
        # moved to a new host has a new build host, which never had it)
        had = {h["host"]: h for h in (olds["build_host"], *(h for h in olds.get("ship_to") or []
                                                           if h["host"] in present))}
        outs["hosts"] += self._ship(outs, [h for h in news["ship_to"] if h["host"] not in present], list(had.values()))
        outs["left_hosts"] = _left(olds, news)
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        def here(t: SSHTarget) -> bool:
            with docker_errors(t, f"inspecting image {id_}"):
                return hosts.or_none(hosts.client(t).inspect_image, id_) is not None
        ship_to = props.get("ship_to") or []
        present = [h["host"] for h, there in zip(ship_to, on_each(ship_to, here)) if there]
        if not present:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "hosts": present})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """A replaced version's image is retained for rollback while a container of this destination still uses it
        (retention and pruning happen when containers are replaced). When the destination has no container left on
        a host (destroy, or a host that left the config), this image and every retained image of the destination
        there are removed - on every host at once. The build host, when it deploys nothing, keeps only the images
        some deploy host's container still uses (the rest of its copies were never pruned)."""
        ship_to = props.get("ship_to") or []
        build = props.get("build_host")
        build_only = build is not None and build["host"] not in {h["host"] for h in ship_to}
        left = [h for h in props.get("left_hosts") or []
                if h["host"] not in {x["host"] for x in ship_to} and (not build_only or h["host"] != build["host"])]

        def unused_here(t: SSHTarget) -> set[str]:
            """The image IDs this destination's containers here use; none left: its images here are removed."""
            c = hosts.client(t)
            with docker_errors(t, f"removing image {props['tag']}"):
                filters = {"label": label_filters(props)}
                used = {i.get("ImageID") for i in c.containers(all=True, filters=filters)
                        if owned(i.get("Labels"), props)}
                if used:
                    return used  # still deployed here: retained
            self._remove(t, props, set())
            return set()

        def left_here(t: SSHTarget) -> set[str]:
            try:
                return unused_here(t)
            except HostError:
                return set()  # best effort: a host that left the config is often gone for good

        used = set().union(*on_each(ship_to, unused_here), *on_each(left, left_here))
        if build_only:
            self._remove(target(props, "build_host"), props, used)

    @staticmethod
    def _remove(t: SSHTarget, props: dict[str, Any], keep: set[str]) -> None:
        """Remove this destination's images on the host, but those in `keep`, under the host's image lock."""
        c = hosts.client(t)
        with docker_errors(t, f"removing image {props['tag']}"):
            images = [i for i in c.images(filters={"label": label_filters(props)}) if i["Id"] not in keep]
        if images:
            with host_lock(t, props, f"removing the images of {props['tag'].rpartition(':')[0]}",
                           lock="images"), docker_errors(t, f"removing image {props['tag']}"):
                for image in images:
                    remove_image(c, image, props)
                remove_build_leftovers(c, props, keep)


def _read_from(t: SSHTarget, doing: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`chunks` as they are read from host `t`: a failure to read them is that host's, and one to take them in is
    the receiving host's."""
    with docker_errors(t, doing):
        yield from chunks


def _holder(outs: dict[str, Any], to: SSHTarget, sources: list[dict[str, Any]]) -> tuple[Any, SSHTarget]:
    """The Docker client and target of the first of `sources` (SSH targets) that has the image, to copy it to `to`
    from; one that cannot be reached is passed over."""
    for held in sources:
        t = SSHTarget.from_dict(held)
        try:
            with docker_errors(t, f"looking for {outs['tag']}"):
                c = hosts.client(t)
                if hosts.or_none(c.inspect_image, outs["image_id"]) is not None:
                    return c, t
        except HostError:
            continue
    where = ", ".join(s["host"] for s in sources) or "no host"
    raise DockerError(str(to), f"image {outs['tag']} ({outs['image_id'][:19]}) is to be copied here, but no host it "
                               f"was on ({where}) has it any more and no registry holds it: deploy a new version (it "
                               f"is built again), or set a registry")


def _left(olds: dict[str, Any], news: dict[str, Any]) -> list[dict[str, Any]]:
    """Hosts that left the config (SSH targets) whose images of this destination no removal has visited yet: their
    containers go only at the end of this `up`, so their images go with the next removal of an image."""
    now = {h["host"] for h in news["ship_to"]}
    left: dict[str, dict[str, Any]] = {}
    for h in (olds.get("left_hosts") or []) + (olds.get("ship_to") or []):
        if h["host"] not in now:
            left[h["host"]] = h
    return list(left.values())
