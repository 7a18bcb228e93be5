"""Zero-downtime rollouts through the real kamal-proxy: health-gated switches, failed health checks, rollback,
retention and pruning per destination - staging and production on one host, with the real CLI.

The tests share one deployed pair (module fixture); each starts from both destinations at v1 (`at_base`) and
deploys what it needs itself, so every test runs alone and in any order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import WORKER, DaemonLog, Project, host_docker, make_project, pulumi_env, requests_during, \
    ssh_config

pytestmark = pytest.mark.e2e

NAMES = {"staging": "staging.shop.test", "production": "shop.test"}


def config(bench, dest: str, version: str, **extra: Any) -> dict[str, Any]:
    proxy = {"hosts": [NAMES[dest]], "healthcheck": {"path": "/up", "interval": 0.3, "timeout": 2},
             "deploy_timeout": 8, "drain_timeout": 2}
    proxy.update(extra.pop("proxy", {}))
    return {"service": "shop", "image": "acme/shop", "version": version, "registry": {"server": bench.registry},
            "builder": {"context": "app"}, "servers": {"web": {"hosts": [bench.hosts[0].address]}},
            "proxy": proxy, "retain_containers": 3, "ssh": ssh_config(bench), **extra}


def get(bench, dest: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": NAMES[dest]})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


def deploy(proj: Project, bench, dest: str, version: str, **extra) -> None:
    proj.converge(dest, config(bench, dest, version, **extra))


def containers(bench, dest: str) -> dict[str, str]:
    d = host_docker(bench.hosts[0])
    return {c["Labels"]["version"]: c["State"] for c in
            d.containers(all=True, filters={"label": ["service=shop", f"destination={dest}"]})}


def named(bench, dest: str) -> dict[str, str]:
    """name -> state of the destination's containers (retained ones of any version included)."""
    d = host_docker(bench.hosts[0])
    return {c["Names"][0]: c["State"] for c in
            d.containers(all=True, filters={"label": ["service=shop", f"destination={dest}"]})}


def images(bench, dest: str) -> set[str]:
    d = host_docker(bench.hosts[0])
    return {t for i in d.images(filters={"label": ["service=shop", f"destination={dest}"]})
            for t in i.get("RepoTags") or [] if t != "<none>:<none>"}


def registry_tags() -> set[str]:
    return set(json.loads(urllib.request.urlopen(f"http://{REGISTRY[0]}/v2/acme/shop/tags/list").read())["tags"])


REGISTRY: list[str] = []


@pytest.fixture(scope="module")
def pair(bench, tmp_path_factory):
    REGISTRY[:] = [bench.registry]
    root = tmp_path_factory.mktemp("rollout")
    (root / "state").mkdir()
    proj = Project(make_project(root), pulumi_env(root / "state"))
    for dest in NAMES:
        proj.init(dest, config(bench, dest, "v1"))
        proj.up(dest)
    yield proj
    for dest in NAMES:
        proj.run("destroy", "--yes", stack=dest, check=False)


@pytest.fixture(autouse=True)
def at_base(bench, pair):
    for dest in NAMES:
        deploy(pair, bench, dest, "v1")


def test_proxied_destinations_answer_on_their_own_host_names(bench, pair):
    assert get(bench, "staging").startswith("service=shop destination=staging version=v1")
    assert get(bench, "production").startswith("service=shop destination=production version=v1")
    d = host_docker(bench.hosts[0])
    (proxy,) = d.containers(filters={"name": "^/kamal-proxy$"})
    assert proxy["Image"] == "basecamp/kamal-proxy:v0.9.2"
    assert "shipyard.stack" not in proxy["Labels"]  # no destination owns the host's proxy
    assert pair.outputs("staging")["urls"] == [f"http://{NAMES['staging']}"]


def test_a_version_change_drops_no_request(bench, pair, capsys):
    with requests_during(lambda: get(bench, "staging")) as seen:
        deploy(pair, bench, "staging", "v2")
        time.sleep(0.5)
    results = [(at, (answer or "").startswith("service=shop destination=staging")) for at, answer in seen]
    failures = [r for r in results if not r[1]]
    ok_times = [r[0] for r in results if r[1]]
    gap = max((b - a for a, b in zip(ok_times, ok_times[1:])), default=0)
    with capsys.disabled():  # shown in every run, not only with -s
        print(f"\nzero-downtime: {len(results)} requests during the rollout, {len(failures)} failed, "
              f"longest gap between successful answers {gap * 1000:.0f} ms")
    assert len(results) > 50 and not failures
    assert "version=v2" in get(bench, "staging")
    now = containers(bench, "staging")
    assert now["v2"] == "running" and now["v1"] == "exited"  # v1 retained, stopped
    assert [v for v, state in now.items() if state == "running"] == ["v2"]


