"""A destination's kamal-proxy route on the bench, with the real CLI: `pulumi refresh` reports what the route serves
(a route pointed elsewhere by hand is drift, and the next `up` switches it back), and a container that a route
still targets is never stopped by its own delete, whatever order the engine runs pending deletes in. The tests
share one deployment (`converge` brings it to the state each starts from), so each also runs alone."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from components import hostlock, hosts
from components.hosts import SSHTarget
from tests.conftest import WORKER, Project, host_docker, make_project, pulumi_env, ssh_config, show_after

pytestmark = pytest.mark.e2e

NAME = "route.test"
ROUTE = "route-web-staging"
SEEN: list[str] = []  # figures, printed at the end of the module


def config(bench, version: str, **extra: Any) -> dict[str, Any]:
    return {"service": "route", "image": "acme/route", "version": version, "builder": {"context": "app"},
            "registry": {"server": bench.registry}, "servers": {"web": {"hosts": [bench.hosts[0].address]}},
            "proxy": {"hosts": [NAME], "healthcheck": {"interval": 0.3, "timeout": 2}, "deploy_timeout": 10,
                      "drain_timeout": 1},
            "ssh": ssh_config(bench), "readiness_delay": 0, "lock_timeout": 3, **extra}


@pytest.fixture(scope="module")
def proj(bench, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("routes")
    (root / "state").mkdir()
    p = Project(make_project(root), pulumi_env(root / "state"))
    p.init("staging", config(bench, "v1"))
    yield p
    p.run("destroy", "--yes", stack="staging", check=False)


def get(bench) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": NAME})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


def answer(bench) -> str:
    try:
        return get(bench)
    except OSError as exc:
        return f"error: {exc}"


def proxy_exec(bench, *argv: str) -> str:
    """`kamal-proxy <argv>` in the host's proxy, through the host's own daemon (as someone on the host would)."""
    d = host_docker(bench.hosts[0])
    exec_id = d.exec_create("kamal-proxy", ["kamal-proxy", *argv])["Id"]
    out = d.exec_start(exec_id).decode(errors="replace")
    assert d.exec_inspect(exec_id)["ExitCode"] == 0, out
    return out


def containers(bench, service: str = "route") -> dict[str, str]:
    return {c["Names"][0].lstrip("/"): c["State"] for c in host_docker(bench.hosts[0]).containers(
        all=True, filters={"label": [f"service={service}", "destination=staging"]})}


def request_loop(bench, results: list[str], stop: threading.Event) -> None:
    """Bounded: at most 3000 requests or 180 s, to the bench host's own address only."""
    end = time.monotonic() + 180
    while not stop.is_set() and len(results) < 3000 and time.monotonic() < end:
        results.append(answer(bench))
        time.sleep(0.01)


@pytest.fixture
def by_hand(bench):
    """Starts a container as someone on the host would, on the proxy's network (once the proxy runs), answering a
    body of its own; removed after the test."""
    d = host_docker(bench.hosts[0])
    started = []

    def start() -> str:
        script = "mkdir -p /www && echo by-hand > /www/index.html && echo ok > /www/up && exec httpd -f -p 80 -h /www"
        started.append(d.create_container("busybox:latest", command=["sh", "-c", script], name="route-by-hand",
                                          host_config=d.create_host_config(network_mode="kamal"))["Id"])
        d.start(started[-1])
        return "route-by-hand"
    yield start
    for cid in started:
        d.remove_container(cid, force=True)


def test_refresh_reports_a_route_pointed_elsewhere_by_hand_and_up_switches_it_back(bench, proj, by_hand):
    proj.converge("staging", config(bench, "v1"))
    by_hand = by_hand()
    proj.run("refresh", "--yes", "--expect-no-changes", stack="staging")  # nothing drifted: nothing to report
    proxy_exec(bench, "deploy", ROUTE, "--target", f"{by_hand}:80", "--host", NAME, "--health-check-path", "/up",
               "--drain-timeout", "1s")
    proj.dirty("staging")
    assert answer(bench).strip() == "by-hand"

    refresh = proj.run("refresh", "--yes", "--diff", stack="staging").out
    assert "1 updated" in refresh and by_hand in refresh, refresh
    preview = proj.run("preview", "--diff", stack="staging").out
    assert "~ 1 to update" in preview, preview
    proj.up("staging")
    assert answer(bench).startswith("service=route destination=staging version=v1 role=web"), answer(bench)
    assert host_docker(bench.hosts[0]).inspect_container(by_hand)["State"]["Running"]  # not ours: left alone
    proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")


