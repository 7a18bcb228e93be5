"""Upgrading shipyard changes nothing that runs: a destination deployed by an earlier release (this repository's
history, taken with `git archive`) previews with no change under the current code (but the two steps of its rollout,
new since the oldest one); its `up` touches no container, and the next change works on the state that release
wrote. The last release of Python dynamic resources moves onto the `shipyard` plugin's types with no replacement, and
the plugin's previews name what changes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import urllib.request

import pytest

from tests.conftest import REPO, WORKER, Project, host_docker, make_project, pulled, pulumi_env, ssh_config

pytestmark = pytest.mark.e2e

EARLIER = "bb173ca"  # the release before providers became a package, the plan one object and owners org-free
DYNAMIC = "a84940f"  # the last release whose resources were Python dynamic resources, before the plugin


def config(bench, version: str) -> dict:
    host = bench.hosts[0].address
    return {"service": "upg", "image": "acme/upg", "version": version, "builder": {"context": "app"},
            "registry": {"server": bench.registry},
            "servers": {"web": {"hosts": [host]}, "jobs": {"hosts": [host], "cmd": WORKER}},
            "proxy": {"hosts": ["upgrade.test"], "healthcheck": {"interval": 0.3, "timeout": 2}, "deploy_timeout": 10,
                      "drain_timeout": 1},
            "env": {"clear": {"A": "1"}, "secret": ["TOKEN"]},
            "accessories": {"db": {"image": "busybox:latest", "host": host, "cmd": WORKER,
                                   "volumes": ["data:/data"], "files": ["app/start.sh:/etc/start.sh"]}},
            "ssh": ssh_config(bench)}


def get(bench) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": "upgrade.test"})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


def test_a_destination_deployed_by_an_earlier_release_previews_with_no_change(bench, tmp_path):
    proj = earlier_release(tmp_path, EARLIER)  # the earlier release's code, as a user had it
    # That release never pulled kamal-proxy's image: a host it deployed to had it already (pulled by hand)
    pulled(host_docker(bench.hosts[0]), "basecamp/kamal-proxy:v0.9.2")
    try:
        proj.init("staging", config(bench, "v1"), secrets={"shipyard:secrets.TOKEN": "t0ken-value"})
        proj.up("staging")
        assert "version=v1" in get(bench)
        before = {c["Id"] for c in host_docker(bench.hosts[0]).containers(filters={"label": "service=upg"})}

        upgrade(proj)
        # the rollout's two steps are new: created once, changing nothing that runs
        preview = proj.run("preview", stack="staging").out
        creates = [line for line in preview.splitlines() if line.rstrip().endswith(" create") and ":" in line]
        assert len(creates) == 2 and all("shipyard:index:Rollout" in line for line in creates), preview
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


def earlier_release(tmp_path, rev: str) -> Project:
    """A project as a user of release `rev` had it (its `Pulumi.yaml` and `components/`)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "components", "Pulumi.yaml"],
                             capture_output=True, check=True).stdout
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    (proj.dir / "components").unlink()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        tf.extractall(proj.dir, filter="data")
    return proj


def upgrade(proj: Project) -> None:
    shutil.rmtree(proj.dir / "components")
    (proj.dir / "components").symlink_to(REPO / "components")
    shutil.copy(REPO / "Pulumi.yaml", proj.dir / "Pulumi.yaml")


def changed_lines(preview: str) -> list[str]:
    """The lines of a `preview --diff` between its header and its summary: what a reviewer reads."""
    lines = preview.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Previewing update"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Resources:"))
    return [line for line in lines[start + 1:end] if line.strip()]


def test_a_destination_of_dynamic_resources_moves_onto_the_plugin_with_no_replacement(bench, tmp_path):
    proj = earlier_release(tmp_path, DYNAMIC)
    docker = host_docker(bench.hosts[0])

    def started() -> dict[str, str]:
        return {c["Id"]: docker.inspect_container(c["Id"])["State"]["StartedAt"]
                for c in docker.containers(filters={"label": "service=upg"})}
    try:
        proj.init("staging", config(bench, "v1"), secrets={"shipyard:secrets.TOKEN": "t0ken-value"})
        proj.up("staging")
        assert "version=v1" in get(bench)
        before = started()
        assert len(before) == 3  # web, jobs, db

        upgrade(proj)
        preview = proj.run("preview", "--diff", stack="staging").out
        assert not any(f"to {what}" in preview for what in ("create", "update", "replace", "delete")), preview
        proj.run("preview", "--expect-no-changes", stack="staging")
        proj.up("staging")
        export = proj.run("stack", "export", stack="staging").out
        assert "t0ken-value" not in export  # the plugin's state keeps the secret encrypted, as before
        state = json.loads(export)["deployment"]["resources"]
        types = {r["type"] for r in state}
        assert not any(t.startswith("pulumi-python:") or t == "pulumi:providers:pulumi-python" for t in types), types
        assert {"shipyard:index:Container", "shipyard:index:Image", "shipyard:index:ProxyRoute"} <= types
        proj.run("preview", "--refresh", "--expect-no-changes", stack="staging")
        assert started() == before

        proj.set_config("staging", config(bench, "v2"))  # the state that release wrote deploys on
        proj.up("staging")
        assert "version=v2" in get(bench)

        # review: one env value changes - the preview names it, and little else
        cfg = config(bench, "v2")
        cfg["env"]["clear"]["A"] = "2"
        proj.set_config("staging", cfg)
        preview = proj.run("preview", "--diff", stack="staging").out
        shown = changed_lines(preview)
        # per resource its kind, ID, URN and provider, then the changed paths alone (both containers' env.A, the
        # route's and both rollout steps' container IDs)
        print(f"preview --diff of one env value: {len(shown)} lines")
        assert len(shown) <= 40, "\n".join(shown)
        assert any("env" in line and '"1" => "2"' in line for line in shown) or \
            any(line.strip().startswith("~ A") and "=>" in line for line in shown), "\n".join(shown)
        assert "target" not in preview and "known_hosts" not in preview, preview  # how hosts are reached: unchanged

        # a secret only: its key is named, never its value, and why the container is replaced
        proj.set_config("staging", config(bench, "v2"))
        proj.set_secrets("staging", {"shipyard:secrets.TOKEN": "n3w-value"})
        preview = proj.run("preview", "--diff", stack="staging").out
        shown = changed_lines(preview)
        assert "n3w-value" not in preview and "t0ken-value" not in preview
        assert any("TOKEN" in line and "[secret]" in line for line in shown), "\n".join(shown)
        assert "secret_env" in preview and "replace" in preview, preview
        print(f"preview --diff of one secret: {len(shown)} lines")
        assert len(shown) <= 40, "\n".join(shown)

        proj.up("staging")
        assert "version=v2" in get(bench)
        assert "n3w-value" not in proj.run("stack", "export", stack="staging").out
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)
