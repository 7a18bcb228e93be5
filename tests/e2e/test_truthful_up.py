"""What `pulumi up` reports is what runs, with the real CLI on the bench: a crashing role fails the deploy and loses
nothing, a version names one build, replacements always go through the proxy switch, promotion checks its source,
connection settings never replace anything, an interrupted run leaves no orphan, and mistakes a preview can see
are refused there, in one line. Every test makes its own stacks."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from typing import Any, Callable

import pytest

from tests.conftest import WORKER, Project, commit_app, host_docker, make_project, pulumi_env, requests_during, \
    ssh_config
from tests.e2e.cli_helpers import shipyard

pytestmark = pytest.mark.e2e


@pytest.fixture
def proj(tmp_path) -> Project:
    (tmp_path / "state").mkdir()
    p = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    yield p
    for stack in ("staging", "production", "other"):
        if (p.dir / "stacks" / f"Pulumi.{stack}.yaml").exists():
            p.run("destroy", "--yes", stack=stack, check=False)


def containers(bench, service: str, **labels: str) -> dict[str, str]:
    """name -> state of the service's containers on host 1."""
    filters = [f"service={service}", *(f"{k}={v}" for k, v in labels.items())]
    return {c["Names"][0].lstrip("/"): c["State"] for c in
            host_docker(bench.hosts[0]).containers(all=True, filters={"label": filters})}


def one_line_failure(out: str) -> None:
    assert "Traceback" not in out and "unexpected" not in out, out


def test_a_worker_replaced_by_the_next_version_finishes_its_job(bench, proj):
    """A role without proxy (a job worker) that needs 12 s after SIGTERM to finish its job: the next version's
    rollout gives it the drain timeout (30 s by default, as Kamal does), not Docker's 10 s and a SIGKILL."""
    host = bench.hosts[0].address
    worker = ("trap 'echo draining; sleep 12; echo drained; exit 0' TERM; echo started; "
              "while :; do sleep 1; done")
    cfg = {"service": "drain", "image": "acme/drain", "builder": {"context": "app"},
           "servers": {"jobs": {"hosts": [host], "cmd": worker}}, "readiness_delay": 1, "ssh": ssh_config(bench)}
    proj.init("staging", cfg)
    proj.up("staging")
    first = proj.outputs("staging")["containers"][host]["jobs"]["id"]
    commit_app(proj.dir, "start.sh", (proj.dir / "app" / "start.sh").read_text() + "# the next version\n")
    proj.up("staging")
    d = host_docker(bench.hosts[0])
    state = d.inspect_container(first)["State"]
    logs = d.logs(first).decode()
    assert (state["Running"], state["ExitCode"]) == (False, 0), (state, logs)  # not killed (137)
    assert "drained" in logs.splitlines(), logs


def test_a_build_host_that_deploys_nothing_keeps_no_image_after_destroy(bench, proj):
    """builder.host builds; the app runs elsewhere. The build host's copies of the destination's images are removed
    with the rest (before, only the hosts the image shipped to were visited)."""
    builder, runner = bench.hosts[1], bench.hosts[0]
    cfg = {"service": "bhost", "image": "acme/bhost", "builder": {"context": "app", "host": builder.address},
           "servers": {"jobs": {"hosts": [runner.address], "cmd": WORKER}}, "readiness_delay": 1,
           "ssh": ssh_config(bench)}
    proj.init("staging", cfg)
    proj.up("staging")
    commit_app(proj.dir, "start.sh", (proj.dir / "app" / "start.sh").read_text() + "# the next version\n")
    proj.up("staging")
    labels = {"label": ["service=bhost", "destination=staging"]}
    assert host_docker(builder).images(filters=labels)  # built there, twice
    proj.run("destroy", "--yes", stack="staging")
    assert host_docker(runner).images(filters=labels) == []
    assert host_docker(builder).images(filters=labels) == []