def pending_deletes(proj: Project) -> dict[str, str]:
    """The resources the engine still has to delete (left by a failed update), from the stack's state: name -> URN."""
    state = json.loads(proj.run("stack", "export", stack="staging").out)
    return {r["urn"].rsplit("::", 1)[1]: r["urn"] for r in state["deployment"]["resources"] if r.get("delete")}


def counted(bench, what: str, run, service: str = "route") -> list[str]:
    """Runs `run()` while a request loop goes through the proxy; returns the failed answers and notes the figures."""
    results: list[str] = []
    stop = threading.Event()
    loop = threading.Thread(target=request_loop, args=(bench, results, stop))
    loop.start()
    try:
        run()
        time.sleep(0.3)
    finally:
        stop.set()
        loop.join()
    bad = [r for r in results if not re.match(rf"service={service} destination=staging version=v", r)]
    SEEN.append(f"{what}: {len(results)} requests, {len(bad)} failed")
    assert len(results) > 20, results
    return bad


def test_a_failed_switch_leaves_every_role_as_it_was_and_a_pending_delete_never_stops_what_is_routed(bench, proj):
    """The new containers are created and ready and the new worker has started, then the route's switch fails (the
    host lock's deadline passes: an exclusive holder, as another stack changing the proxy, outlasts the stack's
    `lock_timeout`). Every role is left as it was: the new worker stops again and the old one does the work; the
    engine keeps the old web container as a pending delete while kamal-proxy still routes to it. Whenever the engine
    runs that delete - here first and alone, as `up --target` does - the old container keeps serving, and the next
    `up` switches the route, which then stops it, and starts the new worker before it stops the old one. Request
    loops through the proxy see no failure."""
    def with_worker(version: str) -> dict[str, Any]:
        cfg = config(bench, version)
        return {**cfg, "servers": {**cfg["servers"], "jobs": {"hosts": [bench.hosts[0].address], "cmd": WORKER}}}
    proj.converge("staging", with_worker("v1"))
    host = bench.hosts[0]
    t = SSHTarget(host=host.address, port=host.port, user=host.user, keys=(bench.identity_file,),
                  known_hosts=bench.known_hosts)
    proj.set_config("staging", with_worker("v2"))
    try:
        with hostlock.held(t, stack="shipyard/other", doing="starting kamal-proxy", timeout=10):
            failed = proj.up("staging", check=False)
    finally:
        hosts.close_all()
    assert failed.code != 0 and "waited 3s for the host lock" in failed.out, failed.out
    before = {"route-web-staging-v2": "running", "route-web-staging-v1": "running",
              "route-jobs-staging-v1": "running", "route-jobs-staging-v2": "exited"}
    assert containers(bench) == before
    assert answer(bench).startswith("service=route destination=staging version=v1 "), answer(bench)
    old = pending_deletes(proj)[f"route-staging-web@{host.address}"]  # the old container (and the old image)

    bad = counted(bench, "up --target the pending delete of the container a route serves",
                  lambda: proj.run("up", "--yes", "--skip-preview", "--target", old, stack="staging"))
    assert not bad, sorted(set(bad))[:3]
    assert containers(bench) == before
    bad = counted(bench, "the next up, which switches the route", lambda: proj.up("staging"))
    assert not bad, sorted(set(bad))[:3]
    assert answer(bench).startswith("service=route destination=staging version=v2 "), answer(bench)
    assert containers(bench) == {"route-web-staging-v2": "running", "route-web-staging-v1": "exited",
                                 "route-jobs-staging-v2": "running", "route-jobs-staging-v1": "exited"}
    assert not pending_deletes(proj)


def test_a_renamed_route_takes_over_its_host_names_and_the_old_route_goes(bench, proj):
    """A new service name renames the route (so does a takeover's destination); kamal-proxy refuses a second route
    for host names another route holds. The old route, serving this stack's container, hands them over."""
    proj.converge("staging", config(bench, "v1"))
    renamed = config(bench, "v1", service="rename", image="acme/rename")
    proj.set_config("staging", renamed)
    bad = counted(bench, "a service rename (its route handed over)", lambda: proj.up("staging"),
                  service="(route|rename)")
    assert answer(bench).startswith("service=rename destination=staging version=v1 "), answer(bench)
    routes = proxy_exec(bench, "list")
    assert "rename-web-staging" in routes and ROUTE not in routes, routes
    assert containers(bench) == {} and containers(bench, "rename") == {"rename-web-staging-v1": "running"}
    proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")
    # between the old route's removal and the new one's deploy (one health check) the host names route nowhere:
    # kamal-proxy has no way to rename a route or hand host names over at once
    assert len(bad) <= 25, sorted(set(bad))[:3]


