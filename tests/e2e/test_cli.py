"""The `shipyard` command against staging and production deployed on ONE bench host: each subcommand shows only
its own destination's objects; a review app comes up beside them and goes without a trace."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import Project, app_head, commit_app, host_docker, make_project, pulumi_env, ssh_config
from tests.e2e.cli_helpers import START_SH, shipyard, shipyard_argv

pytestmark = pytest.mark.e2e

NAMES = {"staging": "staging.ops.test", "production": "ops.test"}


# The versions deployed: no stack pins one, so each is the app's git commit - V["v1"] the first, V["v2"] the next
V: dict[str, str] = {}


def config(bench, dest: str) -> dict[str, Any]:
    host = bench.hosts[0].address
    return {"service": "ops", "image": "acme/ops", "registry": {"server": bench.registry},
            "builder": {"context": "app"}, "servers": {"web": {"hosts": [host]}},
            "proxy": {"hosts": [NAMES[dest]], "healthcheck": {"path": "/up", "interval": 0.3, "timeout": 2},
                      "deploy_timeout": 15, "drain_timeout": 1},
            "env": {"clear": {"GREETING": f"hello from {dest}"}},
            "accessories": {"ticker": {"image": "busybox:latest", "host": host,
                                       "cmd": "trap 'exit 0' TERM; while true; do echo tick-$DEST; sleep 1; done",
                                       "volumes": [f"/tmp/ops-{dest}-data:/data"],  # a host directory
                                       "env": {"clear": {"DEST": dest}}}},
            "retain_containers": 3, "ssh": ssh_config(bench)}


def get(bench, name: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": name})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def ops(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "state").mkdir()
    proj = Project(make_project(root, {"start.sh": START_SH}), pulumi_env(root / "state"))
    V["v1"] = app_head(proj.dir)
    for dest in ("staging", "production"):  # the same commit for both
        proj.init(dest, config(bench, dest))
        shipyard(proj.dir, proj.env, "deploy", "-s", dest)
    V["v2"] = commit_app(proj.dir, "start.sh", START_SH + "# the next version\n")
    shipyard(proj.dir, proj.env, "deploy", "-s", "staging")
    proj.run("stack", "select", "production")  # the default stack of every command without -s
    yield proj
    for stack in ("review-pr1", "staging", "production"):
        proj.run("destroy", "--yes", "--remove", stack=stack, check=False)


def sy(ops, *args, **kw):
    return shipyard(ops.dir, ops.env, *args, **kw)


def test_details_show_each_destination_its_own_containers_routes_and_accessories(bench, ops):
    host = bench.hosts[0].address
    for dest, version in (("staging", V["v2"]), ("production", V["v1"])):
        d = sy(ops, "details", "-s", dest, "--json").json()
        assert (d["destination"], d["version"]) == (dest, version)
        [web] = d["containers"]
        assert (web["host"], web["role"], web["container"], web["state"]) == (host, "web", f"ops-web-{dest}-{version}",
                                                                             "running")
        assert web["route"]["hosts"] == [NAMES[dest]] and web["route"]["state"] == "running"
        assert web["route"]["target"].startswith(web["id"][:12])  # the proxy routes to this very container
        assert [(a["role"], a["container"]) for a in d["accessories"]] == [("ticker", f"ops-{dest}-ticker")]
    text = sy(ops, "details").out  # the selected stack: production
    assert f"ops-web-production-{V['v1']}" in text and "staging" not in text
    assert text.splitlines()[4].split()[:3] == ["HOST", "ROLE", "CONTAINER"]


def test_logs_of_a_role_and_of_an_accessory_stay_within_the_destination(bench, ops):
    host = bench.hosts[0].address
    web = sy(ops, "logs", "-s", "staging", "--role", "web").out.splitlines()
    assert f"{host} | booted destination=staging version={V['v2']}" in web
    assert not [ln for ln in web if "production" in ln]
    ticks = sy(ops, "logs", "-s", "production", "--role", "ticker", "-n", "3", "--grep", "tick-").out.splitlines()
    assert ticks == [f"{host} | tick-production"] * 3
    every = sy(ops, "logs", "-s", "staging", "-n", "1").out.splitlines()
    assert sorted(ln.split(" | ")[0].split()[1] for ln in every) == ["ticker", "web"]


def test_logs_follow_every_host_until_interrupted(bench, ops):
    proc = subprocess.Popen(shipyard_argv("logs", "-f", "-s", "staging", "--role", "ticker", "-n", "0"),
                            cwd=ops.dir, env={**ops.env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT: its threads' stacks
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(lines) < 3 and time.monotonic() < deadline:  # bounded: three new lines or 30 s
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                lines.append(proc.stdout.readline().rstrip("\n"))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=10)
            pytest.fail(f"still running 20 s after Ctrl-C, after {lines}; where each thread was:\n"
                        f"{proc.stderr.read()}")
    assert lines == [f"{bench.hosts[0].address} | tick-staging"] * 3
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()


def test_exec_in_a_new_container_and_in_the_running_one(bench, ops):
    d = host_docker(bench.hosts[0])
    before = {c["Id"] for c in d.containers(all=True)}
    run = sy(ops, "exec", "-s", "staging", "--", "sh", "-c", "echo $SHIPYARD_DESTINATION/$GREETING; "
                                                             "nslookup ticker >/dev/null && echo ticker-found")
    assert run.out.splitlines() == ["staging/hello from staging", "ticker-found"]  # env file and network
    assert {c["Id"] for c in d.containers(all=True)} == before  # the one-off container is gone
    assert sy(ops, "exec", "--reuse", "cat /www/index.html").out.startswith(
        f"service=ops destination=production version={V['v1']}")
    assert sy(ops, "exec", "-s", "staging", "--", "sh", "-c", "exit 7", check=False).code == 7
    # stopped while its command runs (a CI job's timeout): its container goes too
    proc = subprocess.Popen(shipyard_argv("exec", "-s", "staging", "--", "sh", "-c", "echo started; sleep 300"),
                            cwd=ops.dir, env=ops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"  # bounded by the command's own 300 s at most
        deadline, names = time.monotonic() + 10, []
        while not any("-exec-" in n for n in names) and time.monotonic() < deadline:  # bounded: 10 s
            names = [n for c in d.containers() for n in c["Names"]]
        assert any("-exec-" in n for n in names), names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in proc.stderr.read()
    assert {c["Id"] for c in d.containers(all=True)} == before
    # a terminal asked for where there is none: one line, and nothing started (Kamal's docker says the same)
    no_tty = sy(ops, "exec", "-i", "-s", "staging", "sh", check=False)
    assert no_tty.code != 0 and "--interactive: attaches a terminal, and stdin is not one" in no_tty.err, no_tty.err
    assert {c["Id"] for c in d.containers(all=True)} == before


def test_exec_interactive_gets_a_real_terminal(bench, ops):
    master, slave = pty.openpty()
    proc = subprocess.Popen(shipyard_argv("exec", "-i", "-s", "staging", "sh"), cwd=ops.dir,
                            env={**ops.env, "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    sent = False
    try:
        while time.monotonic() < deadline:  # bounded: until the shell exits or 60 s
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if not sent and b"#" in seen:  # the remote shell's prompt
                os.write(master, b"[ -t 0 ] && echo tty=yes; echo dest=$SHIPYARD_DESTINATION; exit 3\r")
                sent = True
            if proc.poll() is not None and not ready:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(master)
    text = seen.decode(errors="replace")
    assert "tty=yes" in text and "dest=staging" in text, text
    assert proc.returncode == 3


def test_versions_list_what_each_destination_retains(bench, ops):
    host = bench.hosts[0].address
    staging = sy(ops, "versions", "-s", "staging", "--json").json()["versions"]
    assert [(r["role"], r["host"], r["version"], r["state"], r["current"]) for r in staging] == [
        ("web", host, V["v2"], "running", True), ("web", host, V["v1"], "exited", False)]
    production = sy(ops, "versions", "--json").json()["versions"]
    assert [(r["version"], r["current"]) for r in production] == [(V["v1"], True)]
    assert V["v2"] in sy(ops, "versions", "-s", "staging").out.splitlines()[1]


def test_rollback_redeploys_a_retained_version_and_only_that_destination(bench, ops):
    """...and, as `kamal rollback`, builds nothing: its hooks say KAMAL_COMMAND=rollback, and pre-build runs not."""
    hooks, log = ops.dir / "rollback-hooks", ops.dir / "rollback-hooks.log"
    hooks.mkdir(exist_ok=True)
    for hook in ("pre-build", "pre-deploy", "post-deploy"):
        (hooks / hook).write_text(f'#!/bin/sh\necho "{hook} $KAMAL_COMMAND $KAMAL_VERSION" >> {log}\n')
        (hooks / hook).chmod(0o755)
    ops.set_config("staging", {**config(bench, "staging"), "hooks": {"path": "rollback-hooks"}})
    try:
        out = sy(ops, "rollback", V["v1"], "-s", "staging", "--json")
        assert out.json()["version"] == V["v1"]
        assert log.read_text().splitlines() == [f"pre-deploy rollback {V['v1']}", f"post-deploy rollback {V['v1']}"]
        assert get(bench, NAMES["staging"]).startswith(f"service=ops destination=staging version={V['v1']}")
        assert get(bench, NAMES["production"]).startswith(f"service=ops destination=production version={V['v1']}")
        missing = sy(ops, "rollback", "v9", "-s", "staging", check=False)
        assert missing.code != 0 and missing.err.strip().splitlines() == [
            f"shipyard: stack staging: version v9 is not retained on web@{bench.hosts[0].address} "
            f"(has {V['v1']}, {V['v2']}): see `shipyard versions`"]
    finally:
        ops.set_config("staging", config(bench, "staging"))
    sy(ops, "rollback", V["v2"], "-s", "staging")  # and back
    assert get(bench, NAMES["staging"]).startswith(f"service=ops destination=staging version={V['v2']}")


def test_audit_shows_who_deployed_what_when(bench, ops):
    who = f"@{socket.gethostname()}"
    staging = sy(ops, "audit", "-s", "staging", "--json").json()["updates"]
    deploys = [(r["action"], r["version"], r["result"]) for r in staging if r["via"] == "shipyard"]
    assert deploys[:2] == [("deploy", V["v1"], "succeeded"), ("deploy", V["v2"], "succeeded")]
    assert all(r["who"].endswith(who) and r["time"] for r in staging if r["via"] == "shipyard")
    production = sy(ops, "audit", "--json").json()["updates"]
    assert [(r["action"], r["version"]) for r in production] == [("deploy", V["v1"])]
    assert sy(ops, "audit").out.splitlines()[0].split() == ["#", "TIME", "ACTION", "RESULT", "VERSION", "WHO", "VIA",
                                                            "MESSAGE"]


def test_a_review_app_comes_up_beside_staging_and_goes_without_a_trace(bench, ops):
    d = host_docker(bench.hosts[0])
    up = sy(ops, "review", "up", "pr1", "--from", "staging", "--json").json()
    assert up["destination"] == "pr1" and up["urls"] == ["http://pr1.staging.ops.test"]
    assert get(bench, "pr1.staging.ops.test").startswith(f"service=ops destination=pr1 version={V['v2']}")
    assert get(bench, NAMES["staging"]).startswith("service=ops destination=staging")
    assert [r["name"] for r in sy(ops, "review", "list", "--json").json()] == ["pr1"]
    labels = {"label": ["service=ops", "destination=pr1"]}
    assert d.containers(filters=labels) and d.images(filters=labels) and d.networks(names=["ops-pr1"])
    [ticker] = d.containers(filters={"name": "^/ops-pr1-ticker$"})  # its own accessory...
    # ...which never writes to staging's host directory: a volume of its own, gone with it
    assert [(m["Type"], m.get("Name"), m["Destination"]) for m in ticker["Mounts"]] == [
        ("volume", "ops-pr1-host-tmp-ops-staging-data", "/data")]
    ops.run("stack", "select", "production")
    down = sy(ops, "review", "down", "pr1")
    assert "pulumi stack rm" not in down.err, down.err  # gone with it, not left for the user to remove
    assert not d.containers(all=True, filters=labels) and not d.images(filters=labels)
    assert not [n for n in d.networks() if n["Name"] == "ops-pr1"]
    assert not d.volumes(filters=labels).get("Volumes")
    assert "ops-pr1-host-tmp-ops-staging-data" not in {v["Name"] for v in d.volumes().get("Volumes") or []}
    assert "review-pr1" not in ops.run("stack", "ls").out
    assert not (ops.dir / "stacks" / "Pulumi.review-pr1.yaml").exists()
    assert get(bench, NAMES["staging"]).startswith("service=ops destination=staging")
    assert get(bench, NAMES["production"]).startswith("service=ops destination=production")


def test_lock_status_and_release_between_deploys(bench, ops):
    host = bench.hosts[0].address
    assert sy(ops, "lock", "status", "-s", "staging", "--json").json() == {host: []}
    assert sy(ops, "lock", "status").out.splitlines()[1].split() == [host, "free", "-", "-", "-", "-", "-"]
    released = sy(ops, "lock", "release", "-s", "staging")
    assert "nobody held the lock" in released.err


def test_a_native_stack_has_kamals_maintenance_hooks_and_accessory_reboot(bench, ops):
    """The same features as from a Kamal config, from the stack's own keys: maintenance and live on one
    destination (the other keeps serving), hooks from a directory the stack names, an accessory rebooted in place."""
    sy(ops, "maintenance", "-s", "staging", "--message", "upgrading")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            get(bench, NAMES["staging"])
        assert err.value.code == 503
        assert get(bench, NAMES["production"]).startswith("service=ops destination=production ")
    finally:
        sy(ops, "live", "-s", "staging")
    assert get(bench, NAMES["staging"]).startswith("service=ops destination=staging ")

    d = host_docker(bench.hosts[0])
    (ticker,) = d.containers(filters={"label": ["service=ops", "destination=staging", "accessory=ticker"]})
    before = d.inspect_container(ticker["Id"])["State"]["StartedAt"]
    sy(ops, "accessory", "reboot", "ticker", "-s", "staging")
    after = d.inspect_container(ticker["Id"])
    assert after["State"]["Running"] and after["State"]["StartedAt"] != before  # the same container, started again

    hooks, log = ops.dir / "hooks", ops.dir / "hooks.log"
    hooks.mkdir()
    for hook in ("pre-deploy", "post-deploy"):
        (hooks / hook).write_text(f'#!/bin/sh\necho "{hook} $KAMAL_DESTINATION $KAMAL_SERVICE" >> {log}\n')
        (hooks / hook).chmod(0o755)
    try:
        ops.set_config("staging", {**config(bench, "staging"), "hooks": {"path": "hooks"}})
        sy(ops, "deploy", "-s", "staging")
        assert log.read_text().splitlines() == ["pre-deploy staging ops", "post-deploy staging ops"]
    finally:
        ops.set_config("staging", config(bench, "staging"))
        sy(ops, "deploy", "-s", "staging")