def test_a_crashing_role_fails_the_deploy_and_loses_nothing(bench, proj):
    host = bench.hosts[0].address

    def cfg(version: str, cmd: str = WORKER) -> dict[str, Any]:
        return {"service": "crash", "image": "acme/crash", "version": version, "builder": {"context": "app"},
                "servers": {"jobs": {"hosts": [host], "cmd": cmd}}, "readiness_delay": 1, "ssh": ssh_config(bench)}
    proj.init("staging", cfg("v1"))
    proj.up("staging")
    proj.set_config("staging", cfg("v2"))
    proj.up("staging")
    proj.set_config("staging", cfg("v3", cmd="echo cannot start; false"))
    result = proj.up("staging", check=False)
    assert result.code != 0
    assert (f"host {host}: container crash-jobs-staging-v3 (role jobs) of destination staging exited with code 1"
            in result.out), result.out
    assert "it was stopped (kept for the next `up`) and the previous version keeps running. Last output: cannot " \
        "start" in result.out
    one_line_failure(result.out)
    assert containers(bench, "crash") == {"crash-jobs-staging-v2": "running", "crash-jobs-staging-v1": "exited",
                                          "crash-jobs-staging-v3": "exited"}
    # the stack's outputs (what a promotion from it and `shipyard` read) still name the version that runs
    outs = json.loads(proj.run("stack", "output", "--json", stack="staging").out)
    assert (outs["version"], outs["tag"], outs["containers"][host]["jobs"]["name"]) == (
        "v2", "acme/crash:v2-staging", "crash-jobs-staging-v2"), outs
    preview = proj.run("preview", stack="staging").out  # the rollout still knows v2 runs: v3 is still to do
    assert "crash-staging-rollout-start update" in preview and "2 to update" in preview, preview
    proj.set_config("staging", cfg("v3"))
    proj.up("staging")
    assert containers(bench, "crash") == {"crash-jobs-staging-v3": "running", "crash-jobs-staging-v2": "exited",
                                          "crash-jobs-staging-v1": "exited"}


def _proxied(bench, service: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"service": service, "image": f"acme/{service}", "version": version, "builder": {"context": "app"},
            "registry": {"server": bench.registry}, "servers": {"web": {"hosts": [bench.hosts[0].address]}},
            "proxy": {"hosts": [f"{service}.test"], "healthcheck": {"interval": 0.3, "timeout": 2},
                      "deploy_timeout": 10, "drain_timeout": 2},
            "ssh": ssh_config(bench), **extra}


def _web_and_worker(bench, service: str, version: str, path: str, worker: str, **extra: Any) -> dict[str, Any]:
    """A web role behind the proxy (health path `path`) and a worker (`worker` its command), on host 1."""
    c = _proxied(bench, service, version, **extra)
    c["servers"]["jobs"] = {"hosts": [bench.hosts[0].address], "cmd": worker}
    c["proxy"]["healthcheck"]["path"] = path
    return c


def _up_until(proj: Project, reached: Callable[[], bool], deadline_s: float = 90) -> subprocess.Popen:
    """`pulumi up` of staging in the background, returned once `reached()` holds (the test then interrupts it)."""
    argv = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", "staging"]
    up = subprocess.Popen(argv, cwd=proj.dir, env=proj.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and not reached():
        time.sleep(0.1)
    assert reached(), "the run never got there"
    return up


def _running(bench, service: str) -> set[str]:
    return {n for n, state in containers(bench, service, destination="staging").items() if state == "running"}


def get(bench, name: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": name})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


RELEASE_APP = {  # the app says which release its files are from
    "Dockerfile": "FROM busybox:latest\nCOPY start.sh release /\nCMD [\"/bin/sh\", \"/start.sh\"]\n",
    "start.sh": "mkdir -p /www && echo ok > /www/up\n"
                "printf 'destination=%s version=%s release=%s\\n' \"$SHIPYARD_DESTINATION\" \"$SHIPYARD_VERSION\" "
                "\"$(cat /release)\" > /www/index.html\nhttpd -f -p 80 -h /www &\ntrap 'kill $!; exit 0' TERM\nwait\n",
    "release": "R1\n",
}


def test_a_version_names_one_build(bench, tmp_path):
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path, RELEASE_APP), pulumi_env(tmp_path / "state"))
    try:
        proj.init("staging", _proxied(bench, "ver", "r1"))
        proj.up("staging")
        assert get(bench, "ver.test") == "destination=staging version=r1 release=R1\n"
        commit_app(proj.dir, "release", "R2\n")
        proj.set_config("staging", _proxied(bench, "ver", "r2"))
        proj.up("staging")
        assert get(bench, "ver.test") == "destination=staging version=r2 release=R2\n"
        # back to r1 with R2 checked out: r1's own build serves, and the preview says so
        proj.set_config("staging", _proxied(bench, "ver", "r1"))
        preview = proj.run("preview", "--diff", stack="staging").out
        assert "the image already built for version r1" in preview, preview
        proj.up("staging")
        assert get(bench, "ver.test") == "destination=staging version=r1 release=R1\n"
        # the same version with other build settings is refused before anything changes
        proj.set_config("staging", _proxied(bench, "ver", "r1", builder={"context": "app", "args": {"X": "1"}}))
        before = containers(bench, "ver")
        result = proj.run("preview", stack="staging", check=False)
        assert result.code != 0 and "version r1 already names a build and build_args changed: set a new version" \
            in result.out, result.out
        one_line_failure(result.out)
        assert proj.up("staging", check=False).code != 0
        assert containers(bench, "ver") == before
        assert get(bench, "ver.test") == "destination=staging version=r1 release=R1\n"
        # pinned at r1, the app gets a new commit: r1 is still that build - nothing to change, nothing refused
        proj.set_config("staging", _proxied(bench, "ver", "r1"))
        commit_app(proj.dir, "release", "R3\n")
        preview = proj.run("preview", "--expect-no-changes", stack="staging").out
        assert "version r1 is pinned (shipyard:version): its image is reused" in preview, preview
        proj.up("staging")
        assert get(bench, "ver.test") == "destination=staging version=r1 release=R1\n"
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)


