"""Two destinations acting on one host at the same moment, with the real CLI, round after round on a host that starts
without kamal-proxy: first deploys at once, version changes at once, destroys at once, and one destroy during the
other's first deploy. Every round must succeed and leave each destination answering on its own host name (or the
proxy gone once both are destroyed). The counts are printed in every run.

The rounds of the last scenario follow each other: each one's first deploy is the next one's destination to destroy
(staging's destroy during production's first deploy, then production's during staging's, ...), so the host is
brought to where they start from once, not before each."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from typing import Any

import pytest

from tests.conftest import Project, host_docker, make_project, pulumi_env, ssh_config

pytestmark = pytest.mark.e2e

ROUNDS = int(os.environ.get("SHIPYARD_CONCURRENCY_ROUNDS", "20"))
NAMES = {"staging": "staging.race.test", "production": "race.test"}


def config(bench, dest: str, version: str) -> dict[str, Any]:
    return {"service": "race", "image": "acme/race", "version": version, "builder": {"context": "app"},
            "servers": {"web": {"hosts": [bench.hosts[1].address]}},
            "proxy": {"hosts": [NAMES[dest]], "healthcheck": {"interval": 0.2, "timeout": 2}, "deploy_timeout": 15,
                      "drain_timeout": 1},
            "readiness_delay": 0, "ssh": ssh_config(bench)}


def answer(bench, dest: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[1].address}/", headers={"Host": NAMES[dest]})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.read().decode()
    except OSError as exc:
        return f"error: {exc}"


def at_once(proj: Project, *commands: tuple[str, str]) -> list[tuple[int, str]]:
    """Run `pulumi <verb> --stack <stack>` for each (verb, stack) at the same moment; (exit code, output) each."""
    procs = []
    for verb, stack in commands:
        extra = ["--skip-preview"] if verb == "up" else []
        procs.append(subprocess.Popen(["pulumi", verb, "--yes", *extra, "--non-interactive", "--stack", stack],
                                      cwd=proj.dir, env=proj.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        results.append((p.returncode, out))
    return results


def proxy_present(bench) -> bool:
    """kamal-proxy's container, or its config volume, is on the host."""
    d = host_docker(bench.hosts[1])
    return bool(d.containers(all=True, filters={"name": "^/kamal-proxy$"})
                or d.volumes(filters={"name": "^kamal-proxy-config$"}).get("Volumes"))


def test_two_destinations_acting_at_the_same_moment(bench, tmp_path, capsys):
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    for dest in NAMES:
        proj.init(dest, config(bench, dest, "v1"))
    assert not proxy_present(bench)
    counts = {"first deploys at once": 0, "version changes at once": 0, "destroys at once": 0,
              "destroy during the other's first deploy": 0}
    failures: list[str] = []

    def record(scenario: str, results: list[tuple[int, str]], check) -> None:
        bad = [out for code, out in results if code != 0]
        problem = check()
        if bad or problem:
            failures.append(f"{scenario}: {problem or ''}\n" + "\n".join(o[-1500:] for o in bad))
        else:
            counts[scenario] += 1

    def both_serve(version: str):
        got = {d: answer(bench, d) for d in NAMES}
        wrong = {d: a for d, a in got.items() if f"destination={d} version={version}" not in a}
        return f"answers {wrong}" if wrong else None

    cleaned = False
    try:
        for n in range(ROUNDS):
            for dest in NAMES:
                proj.set_config(dest, config(bench, dest, "v1"))
            record("first deploys at once", at_once(proj, ("up", "staging"), ("up", "production")),
                   lambda: both_serve("v1"))
            for dest in NAMES:
                proj.set_config(dest, config(bench, dest, "v2"))
            record("version changes at once", at_once(proj, ("up", "staging"), ("up", "production")),
                   lambda: both_serve("v2"))
            record("destroys at once", at_once(proj, ("destroy", "staging"), ("destroy", "production")),
                   lambda: "kamal-proxy is still there" if proxy_present(bench) else None)
        proj.up("staging")
        for n in range(ROUNDS):
            going, coming = ("staging", "production") if n % 2 == 0 else ("production", "staging")
            results = at_once(proj, ("destroy", going), ("up", coming))
            record("destroy during the other's first deploy", results,
                   lambda: None if f"destination={coming} version=v2" in answer(bench, coming)
                   else f"{coming} answers {answer(bench, coming)!r}")
            if results[0][0] != 0:  # what the next round destroys, it must have
                proj.run("destroy", "--yes", stack=going)
            if results[1][0] != 0:
                proj.up(coming, check=False)
        proj.run("destroy", "--yes", stack=coming)
        assert not proxy_present(bench), "the proxy outlived both destinations"
        cleaned = not failures  # every round succeeded, so both are destroyed
    finally:
        with capsys.disabled():
            print("\nconcurrency, rounds passed: " + ", ".join(f"{k} {v}/{ROUNDS}" for k, v in counts.items()))
        if not cleaned:
            for dest in NAMES:
                proj.run("destroy", "--yes", stack=dest, check=False)
    assert not failures, "\n\n".join(failures[:3])
