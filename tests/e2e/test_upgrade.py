"""Upgrading shipyard changes nothing that runs: a destination deployed by an earlier release (this repository's
history, taken with `git archive`) previews with no change under the current code but the two steps of its rollout,
which are new; their `up` touches no container, and the next version change works on the state that release
wrote."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import urllib.request

import pytest

from tests.conftest import REPO, WORKER, Project, host_docker, make_project, pulled, pulumi_env, ssh_config

pytestmark = pytest.mark.e2e

EARLIER = "bb173ca"  # the release before providers became a package, the plan one object and owners org-free


def config(bench, version: str) -> dict:
    host = bench.hosts[0].address
    return {"service": "upg", "image": "acme/upg", "version": version, "builder": {"context": "app"},
            "registry": {"server": bench.registry},
            "servers": {"web": {"hosts": [host]}, "jobs": {"hosts": [host], "cmd": WORKER}},
            "proxy": {"hosts": ["upgrade.test"], "healthcheck": {"interval": 0.3, "timeout": 2}, "deploy_timeout": 10,
                      "drain_timeout": 1},
            "env": {"clear": {"A": "1"}, "secret": ["TOKEN"]},
            "accessories": {"db": {"image": "busybox:latest", "host": host, "cmd": "sleep 3600",
                                   "volumes": ["data:/data"], "files": ["app/start.sh:/etc/start.sh"]}},
            "ssh": ssh_config(bench)}


def get(bench) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": "upgrade.test"})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


def test_a_destination_deployed_by_an_earlier_release_previews_with_no_change(bench, tmp_path):
    archive = subprocess.run(["git", "-C", str(REPO), "archive", EARLIER, "components"], capture_output=True,
                             check=True).stdout
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    (proj.dir / "components").unlink()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        tf.extractall(proj.dir, filter="data")  # the earlier release's code, as a user had it
    # That release never pulled kamal-proxy's image: a host it deployed to had it already (pulled by hand)
    pulled(host_docker(bench.hosts[0]), "basecamp/kamal-proxy:v0.9.2")
    try:
        proj.init("staging", config(bench, "v1"), secrets={"shipyard:secrets.TOKEN": "t0ken-value"})
        proj.up("staging")
        assert "version=v1" in get(bench)
        before = {c["Id"] for c in host_docker(bench.hosts[0]).containers(filters={"label": "service=upg"})}

        shutil.rmtree(proj.dir / "components")
        (proj.dir / "components").symlink_to(REPO / "components")  # upgrade
        # the rollout's two steps are new: created once, changing nothing that runs
        preview = proj.run("preview", stack="staging").out
        creates = [line for line in preview.splitlines() if line.rstrip().endswith(" create") and ":" in line]
        assert len(creates) == 2 and all("shipyard:Rollout" in line for line in creates), preview
        assert "2 to create" in preview and not any(f"to {what}" in preview for what in ("update", "replace",
                                                                                         "delete")), preview
        started = {c["Id"]: host_docker(bench.hosts[0]).inspect_container(c["Id"])["State"]["StartedAt"]
                   for c in host_docker(bench.hosts[0]).containers(filters={"label": "service=upg"})}
        proj.up("staging")
        proj.run("preview", "--expect-no-changes", stack="staging")
        proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")
        assert {c["Id"]: host_docker(bench.hosts[0]).inspect_container(c["Id"])["State"]["StartedAt"]
                for c in host_docker(bench.hosts[0]).containers(filters={"label": "service=upg"})} == started
        assert set(started) == before

        proj.set_config("staging", config(bench, "v2"))  # and the state that release wrote deploys on
        proj.up("staging")
        assert "version=v2" in get(bench)
        running = {c["Names"][0] for c in host_docker(bench.hosts[0]).containers(
            filters={"label": ["service=upg", "destination=staging"]})}
        assert running == {"/upg-web-staging-v2", "/upg-jobs-staging-v2", "/upg-staging-db"}
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)