def test_an_env_or_secret_change_goes_through_the_proxy_switch_and_drops_nothing(bench, proj, capsys):
    proj.init("staging", _proxied(bench, "envy", "v1", env={"secret": ["GREETING"]}),
              secrets={"shipyard:secrets.GREETING": "first"})
    proj.up("staging")
    with requests_during(lambda: get(bench, "envy.test")) as seen:
        proj.run("config", "set", "--secret", "--path", "shipyard:secrets.GREETING", "second", stack="staging")
        proj.up("staging")
        time.sleep(0.5)
    results = ["destination=staging" in (answer or "") for _, answer in seen]
    with capsys.disabled():
        print(f"\nsecret change: {len(results)} requests, {results.count(False)} failed")
    assert len(results) > 50 and results.count(False) == 0
    assert "greeting=second" in get(bench, "envy.test")


def test_a_role_that_never_becomes_healthy_moves_no_other_role(bench, proj, capsys):
    """web (behind the proxy) and jobs (a worker) go together: the new web container never answers its health
    path, so the failed `up` leaves both roles on the previous version - the worker's new container was never
    started, its old one never stopped - and the outputs still name what runs. So does a new worker that exits, and
    a second proxied role that never becomes healthy. The next `up` moves both."""
    host = bench.hosts[0].address

    def cfg(version: str, path: str = "/up", worker: str = WORKER) -> dict[str, Any]:
        return _web_and_worker(bench, "unit", version, path, worker, readiness_delay=1)

    def running() -> set[str]:
        return _running(bench, "unit")

    def fails(config: dict[str, Any], says: str) -> list:
        """A failed `up` of `config` that says `says` in one line and moves no role; the requests during it."""
        proj.set_config("staging", config)
        with requests_during(lambda: get(bench, "unit.test")) as seen:
            result = proj.up("staging", check=False)
        assert result.code != 0 and says in result.out, result.out
        one_line_failure(result.out)
        assert running() == {"unit-web-staging-v1", "unit-jobs-staging-v1"}
        assert "version=v1" in get(bench, "unit.test")
        return seen
    proj.init("staging", cfg("v1"))
    proj.up("staging")
    before = proj.outputs("staging")["containers"]
    failing = fails(cfg("v2", path="/never"),
                    f"host {host}: container unit-web-staging-v2 (role web) of destination staging did not become "
                    f"healthy")
    assert proj.outputs("staging")["containers"] == before
    # the other way round: the new web container is healthy, the new worker exits - the web one is stopped again
    # (never routed), not left running beside the old one
    crashing = fails(cfg("v2", worker="echo cannot start; false"),
                     "unit-jobs-staging-v2 (role jobs) of destination staging exited with code 1")
    # a second role behind the proxy, new in this version, never healthy: the new web container was made ready
    # before it failed, and no rollout start comes after a failure - it is stopped, not left running unrouted
    broken_api = cfg("v3")
    broken_api["servers"]["api"] = {"hosts": [host], "proxy": {
        "hosts": ["api.unit.test"], "healthcheck": {"path": "/never", "interval": 0.3, "timeout": 2},
        "deploy_timeout": 4}}
    other_role = fails(broken_api, "unit-api-staging-v3 (role api) of destination staging did not become healthy")
    proj.set_config("staging", cfg("v4"))
    with requests_during(lambda: get(bench, "unit.test")) as after:
        proj.up("staging")
    assert running() == {"unit-web-staging-v4", "unit-jobs-staging-v4"}
    assert "version=v4" in get(bench, "unit.test")
    for what, seen in (("failed up", failing), ("failed up, a worker exits", crashing),
                       ("failed up, another proxied role", other_role), ("next up", after)):
        results = ["destination=staging" in (answer or "") for _, answer in seen]
        with capsys.disabled():
            print(f"\n{what} across roles: {len(results)} requests, {results.count(False)} failed")
        assert len(results) > 20 and results.count(False) == 0


