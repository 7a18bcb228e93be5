"""A new server, the first time, with the defaults: a host with Docker and nothing else (no image pulled, reached as
a non-root user in the `docker` group), a stack that pins no version (it follows the app's git commit), and the
operator's own Docker login on the deploying machine. One `pulumi up` - or one `shipyard deploy` - serves the app;
nothing of the operator's login reaches the host; a proxy image that cannot be pulled leaves the running proxy
serving.

The bench's last host is kept for this module: each test first makes it a new server again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from typing import Any

import docker.errors
import pytest

from tests.conftest import WORKER, Project, app_head, host_docker, make_project, pulumi_env, requests_during, \
    ssh_config
from tests.e2e.cli_helpers import shipyard

pytestmark = pytest.mark.e2e

NAME = "fresh.test"
PROXY_IMAGE = "basecamp/kamal-proxy:v0.9.2"


def server(bench):
    return bench.hosts[-1]


def make_new(bench) -> None:
    """The host as a new server has it: no container, image, volume or network of anybody's, an empty home."""
    d = host_docker(server(bench))
    for c in d.containers(all=True):
        d.remove_container(c["Id"], force=True, v=True)
    for image in d.images(all=True):
        try:
            d.remove_image(image["Id"], force=True)
        except docker.errors.NotFound:
            pass  # gone with another one
    for volume in d.volumes().get("Volumes") or []:
        d.remove_volume(volume["Name"], force=True)
    d.prune_networks()
    assert d.images(all=True) == [], "the host's image store is not empty"
    home = server(bench).local_path(f"/home/{server(bench).user}")
    for entry in home.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def config(bench, host: str | None = None, **more: Any) -> dict[str, Any]:
    """The stack; `host`: the address the server is reached at over SSH (default: its own)."""
    host = host or server(bench).address
    return {"service": "fresh", "image": "acme/fresh", "builder": {"context": "app"},
            "servers": {"web": {"hosts": [host]}, "jobs": {"hosts": [host], "cmd": WORKER}},
            "proxy": {"hosts": [NAME], "healthcheck": {"interval": 0.3, "timeout": 2}, "deploy_timeout": 20,
                      "drain_timeout": 1},
            "accessories": {"db": {"image": "busybox:latest", "host": host, "cmd": WORKER,
                                   "volumes": ["data:/data"]}},
            "ssh": ssh_config(bench), **more}


def get(bench) -> str:
    req = urllib.request.Request(f"http://{server(bench).address}/", headers={"Host": NAME})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return resp.read().decode()


@pytest.fixture
def proj(bench, tmp_path):
    make_new(bench)
    (tmp_path / "state").mkdir()
    p = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    yield p
    p.run("destroy", "--yes", "--remove", stack="staging", check=False)


def test_pulumi_up_serves_the_app_on_a_new_server_at_the_git_version(bench, proj):
    assert proj.env["DOCKER_CONFIG"], "the operator's own Docker login is on the deploying side"
    proj.init("staging", config(bench))
    proj.up("staging")
    version = app_head(proj.dir)
    assert f"version={version}" in get(bench)  # the default version: the app's commit
    d = host_docker(server(bench))
    assert PROXY_IMAGE in {t for i in d.images() for t in i.get("RepoTags") or []}  # pulled, from the hub
    running = {c["Labels"].get("role"): c["Image"] for c in d.containers(filters={"label": "service=fresh"})}
    assert set(running) == {"web", "jobs", "accessory.db"}
    proj.run("preview", "--expect-no-changes", stack="staging")


def test_shipyard_deploy_serves_the_app_on_a_new_server_at_the_git_version(bench, proj):
    proj.init("staging", config(bench))
    result = shipyard(proj.dir, proj.env, "deploy", "-s", "staging")
    assert result.code == 0, result.err
    version = app_head(proj.dir)
    assert f"version {version}" in result.err
    assert f"version={version}" in get(bench)


def test_a_proxy_image_that_cannot_be_pulled_leaves_the_running_proxy_serving(bench, proj):
    proj.init("staging", config(bench))
    proj.up("staging")
    d = host_docker(server(bench))
    before = d.inspect_container("kamal-proxy")["Id"]
    cfg = config(bench)
    cfg["proxy"] = {**cfg["proxy"], "image": "basecamp/kamal-proxy:v0.0.0-missing"}
    proj.set_config("staging", cfg)
    with requests_during(lambda: get(bench), most=2000, pause=0.02) as seen:
        failed = proj.up("staging", check=False)
    results = [answer for _, answer in seen]
    assert not failed.ok
    assert "pulling basecamp/kamal-proxy:v0.0.0-missing for kamal-proxy failed" in failed.out
    assert "Traceback" not in failed.out
    assert d.inspect_container("kamal-proxy")["Id"] == before and d.inspect_container("kamal-proxy")["State"][
        "Running"]
    assert len(results) > 20 and results.count(None) == 0, f"{results.count(None)} of {len(results)} failed"


