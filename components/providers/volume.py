"""`shipyard:index:Volume`: a named volume of the destination on a host. Its data outlives `pulumi destroy` unless the
stack opts in (`delete_volumes_on_destroy`): the component then drops Pulumi's retainOnDelete, which preview
shows."""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from .. import hosts, naming
from ..errors import OwnershipConflict
from ..hosts import docker_errors
from .base import exact_diff, owned, target


class VolumeProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        t = target(props)
        c = hosts.client(t)
        with docker_errors(t, f"creating volume {props['name']}"):
            existing = hosts.or_none(c.inspect_volume, props["name"])
            if existing is not None and not owned(existing.get("Labels"), props):
                raise OwnershipConflict(str(t), f"volume {props['name']} belongs to "
                                                f"{naming.describe_owner(existing.get('Labels'))}; nothing was "
                                                f"changed")
            if existing is None:  # an existing one of ours (kept by an earlier destroy) is taken back, data and all
                c.create_volume(props["name"], labels=props["labels"])
        return CreateResult(id_=f"{props['name']}@{t.host}", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return exact_diff(olds, news, replace=("name",), update=("labels",), delete_first=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        t = target(props)
        with docker_errors(t, f"inspecting volume {props['name']}"):
            if hosts.or_none(hosts.client(t).inspect_volume, props["name"]) is None:
                return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        t = target(props)
        c = hosts.client(t)
        with docker_errors(t, f"removing volume {props['name']}"):
            info = hosts.or_none(c.inspect_volume, props["name"])
            if info is not None and owned(info.get("Labels"), props):
                c.remove_volume(props["name"])