def test_one_ctrl_c_leaves_every_role_as_it_was_and_the_next_up_finishes(bench, proj, capsys):
    """One Ctrl-C while the rollout starts the new worker: the engine finishes that step, starts none after it and
    tells the plugin (`Cancel`), so the step stops the new worker again and the new web container, which no route
    targets yet: the old version runs alone, as before the deploy, not two versions of the worker side by side.
    The next `up` finishes the rollout. No request fails."""
    def cfg(version: str) -> dict[str, Any]:
        return _web_and_worker(bench, "half", version, "/up", WORKER, readiness_delay=4)

    def running() -> set[str]:
        return _running(bench, "half")
    proj.init("staging", cfg("v1"))
    proj.up("staging")
    proj.set_config("staging", cfg("v2"))
    with requests_during(lambda: get(bench, "half.test")) as interrupted:
        up = _up_until(proj, lambda: "half-jobs-staging-v2" in running())
        up.send_signal(signal.SIGINT)  # once: the step in flight (the rollout's start) finishes, nothing after it
        out, _ = up.communicate(timeout=120)
    assert up.returncode != 0, out
    assert "destination staging: the deploy was interrupted while its rollout started the new workers: they were " \
           "stopped again; no role changed" in out, out
    assert running() == {"half-web-staging-v1", "half-jobs-staging-v1"}, out
    assert "version=v1" in get(bench, "half.test")
    with requests_during(lambda: get(bench, "half.test")) as after:
        proj.up("staging")
    assert running() == {"half-web-staging-v2", "half-jobs-staging-v2"}
    assert "version=v2" in get(bench, "half.test")
    for what, seen in (("the interrupted up", interrupted), ("the next up", after)):
        results = ["destination=staging" in (answer or "") for _, answer in seen]
        with capsys.disabled():
            print(f"\n{what}: {len(results)} requests, {results.count(False)} failed")
        assert len(results) > 20 and results.count(False) == 0


def test_promotion_from_another_service_is_refused_at_preview(bench, proj):
    host = bench.hosts[0].address
    proj.init("staging", {"service": "hello", "image": "acme/hello", "builder": {"context": "app"},
                          "registry": {"server": bench.registry}, "ssh": ssh_config(bench),
                          "servers": {"web": {"hosts": [host], "ports": ["8131:80"]}}})
    proj.up("staging")
    proj.init("other", {"service": "newapp", "image": "acme/newapp", "promote": {"from_stack": "staging"},
                        "registry": {"server": bench.registry}, "ssh": ssh_config(bench),
                        "servers": {"web": {"hosts": [host], "ports": ["8132:80"]}}})
    result = proj.run("preview", stack="other", check=False)
    assert result.code != 0
    assert "stack staging deploys service 'hello', not 'newapp': promote only from a stack of the same service" \
        in result.out
    one_line_failure(result.out)
    assert not containers(bench, "newapp")


def test_connection_settings_never_replace_and_refresh_finds_no_change(bench, proj, tmp_path):
    host = bench.hosts[0].address
    cfg = {"service": "conn", "image": "acme/conn", "version": "v1", "builder": {"context": "app"},
           "servers": {"web": {"hosts": [host], "ports": ["8141:80"]}},
           "accessories": {"db": {"image": "busybox:latest", "host": host, "cmd": WORKER,
                                  "files": ["app/start.sh:/etc/start.sh"]}},
           "ssh": ssh_config(bench)}
    proj.init("staging", cfg)
    proj.up("staging")
    proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")
    moved = tmp_path / "elsewhere" / "known_hosts"
    moved.parent.mkdir()
    shutil.copy(bench.known_hosts, moved)
    proj.set_config("staging", {**cfg, "ssh": {**ssh_config(bench), "known_hosts": str(moved)}})
    preview = proj.run("preview", stack="staging").out
    assert "to replace" not in preview and "to update" in preview, preview
    ids = {n: s for n, s in containers(bench, "conn").items()}
    proj.up("staging")
    assert containers(bench, "conn") == ids
    proj.run("preview", "--expect-no-changes", stack="staging")


