"""`shipyard:index:Network`: the destination's own Docker network on a host. Its containers and accessories reach each
other by name on it, and no other destination's containers are on it."""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from .. import hosts, naming
from ..errors import OwnershipConflict
from ..hosts import docker_errors
from .base import exact_diff, owned, target


class NetworkProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        t = target(props)
        c = hosts.client(t)
        with docker_errors(t, f"creating network {props['name']}"):
            existing = [n for n in c.networks(names=[props["name"]]) if n["Name"] == props["name"]]
            if existing:  # ours from an interrupted run, or kept while a retained container used it: adopted
                if not owned(existing[0].get("Labels"), props):
                    raise OwnershipConflict(str(t), f"network {props['name']} belongs to "
                                                    f"{naming.describe_owner(existing[0].get('Labels'))}; nothing "
                                                    f"was changed")
                return CreateResult(id_=existing[0]["Id"], outs={**props, "network_id": existing[0]["Id"]})
            nid = c.create_network(props["name"], driver="bridge", labels=props["labels"])["Id"]
        return CreateResult(id_=nid, outs={**props, "network_id": nid})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return exact_diff(olds, news, replace=("name", "labels"), update=(), delete_first=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "network_id": olds.get("network_id")})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        t = target(props)
        with docker_errors(t, f"inspecting network {props['name']}"):
            found = [n for n in hosts.client(t).networks(ids=[id_]) if n["Id"] == id_]
        return ReadResult(id_=id_, outs=props) if found else ReadResult(id_="", outs={})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        t = target(props)
        c = hosts.client(t)
        with docker_errors(t, f"removing network {props['name']}"):
            info = hosts.or_none(c.inspect_network, id_)
            if info is None or not owned(info.get("Labels"), props):
                return
            attached = [hosts.or_none(c.inspect_container, cid) for cid in info.get("Containers") or {}]
            if any(a is not None and not owned(a["Config"].get("Labels"), props) for a in attached):
                return  # someone else attached a container: leave the network to them
            for a in attached:  # retained, stopped containers of ours
                if a is not None:
                    c.disconnect_container_from_network(a["Id"], id_, force=True)
            c.remove_network(id_)