def test_a_second_stack_with_the_first_ones_proxy_hosts_is_refused_before_any_of_its_containers_runs(bench, proj):
    """A new destination copied from staging's file that kept its proxy hosts: its preview refuses in one line that
    names the route holding them; so does its `up`, before any of its containers runs - its worker included - while
    staging keeps answering."""
    proj.converge("staging", config(bench, "v1"))
    host = bench.hosts[0].address
    copy = config(bench, "v1", service="copy", image="acme/copy")
    copy["servers"] = {**copy["servers"], "jobs": {"hosts": [host], "cmd": WORKER}}
    refusal = (f"host {host}: kamal-proxy route {ROUTE} holds the host names of route copy-web-scratch and serves "
               f"container route-web-staging-v1 of stack")
    proj.run("stack", "rm", "--yes", "--force", stack="scratch", check=False)
    proj.init("scratch", copy)
    try:
        preview = proj.run("preview", stack="scratch", check=False)
        assert not preview.ok and refusal in preview.out and "Traceback" not in preview.out, preview.out
        failed: list[Any] = []
        bad = counted(bench, "a second stack's refused up", lambda: failed.append(proj.up("scratch", check=False)))
        assert not failed[0].ok and refusal in failed[0].out and "Traceback" not in failed[0].out, failed[0].out
        assert not bad, sorted(set(bad))[:3]
        running = {c["Names"][0].lstrip("/") for c in host_docker(bench.hosts[0]).containers(
            filters={"label": ["service=copy"]})}
        assert running == set(), running
        assert "copy-web-scratch" not in proxy_exec(bench, "list")
    finally:
        proj.run("destroy", "--yes", stack="scratch", check=False)
        proj.run("stack", "rm", "--yes", stack="scratch", check=False)


def test_a_route_with_several_path_prefixes_serves_each_and_nothing_else(bench, proj):
    """proxy.path_prefix as a list (Kamal's path_prefixes): kamal-proxy routes each, stripped before the app; the
    host name's other paths are not this route's."""
    cfg = config(bench, "v1")
    cfg["proxy"] = {**cfg["proxy"], "path_prefix": ["/shop", "/store"]}
    proj.converge("staging", cfg)

    def at(path: str) -> str:
        req = urllib.request.Request(f"http://{bench.hosts[0].address}{path}", headers={"Host": NAME})
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
    for path in ("/shop/", "/store/"):
        assert at(path).startswith("service=route destination=staging version=v1 "), (path, at(path))
    assert at("/elsewhere") == "HTTP 404"
    assert proj.outputs("staging")["urls"] == [f"http://{NAME}/shop", f"http://{NAME}/store"]
    proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    show_after(request, "routes, measured", SEEN)


def test_a_health_check_path_the_app_does_not_answer_names_the_role_and_its_answer(bench, proj):
    """Only the route's health check path changes, to one the app does not answer: kamal-proxy refuses the switch,
    and the one line names the role and what the container answers there, as a new container's readiness failure
    does; the previous route keeps serving."""
    proj.converge("staging", config(bench, "v1"))
    cfg = config(bench, "v1")
    cfg["proxy"] = {**cfg["proxy"], "healthcheck": {**cfg["proxy"]["healthcheck"], "path": "/nope"},
                    "deploy_timeout": 3}
    proj.set_config("staging", cfg)
    failed: list[Any] = []
    bad = counted(bench, "a switch kamal-proxy refuses", lambda: failed.append(proj.up("staging", check=False)))
    assert not failed[0].ok, failed[0].out
    assert f"kamal-proxy did not switch {ROUTE} (role web of destination staging) to route-web-staging-v1:80" \
        in failed[0].out, failed[0].out
    assert "last health check: HTTP/1.1 404 Not Found from " in failed[0].out and "80/nope; the previous version " \
        "keeps serving" in failed[0].out, failed[0].out
    assert not bad, sorted(set(bad))[:3]
    assert answer(bench).startswith("service=route destination=staging version=v1 "), answer(bench)