def test_a_wrong_ssh_user_fails_one_up_and_the_next_with_it_put_right_deletes_and_destroys(bench, proj):
    """`ssh.user` set wrong: the `up` fails in one line naming it, and the state keeps the settings that reached the
    host (an update that changes them reaches the host that way first). Put right, with a new version in the same
    `up` - so the old image and container are deleted by what the state recorded - it succeeds with no pending
    delete left, and a destroy works. (Before, the failed `up` recorded the wrong user for what it could update
    without the host, and every later `up` and the destroy failed deleting with it.)"""
    host = bench.hosts[0].address
    cfg = {"service": "reach", "image": "acme/reach", "version": "v1", "builder": {"context": "app"},
           "registry": {"server": bench.registry},
           "servers": {"web": {"hosts": [host], "ports": ["8142:80"]}}, "ssh": ssh_config(bench)}
    proj.init("staging", cfg)
    proj.up("staging")
    proj.set_config("staging", {**cfg, "ssh": {**ssh_config(bench), "user": "nobodyhere"}})
    failed = proj.up("staging", check=False)
    assert failed.code != 0 and "SSH login as nobodyhere was refused" in failed.out, failed.out
    one_line_failure(failed.out)
    assert "nobodyhere" not in proj.run("stack", "export", stack="staging").out
    proj.set_config("staging", {**cfg, "version": "v2"})
    proj.up("staging")
    assert containers(bench, "reach") == {"reach-web-staging-v2": "running", "reach-web-staging-v1": "exited"}
    resources = json.loads(proj.run("stack", "export", stack="staging").out)["deployment"]["resources"]
    assert not [r["urn"] for r in resources if r.get("delete")] and not pending_operations(proj)
    proj.run("destroy", "--yes", "--skip-preview", stack="staging")
    assert not containers(bench, "reach")


def test_an_interrupted_up_leaves_no_orphan_after_the_next_up(bench, proj):
    host = bench.hosts[0].address

    def cfg(version: str) -> dict[str, Any]:
        return {"service": "intr", "image": "acme/intr", "version": version, "builder": {"context": "app"},
                "servers": {"web": {"hosts": [host], "ports": ["8151:80"]},
                            "jobs": {"hosts": [host], "cmd": WORKER}},
                "readiness_delay": 3, "ssh": ssh_config(bench)}
    proj.init("staging", cfg("v1"))
    proj.up("staging")
    proj.set_config("staging", cfg("v2"))
    up = _up_until(proj, lambda: any("-v2" in n for n in containers(bench, "intr")))
    up.send_signal(signal.SIGINT)
    time.sleep(0.3)
    up.send_signal(signal.SIGINT)
    out, _ = up.communicate(timeout=120)
    assert up.returncode != 0, out
    proj.run("cancel", "--yes", stack="staging", check=False)
    # what a user's state then holds: pending operations, unless both Ctrl-Cs fell between two operations
    left = pending_operations(proj)
    deployed = shipyard(proj.dir, proj.env, "deploy", "-s", "staging")
    assert ("an interrupted run left this behind, now read back from the hosts and cleared: " in deployed.err) \
        == bool(left), (left, deployed.err)
    assert pending_operations(proj) == []
    assert "pending operations" not in proj.up("staging").out  # no warning left for later runs
    assert containers(bench, "intr") == {"intr-web-staging-v2": "running", "intr-web-staging-v1": "exited",
                                         "intr-jobs-staging-v2": "running", "intr-jobs-staging-v1": "exited"}


def pending_operations(proj: Project) -> list[dict[str, Any]]:
    state = json.loads(proj.run("stack", "export", stack="staging").out)
    return state["deployment"].get("pending_operations") or []


LATE = [
    ("two roles publish one host port",
     {"servers": {"web": {"hosts": ["h1"], "ports": ["8080:80"]}, "jobs": {"hosts": ["h1"], "ports": ["8080:81"]}}},
     "servers.web.ports[0]: host port 8080/tcp on h1 is already published by servers.jobs.ports[0]"),
    ("a promotion with a builder",
     {"servers": ["h1"], "promote": {"from_stack": "production"}, "builder": {"context": "app"}},
     "builder: a promoting stack runs the version and image of production as they are"),
    ("a relative host path", {"servers": {"web": {"hosts": ["h1"], "volumes": ["../etc:/etc"]}}},
     "servers.web.volumes[0]: '../etc:/etc': '../etc' is neither an absolute host path nor a volume name"),
]


@pytest.mark.parametrize("case,cfg,message", LATE, ids=[c[0] for c in LATE])
def test_mistakes_are_refused_at_preview_in_one_line(proj, case, cfg, message):
    proj.init("staging", {"service": "late", "image": "acme/late", **cfg})
    result = proj.run("preview", stack="staging", check=False)
    assert result.code != 0 and f"stack staging: {message}" in result.out, result.out
    one_line_failure(result.out)
