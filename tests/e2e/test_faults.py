"""Networks fail mid-deploy: the SSH connection between the deployer and a host is cut (toxiproxy resets it) in each
phase of a version change, the host's dockerd restarts mid-deploy, and a fleet is deployed at 50 ms round trip.
Each time `pulumi up` fails with one line (no traceback), what served keeps serving where the switch had not
happened, and the next `up` converges with no orphan. The cases and what the user saw are printed in every run."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from typing import Any, Callable

import pytest

from tests.conftest import DaemonLog, Project, host_docker, make_project, pulumi_env, ssh_config, show_after

pytestmark = pytest.mark.e2e

NAME = "fault.test"
SEEN: list[str] = []  # (case, what the user saw), printed at the end of the module


def config(bench, version: str, hosts: int = 2) -> dict[str, Any]:
    return {"service": "fault", "image": "acme/fault", "version": version, "builder": {"context": "app"},
            "registry": {"server": bench.registry},
            "servers": {"web": {"hosts": [h.proxied_address for h in bench.hosts[:hosts]]}},
            "proxy": {"hosts": [NAME], "healthcheck": {"interval": 0.3, "timeout": 2}, "deploy_timeout": 15,
                      "drain_timeout": 1},
            "ssh": {**ssh_config(bench), "port": bench.hosts[0].proxied_port}, "readiness_delay": 0}


def answer(host) -> str:
    req = urllib.request.Request(f"http://{host.address}/", headers={"Host": NAME})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.read().decode()
    except OSError as exc:
        return f"error: {exc}"


def ours(host) -> dict[str, str]:
    return {c["Names"][0].lstrip("/"): c["State"] for c in host_docker(host).containers(
        all=True, filters={"label": ["service=fault", "destination=staging"]})}


@pytest.fixture
def staging(bench, tmp_path):
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    proj.init("staging", config(bench, "v1"))
    proj.up("staging")
    yield proj
    proj.run("destroy", "--yes", stack="staging", check=False)


def _calls(log: DaemonLog, pattern: str) -> bool:
    return any(re.search(pattern, c) for c in log.mutating_calls())


PHASES: dict[str, tuple[int, Callable[[DaemonLog, Any], bool]]] = {
    # phase -> (which host to cut, 0-based; when the phase has begun, from that host's daemon log and containers)
    "build": (0, lambda log, host: _calls(log, r"POST /v[\d.]+/build")),
    "ship": (1, lambda log, host: _calls(log, r"POST /v[\d.]+/images/create")),
    "create": (0, lambda log, host: _calls(log, r"POST /v[\d.]+/containers/create")),
    "health wait": (0, lambda log, host: _calls(log, r"POST /v[\d.]+/containers/\w+/start")),  # right after start
    "route switch": (0, lambda log, host: _calls(log, r"POST /v[\d.]+/containers/kamal-proxy/exec")),
    "delete of the old container": (0, lambda log, host: _calls(log, r"POST /v[\d.]+/containers/\w+/stop")),
}


def _up_until(proj: Project, bench, host_index: int, started: Callable[[], bool], fault: Callable[[], None],
              deadline_s: float = 90) -> tuple[int, str, bool]:
    argv = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", "staging"]
    up = subprocess.Popen(argv, cwd=proj.dir, env=proj.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    end = time.monotonic() + deadline_s
    hit = False
    while up.poll() is None and time.monotonic() < end:
        if started():
            fault()
            hit = True
            break
        time.sleep(0.02)
    out, _ = up.communicate(timeout=300)
    return up.returncode, out, hit


def _converged(proj: Project, bench, version: str, hosts: int = 2) -> None:
    proj.up("staging")
    for host in bench.hosts[:hosts]:
        assert f"destination=staging version={version}" in answer(host), answer(host)
        running = [n for n, s in ours(host).items() if s == "running"]
        assert running == [f"fault-web-staging-{version}"], ours(host)
        assert not [n for n in ours(host) if "_pending_" in n or "_replaced_" in n], ours(host)


def _one_line(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if "error:" in ln and "update failed" not in ln
             and "Resource monitor" not in ln and "non-zero exit code" not in ln]
    return lines[-1] if lines else out.strip().splitlines()[-1]


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_connection_cut_in_each_phase_of_a_version_change(bench, staging, fault_proxy, phase):
    index, begun = PHASES[phase]
    host = bench.hosts[index]
    log = DaemonLog(bench.root, index + 1)
    log.mark()
    staging.set_config("staging", config(bench, "v2"))

    def cut():
        fault_proxy.cut(host.name)
        time.sleep(1.5)
        fault_proxy.restore(host.name)

    code, out, hit = _up_until(staging, bench, index, lambda: begun(log, host), cut)
    assert hit, f"the {phase} phase was never seen:\n{out[-2000:]}"
    assert "Traceback" not in out and "unexpected" not in out, out
    SEEN.append(f"cut during {phase}: exit {code}; {_one_line(out) if code else 'the deploy went through'}")
    for h in bench.hosts[:2]:  # whatever served before, or the new version where it switched: never an error
        assert re.search(r"destination=staging version=v[12]", answer(h)), (phase, answer(h))
    _converged(staging, bench, "v2")


def test_dockerd_restarting_mid_deploy(bench, bench_ctl, staging):
    log = DaemonLog(bench.root, 1)
    log.mark()
    staging.set_config("staging", config(bench, "v2"))
    code, out, hit = _up_until(staging, bench, 0, lambda: _calls(log, r"POST /v[\d.]+/containers/create"),
                               lambda: bench_ctl.restart_docker(1))
    assert hit and "Traceback" not in out and "unexpected" not in out, out
    SEEN.append(f"dockerd restart mid-deploy: exit {code}; "
                f"{_one_line(out) if code else 'the deploy went through'}")
    deadline = time.monotonic() + 30
    while "version=v" not in answer(bench.hosts[0]) and time.monotonic() < deadline:
        time.sleep(0.5)  # the proxy and the app come back with the daemon (restart policy)
    _converged(staging, bench, "v2")


def test_four_hosts_at_50_ms_round_trip(bench, tmp_path, fault_proxy):
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    for h in bench.hosts[:4]:
        fault_proxy.add_latency(h.name, 25)
    try:
        proj.init("staging", config(bench, "v1", hosts=4))
        start = time.monotonic()
        proj.up("staging")
        first = time.monotonic() - start
        proj.set_config("staging", config(bench, "v2", hosts=4))
        start = time.monotonic()
        proj.up("staging")
        change = time.monotonic() - start
        SEEN.append(f"4 hosts at 50 ms round trip: first deploy {first:.1f} s, version change {change:.1f} s")
        for h in bench.hosts[:4]:
            assert "destination=staging version=v2" in answer(h), answer(h)
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    show_after(request, "faults, what the user saw", SEEN)