def test_a_failed_health_check_keeps_the_previous_version_serving(bench, pair):
    deploy(pair, bench, "staging", "v2")
    before = named(bench, "staging")
    pair.set_config("staging", config(bench, "staging", "v3", proxy={"healthcheck": {
        "path": "/missing", "interval": 0.3, "timeout": 2}}))
    result = pair.up("staging", check=False)
    assert result.code != 0
    host = bench.hosts[0].address
    assert (f"host {host}: container shop-web-staging-v3 (role web) of destination staging did not become healthy within 8s; "
            f"it was removed and the previous version keeps serving. Last health check: HTTP/1.1 404 Not Found from "
            in result.out), result.out
    # the container is gone: the line keeps what it printed last (this app prints nothing: `-`)
    assert "/missing. Last output: -" in result.out, result.out
    assert "Traceback" not in result.out
    assert "version=v2" in get(bench, "staging")
    assert named(bench, "staging") == before  # the failed container is gone, nothing else changed
    deploy(pair, bench, "staging", "v3")  # and the next up starts cleanly
    assert "version=v3" in get(bench, "staging")


def test_rollback_to_a_retained_version_builds_and_pushes_nothing(bench, pair):
    deploy(pair, bench, "staging", "v2")
    deploy(pair, bench, "staging", "v3")  # v2 retained
    log = DaemonLog(bench.root, 1)
    log.mark()
    deploy(pair, bench, "staging", "v2")
    assert "version=v2" in get(bench, "staging")
    calls = log.mutating_calls()
    assert not [c for c in calls if "/build" in c or "/push" in c], calls
    assert any("/containers/create" in c for c in calls)


def test_retention_and_prune_never_cross_destinations(bench, pair):
    deploy(pair, bench, "production", "v2")
    deploy(pair, bench, "production", "v3")
    prod_containers, prod_images, tags = containers(bench, "production"), images(bench, "production"), registry_tags()
    assert prod_containers["v3"] == "running" and prod_containers["v2"] == prod_containers["v1"] == "exited"
    for n in range(4, 10):  # six staging deploys
        deploy(pair, bench, "staging", f"v{n}")
    assert containers(bench, "production") == prod_containers
    assert images(bench, "production") == prod_images
    assert {t for t in registry_tags() if t.endswith("-production")} == {t for t in tags if t.endswith("-production")}
    staging = containers(bench, "staging")
    assert staging["v9"] == "running" and len(staging) == 1 + 3  # running + retain_containers stopped
    assert set(staging) == {"v9", "v8", "v7", "v6"}
    assert images(bench, "staging") == {f"{bench.registry}/acme/shop:v{n}-staging" for n in (6, 7, 8, 9)}
    staging_images = images(bench, "staging")
    for n in range(4, 10):  # six production deploys
        deploy(pair, bench, "production", f"v{n}")
    assert containers(bench, "staging") == staging
    assert images(bench, "staging") == staging_images
    assert get(bench, "staging").startswith("service=shop destination=staging version=v9")
    assert get(bench, "production").startswith("service=shop destination=production version=v9")


def test_a_role_removed_from_config_is_removed_from_the_hosts(bench, pair):
    cfg = config(bench, "staging", "v9")
    cfg["servers"]["jobs"] = {"hosts": [bench.hosts[0].address], "cmd": WORKER}
    pair.set_config("staging", cfg)
    pair.up("staging")
    d = host_docker(bench.hosts[0])
    assert d.containers(filters={"label": ["service=shop", "destination=staging", "role=jobs"]})
    deploy(pair, bench, "staging", "v9")  # jobs no longer in the config
    assert not d.containers(all=True, filters={"label": ["service=shop", "destination=staging", "role=jobs"]})
    assert get(bench, "staging").startswith("service=shop destination=staging version=v9")


def test_destroying_staging_keeps_production_and_its_proxy_serving(bench, pair):
    pair.run("destroy", "--yes", stack="staging")
    assert containers(bench, "staging") == {}
    assert images(bench, "staging") == set()
    # nor its build steps (untagged, with its labels; the daemon leaves some when their image goes), the first of
    # which carries the destination alone (the builder adds the labels a step each)
    assert host_docker(bench.hosts[0]).images(all=True, filters={"label": ["service=shop", "destination=staging"]}) \
        == []
    steps = host_docker(bench.hosts[0]).images(filters={"label": ["destination=staging"], "dangling": True})
    assert [i["Labels"] for i in steps if i["Labels"].get("service", "shop") == "shop"] == []
    assert get(bench, "production").startswith("service=shop destination=production version=v1")
    assert host_docker(bench.hosts[0]).containers(filters={"name": "^/kamal-proxy$"})