def test_the_operators_docker_login_never_reaches_the_host(bench, proj):
    """The operator's login is valid for the registry that wants a password: had it been sent, the pull would have
    worked. A stack without credentials for that registry must fail to pull, and say so in one line."""
    cfg = config(bench)
    cfg["accessories"] = {"db": {"image": f"{bench.auth_registry}/library/busybox:latest",
                                 "host": server(bench).address, "cmd": WORKER}}
    proj.init("staging", cfg)
    failed = proj.up("staging", check=False)
    assert not failed.ok
    assert f"pulling {bench.auth_registry}/library/busybox:latest for fresh-staging-db failed" in failed.out
    assert "check the registry's username and password" in failed.out
    assert "Traceback" not in failed.out
    d = host_docker(server(bench))
    assert not d.containers(all=True, filters={"label": "service=fresh", "name": "db"})

    # a build FROM that registry, with no credentials in the stack: refused the same way
    (proj.dir / "app" / "Dockerfile").write_text(f"FROM {bench.auth_registry}/library/busybox:latest\n"
                                                 "COPY start.sh /start.sh\nCMD [\"/bin/sh\", \"/start.sh\"]\n")
    cfg["accessories"] = {}
    cfg["version"] = "v1"
    proj.set_config("staging", cfg)
    failed = proj.up("staging", check=False)
    assert not failed.ok and "building" in failed.out and "Traceback" not in failed.out

    # with the stack's own login for that registry, all of it works: pull, build, push
    cfg["registry"] = {"server": bench.auth_registry, "username": "deployer"}
    cfg["accessories"] = {"db": {"image": f"{bench.auth_registry}/library/busybox:latest",
                                 "host": server(bench).address, "cmd": WORKER}}
    proj.set_config("staging", cfg)
    proj.set_secrets("staging", {"shipyard:registry.password": bench.auth_registry_password})
    proj.up("staging")
    assert "version=v1" in get(bench)



def test_a_server_behind_a_jump_host_known_by_its_ssh_config_alias_serves_after_one_up(bench, proj, tmp_path):
    """As Kamal reaches hosts: the server's SSH address refuses this machine and answers only a jump host (OpenSSH's
    ProxyJump, Kamal's ssh.proxy), and the stack names the server by an alias whose HostName, IdentityFile and jump
    host only an SSH config file knows (ssh.config, which Kamal reads by default). One `pulumi up` serves, and the
    `shipyard` command reads the stack the same way."""
    srv, jump = server(bench), bench.hosts[0]
    # the server's SSH address (its fault-proxy one) takes connections from the jump host only
    rule = ["INPUT", "-p", "tcp", "-d", srv.proxied_address, "--dport", str(srv.proxied_port), "!", "-s",
            jump.address, "-j", "REJECT"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        with pytest.raises(OSError):
            socket.create_connection((srv.proxied_address, srv.proxied_port), timeout=3).close()
        conf = tmp_path / "ssh_config"
        conf.write_text(f"Host fresh-alias\n  HostName {srv.proxied_address}\n  IdentityFile {bench.identity_file}\n"
                        f"  IdentitiesOnly yes\n  ProxyJump {jump.user}@{jump.address}\n")
        ssh = {"user": srv.user, "port": srv.proxied_port, "known_hosts": bench.known_hosts, "config": [str(conf)]}
        proj.init("staging", config(bench, host="fresh-alias", ssh=ssh))  # no keys, no proxy of its own
        proj.up("staging")
        assert f"version={app_head(proj.dir)}" in get(bench)
        details = shipyard(proj.dir, proj.env, "details", "-s", "staging", "--json").json()
        assert {(c["host"], c["role"], c["state"]) for c in details["containers"]} == {
            ("fresh-alias", "web", "running"), ("fresh-alias", "jobs", "running")}
        proj.run("preview", "--expect-no-changes", stack="staging")
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)


def test_a_new_server_added_to_a_running_destination_serves_after_one_up(bench, proj):
    """Scaling out: a destination runs on one host, and a new server joins its web role. The new server's container
    does not wait for its kamal-proxy, which makes the `kamal` network there: the container makes it first if it is
    missing (the current Docker Engine takes a create on a missing network and fails only its start). One `up`
    serves the app on both."""
    running = bench.hosts[-2]

    def cfg(*hosts: str) -> dict[str, Any]:
        return {**config(bench), "servers": {"web": {"hosts": list(hosts)}}, "accessories": {}}
    proj.init("staging", cfg(running.address))
    proj.up("staging")
    proj.set_config("staging", cfg(running.address, server(bench).address))
    result = proj.up("staging", check=False)
    assert result.ok, result.out
    assert f"version={app_head(proj.dir)}" in get(bench)
    proj.run("preview", "--expect-no-changes", stack="staging")
