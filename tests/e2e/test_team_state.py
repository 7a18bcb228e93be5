"""A team's shared state: PostgreSQL as Pulumi's `postgres://` backend (a private cluster), with `shipyard deploy`
from several processes at once, a stack moved in from the file backend, and no secret stored in plain text."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import Project, make_project, pulumi_env, ssh_config
from tests.e2e.cli_helpers import START_SH, shipyard, shipyard_argv
from tests.pgcluster import Cluster, PGError

pytestmark = pytest.mark.e2e

SECRET = "t3am-s3cret-never-plain"


def config(bench, dest: str, version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"service": "team", "image": "acme/team", "version": version, "registry": {"server": bench.registry},
            "builder": {"context": "app"}, "servers": {"web": {"hosts": [bench.hosts[0].address]}},
            "proxy": {"hosts": [f"{dest}.team.test"], "healthcheck": {"path": "/up", "interval": 0.3, "timeout": 2},
                      "deploy_timeout": 30, "drain_timeout": 1},
            "ssh": ssh_config(bench), **extra}


def get(bench, dest: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": f"{dest}.team.test"})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def pg():
    try:
        cluster = Cluster().start()
    except PGError as exc:
        pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def team(bench, pg, tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    (root / "state").mkdir()
    env = {**pulumi_env(root / "state"), "PULUMI_BACKEND_URL": pg.url}
    proj = Project(make_project(root, {"start.sh": START_SH}), env)
    yield proj
    for s in ("alpha", "beta", "gamma", "delta", "epsilon"):
        proj.run("destroy", "--yes", "--remove", stack=s, check=False)


def stack(proj: Project, bench, name: str, **extra: Any) -> None:
    proj.init(name, config(bench, name, **extra))


def test_two_processes_deploy_two_stacks_at_once(bench, team):
    for s in ("alpha", "beta"):
        stack(team, bench, s)
    procs = {s: subprocess.Popen(shipyard_argv("deploy", "-s", s), cwd=team.dir, env=team.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in ("alpha", "beta")}
    results = {s: (p.wait(timeout=600), p.stderr.read()) for s, p in procs.items()}
    assert all(code == 0 for code, _ in results.values()), results
    for s in ("alpha", "beta"):
        assert get(bench, s).startswith(f"service=team destination={s} version=v1")


def test_the_same_stack_twice_stops_at_once_naming_the_holder_or_waits_with_lock_wait(bench, team, pg):
    # the app becomes healthy 8 s after it starts: a deploy that holds the stack's lock for a while
    stack(team, bench, "gamma", env={"clear": {"UP_DELAY": "8"}})
    first = subprocess.Popen(shipyard_argv("deploy", "-s", "gamma"), cwd=team.dir, env=team.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not [k for k in pg.locks() if "/gamma/" in k] and time.monotonic() < deadline:  # bounded: 120 s
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.2)
    waiter = subprocess.Popen(shipyard_argv("deploy", "-s", "gamma", "--lock-wait", "300"), cwd=team.dir,
                              env=team.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = shipyard(team.dir, team.env, "deploy", "-s", "gamma", check=False)
    assert first.poll() is None  # it stopped while the first one still ran
    assert second.code != 0
    [line] = second.err.strip().splitlines()[-1:]
    assert line.startswith("shipyard: stack gamma: deploying is not possible now: ") and "(pid " in line, second.err
    assert "is updating this stack. Wait for it, or pass --lock-wait SECONDS" in line
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert waiter.wait(timeout=600) == 0, waiter.stderr.read()
    assert "is being updated by" in waiter.stderr.read()  # it waited, then deployed
    results = [r["result"] for r in shipyard(team.dir, team.env, "audit", "-s", "gamma", "--json").json()["updates"]]
    assert results == ["succeeded", "succeeded"]
    assert get(bench, "gamma").startswith("service=team destination=gamma version=v1")


def test_a_stack_moved_from_the_file_backend_to_postgres_keeps_working(bench, team, tmp_path):
    files = {**team.env, "PULUMI_BACKEND_URL": f"file://{tmp_path}"}
    on_files = Project(team.dir, files)
    stack(on_files, bench, "delta")
    shipyard(team.dir, files, "deploy", "-s", "delta")
    on_files.run("stack", "export", "--file", str(tmp_path / "delta.json"), stack="delta")
    team.run("stack", "init", "delta")
    team.run("stack", "import", "--file", str(tmp_path / "delta.json"), stack="delta")
    on_files.run("stack", "rm", "--yes", "--force", "--preserve-config", stack="delta")  # postgres holds it now
    team.run("preview", "--expect-no-changes", stack="delta")  # every object is still this stack's
    details = shipyard(team.dir, team.env, "details", "-s", "delta", "--json").json()
    assert [c["container"] for c in details["containers"]] == ["team-web-delta-v1"]
    team.set_config("delta", config(bench, "delta", "v2"))
    shipyard(team.dir, team.env, "deploy", "-s", "delta")
    assert get(bench, "delta").startswith("service=team destination=delta version=v2")


def test_the_state_in_postgres_holds_no_secret_in_plain_text(bench, team, pg):
    team.init("epsilon", config(bench, "epsilon", env={"secret": ["GREETING"]}),
              secrets={"shipyard:secrets.GREETING": SECRET})
    shipyard(team.dir, team.env, "deploy", "-s", "epsilon")
    assert shipyard(team.dir, team.env, "exec", "-s", "epsilon", "--", "sh", "-c", "echo $GREETING").out.strip() \
        == SECRET  # the app does get it
    blobs = pg.blobs()
    assert any("/epsilon" in k for k in blobs)
    assert not [k for k, data in blobs.items() if SECRET.encode() in data]
    assert SECRET not in pg.sql("SELECT data::text FROM pulumi_state")


def test_a_lock_released_as_a_deploy_reads_it_is_an_error_the_deploy_tries_again(pg, tmp_path):
    """The oracle for `stack.LOCK_RELEASED`: the real Pulumi CLI on the real `postgres://` backend, taking the
    stack's lock while another process's lock comes and goes (a row inserted and deleted in a bounded loop). Some of
    its runs see the lock, some succeed; those that fail otherwise fail with what `LOCK_RELEASED` names - what a
    waiting deploy tries again instead of failing."""
    from components.cli.stack import LOCK_RELEASED, command_error_line
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: lockrace\nruntime:\n  name: python\n  options:\n    toolchain: pip\n")
    (project / "__main__.py").write_text("")
    env = {**pulumi_env(tmp_path / "state"), "PULUMI_BACKEND_URL": pg.url}
    subprocess.run(["pulumi", "stack", "init", "s1"], cwd=project, env=env, check=True, capture_output=True)
    [meta] = pg.sql("SELECT key FROM pulumi_state WHERE key LIKE '%.pulumi/meta.yaml'").split()
    lock = meta.replace("meta.yaml", "locks/organization/lockrace/s1/00000000-0000-0000-0000-000000000000.json")
    content = base64.b64encode(json.dumps({"pid": 1, "username": "other", "hostname": "ci",
                                           "timestamp": "2026-01-01T00:00:00Z"}).encode()).decode()
    toggles = tmp_path / "toggle.sql"
    toggles.write_text(f"INSERT INTO pulumi_state (key, data) VALUES ('{lock}', '{{\"data\": \"{content}\"}}');\n"
                       f"DELETE FROM pulumi_state WHERE key = '{lock}';\n" * 100_000)
    other = pg.psql(["-q", "-f", str(toggles)])
    failures = []
    try:
        for _ in range(20):  # bounded: 20 runs
            run = subprocess.run(["pulumi", "up", "--yes", "--non-interactive", "-s", "s1"], cwd=project, env=env,
                                 capture_output=True, text=True, timeout=120)
            if run.returncode and "the stack is currently locked" not in run.stderr:
                failures.append(run.stderr)
            if len(failures) == 3 or other.poll() is not None:
                break
    finally:
        other.kill()
        other.wait()
    assert failures, "no run read a lock just released: the race did not happen in 20 runs"
    assert [f for f in failures if not LOCK_RELEASED.search(f)] == [], failures
    assert all("NotFound" in command_error_line(f) or "not found" in command_error_line(f) for f in failures)
