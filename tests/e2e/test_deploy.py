"""The seed scenario, with the real CLI on the bench: staging and production of the same commit on ONE host.

The tests of this module share one deployed pair (module fixture); each test starts from both destinations at
their base config (`at_base`), so every test runs alone and in any order.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.conftest import DaemonLog, Project, host_docker, http_get, make_project, pulled, pulumi_env, ssh_config, \
    wait_http

pytestmark = pytest.mark.e2e

PORTS = {"staging": 8091, "production": 8092}


def stack_config(bench, destination: str, **extra: Any) -> dict[str, Any]:
    return {
        "service": "seed",
        "image": "acme/seed",
        "registry": {"server": bench.registry},
        "builder": {"context": "app"},
        "servers": {"web": {"hosts": [bench.hosts[0].address], "ports": [f"{PORTS[destination]}:80"]}},
        "ssh": ssh_config(bench),
        **extra,
    }


@pytest.fixture(scope="module")
def pair(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    proj = Project(make_project(root), pulumi_env(root / "state"))
    (root / "state").mkdir()
    for dest in ("staging", "production"):
        proj.init(dest, stack_config(bench, dest))
        proj.up(dest)
    yield proj
    for dest in ("staging", "production"):
        proj.run("destroy", "--yes", stack=dest, check=False)


@pytest.fixture(autouse=True)
def at_base(bench, pair):
    for dest in ("staging", "production"):
        pair.converge(dest, stack_config(bench, dest))


def url(bench, dest: str) -> str:
    return f"http://{bench.hosts[0].address}:{PORTS[dest]}/"


def test_each_destination_serves_its_own_build_on_its_own_port(bench, pair):
    out = {d: pair.outputs(d) for d in PORTS}
    assert out["staging"]["version"] == out["production"]["version"]  # same commit...
    version = out["staging"]["version"]
    for d in PORTS:
        assert http_get(url(bench, d)).startswith(f"service=seed destination={d} version={version}")
    # ...two distinct images, each pinned, each labeled with its own destination
    assert out["staging"]["image_id"] != out["production"]["image_id"]
    assert out["staging"]["tag"] == f"{bench.registry}/acme/seed:{version}-staging"
    assert out["production"]["tag"] == f"{bench.registry}/acme/seed:{version}-production"
    d = host_docker(bench.hosts[0])
    for dest in PORTS:
        image = d.inspect_image(out[dest]["image_id"])
        assert image["Config"]["Labels"]["destination"] == dest
        assert image["Config"]["Labels"]["service"] == "seed"
        assert image["Config"]["Labels"]["version"] == version
        assert out[dest]["tag"] in image["RepoTags"]
        (container,) = out[dest]["containers"][bench.hosts[0].address].values()
        info = d.inspect_container(container["id"])
        assert info["Name"] == f"/seed-web-{dest}-{version}"
        assert info["Image"] == out[dest]["image_id"]
        assert info["Config"]["Image"] == out[dest]["image_id"]  # created from the ID, never from a tag
        assert {k: info["Config"]["Labels"][k] for k in ("service", "role", "destination", "version")} == {
            "service": "seed", "role": "web", "destination": dest, "version": version}
        assert info["Config"]["Labels"]["shipyard.stack"] == f"shipyard/{dest}"  # no Pulumi organization: it differs per backend
    # the registry holds two distinct tags with two distinct digests
    tags = json.loads(urllib.request.urlopen(f"http://{bench.registry}/v2/acme/seed/tags/list").read())["tags"]
    assert {f"{version}-staging", f"{version}-production"} <= set(tags)
    assert out["staging"]["repo_digest"] != out["production"]["repo_digest"]
    assert out["staging"]["urls"] == [url(bench, "staging").rstrip("/")]


def test_preview_shows_field_level_diff_only_for_the_changed_destination(bench, pair):
    pair.set_config("production", stack_config(bench, "production", env={"clear": {"GREETING": "hi"}}))
    preview = pair.run("preview", "--diff", stack="production").out
    assert "+-shipyard:index:Container: (replace)" in preview
    assert '+ GREETING' in preview and '"hi"' in preview
    assert "1 to replace" in preview
    pair.run("preview", "--expect-no-changes", stack="staging")
    pair.set_config("production", stack_config(bench, "production"))
    pair.run("preview", "--expect-no-changes", stack="production")


def test_a_no_op_up_makes_no_mutating_docker_call(bench, pair):
    log = DaemonLog(bench.root, 1)
    log.mark()
    for dest in PORTS:
        result = pair.run("up", "--yes", stack=dest)
        assert "unchanged" in result.out and "created" not in result.out
    assert log.mutating_calls() == []


def test_restarts_and_refresh_keep_each_destination_on_its_own_image(bench, bench_ctl, pair):
    out = {d: pair.outputs(d) for d in PORTS}
    d = host_docker(bench.hosts[0])
    (staging,) = out["staging"]["containers"][bench.hosts[0].address].values()
    d.restart(staging["id"])
    bench_ctl.restart_docker(1)
    for dest in PORTS:
        wait_http(url(bench, dest), f"destination={dest} ")
    pair.run("refresh", "--yes", stack="staging")
    pair.run("up", "--yes", stack="staging")
    d = host_docker(bench.hosts[0])
    for dest in PORTS:
        assert f"destination={dest} " in http_get(url(bench, dest))
        (c,) = out[dest]["containers"][bench.hosts[0].address].values()
        assert d.inspect_container(c["id"])["Image"] == out[dest]["image_id"]


def test_refresh_reports_a_stopped_container_and_up_starts_it(bench, pair):
    out = pair.outputs("staging")
    (c,) = out["containers"][bench.hosts[0].address].values()
    host_docker(bench.hosts[0]).stop(c["id"], timeout=1)
    refresh = pair.run("refresh", "--yes", "--diff", stack="staging").out
    assert "running" in refresh
    preview = pair.run("preview", "--diff", stack="staging").out
    assert "~ 1 to update" in preview
    pair.up("staging")
    wait_http(url(bench, "staging"), "destination=staging ")


def test_a_name_owned_by_someone_else_is_refused_and_nothing_is_lost(bench, pair):
    d = host_docker(bench.hosts[0])
    squatter = d.create_container(pulled(d, "busybox:latest"), command=["sleep", "600"], name="seed-web-staging-v2",
                                  labels={"destination": "staging"})["Id"]
    try:
        pair.set_config("staging", stack_config(bench, "staging", version="v2"))
        result = pair.up("staging", check=False)
        assert result.code != 0
        assert "container seed-web-staging-v2 belongs to destination staging of another deployer; nothing was " \
               "changed" in result.out
        assert "Traceback" not in result.out
        assert "destination=staging " in http_get(url(bench, "staging"))  # the old version still serves
        assert d.inspect_container(squatter)["State"]["Status"] == "created"  # and the squatter is untouched
    finally:
        d.remove_container(squatter, force=True)
    pair.up("staging")
    assert "destination=staging version=v2" in wait_http(url(bench, "staging"), "version=v2")


def test_destroying_staging_leaves_production_running(bench, pair):
    prod = pair.outputs("production")
    staging = pair.outputs("staging")
    pair.run("destroy", "--yes", stack="staging")
    d = host_docker(bench.hosts[0])
    (c,) = prod["containers"][bench.hosts[0].address].values()
    assert d.inspect_container(c["id"])["State"]["Running"]
    assert prod["tag"] in d.inspect_image(prod["image_id"])["RepoTags"]
    assert "destination=production " in http_get(url(bench, "production"))
    assert not d.containers(all=True, filters={"label": ["destination=staging", "service=seed"]})
    leftover = d.images(filters={"label": ["destination=staging", "service=seed"]})
    assert not leftover, [(i["Id"], i["Labels"], i["RepoTags"], i["RepoDigests"]) for i in leftover]
    tags = json.loads(urllib.request.urlopen(f"http://{bench.registry}/v2/acme/seed/tags/list").read())["tags"]
    assert prod["tag"].rpartition(":")[2] in tags
    assert staging["image_id"] != prod["image_id"]
