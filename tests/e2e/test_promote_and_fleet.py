"""Promotion through a StackReference, a role on two hosts, a destination moved to a new server, a fleet of six, and
config errors, with the real CLI on the bench."""

from __future__ import annotations

import pytest

from tests.conftest import WORKER, Project, host_docker, http_get, make_project, pulumi_env, ssh_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def proj(tmp_path) -> Project:
    (tmp_path / "state").mkdir()
    return Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))


def test_production_promotes_exactly_what_staging_tested(bench, proj):
    host = bench.hosts[1]
    common = {"service": "promo", "image": "acme/promo", "registry": {"server": bench.registry},
              "ssh": ssh_config(bench)}
    proj.init("staging", {**common, "builder": {"context": "app"},
                          "servers": {"web": {"hosts": [host.address], "ports": ["8101:80"]}}})
    proj.up("staging")
    proj.init("production", {**common, "promote": {"from_stack": "staging"},
                             "servers": {"web": {"hosts": [host.address], "ports": ["8102:80"]}}})
    # production has no builder context at all: it can only run what staging built
    preview = proj.run("preview", stack="production").out
    assert "promote-from-staging" in preview
    proj.up("production")
    staging, production = proj.outputs("staging"), proj.outputs("production")

    assert production["version"] == staging["version"]
    assert production["image_id"] != staging["image_id"]
    assert production["tag"] == f"{bench.registry}/acme/promo:{staging['version']}-production"
    d = host_docker(host)
    s_img, p_img = d.inspect_image(staging["image_id"]), d.inspect_image(production["image_id"])
    assert p_img["RootFS"]["Layers"] == s_img["RootFS"]["Layers"]  # exactly staging's layers...
    assert p_img["Config"]["Labels"]["destination"] == "production"  # ...under production's own labels
    assert s_img["Config"]["Labels"]["destination"] == "staging"
    assert http_get(f"http://{host.address}:8102/").startswith(
        f"service=promo destination=production version={staging['version']}")
    assert http_get(f"http://{host.address}:8101/").startswith("service=promo destination=staging")

    proj.run("destroy", "--yes", stack="production")
    proj.run("destroy", "--yes", stack="staging")


def test_a_role_on_two_hosts_without_a_registry(bench, proj):
    addrs = [h.address for h in bench.hosts[:2]]
    proj.init("staging", {"service": "fleet", "image": "acme/fleet", "builder": {"context": "app"},
                          "env": {"secret": ["GREETING"]},
                          "servers": {"web": {"hosts": addrs, "ports": ["8111:80"]},
                                      "jobs": {"hosts": [addrs[1]], "cmd": WORKER}},
                          "ssh": ssh_config(bench)},
              secrets={"shipyard:secrets.GREETING": "s3cret-greeting"})
    up = proj.up("staging")
    out = proj.outputs("staging")
    # the app sees the secret; the state, the outputs and the CLI's output never show it
    assert "greeting=s3cret-greeting" in http_get(f"http://{addrs[0]}:8111/")
    state = "".join(p.read_text() for p in (proj.dir.parent / "state").rglob("*.json"))
    assert "s3cret-greeting" not in state and "s3cret-greeting" not in up.out
    assert "s3cret-greeting" not in proj.run("stack", "output", "--json", stack="staging").out
    assert sorted(out["containers"]) == sorted(addrs)
    assert set(out["containers"][addrs[1]]) == {"web", "jobs"}
    for h in bench.hosts[:2]:
        # built once, shipped by `docker save | docker load`: the same image ID on both hosts, same tag
        image = host_docker(h).inspect_image(out["image_id"])
        assert out["tag"] in image["RepoTags"]
        assert http_get(f"http://{h.address}:8111/").startswith("service=fleet destination=staging")
    jobs = host_docker(bench.hosts[1]).inspect_container(out["containers"][addrs[1]]["jobs"]["id"])
    assert jobs["Config"]["Cmd"] == ["sh", "-c", WORKER]
    assert jobs["Config"]["Labels"]["role"] == "jobs"
    assert sorted(out["urls"]) == sorted(f"http://{a}:8111" for a in addrs)

    proj.run("preview", "--expect-no-changes", stack="staging")
    proj.run("destroy", "--yes", stack="staging")
    for h in bench.hosts[:2]:
        assert not host_docker(h).containers(all=True, filters={"label": "service=fleet"})


def test_a_destination_moved_to_a_new_server_takes_its_image_along(bench, proj):
    """The app's server is replaced (its address changes) and no registry is set: the new server is the build host
    now and never had the image, so the image is copied from the old one - the same build, the same ID - and the
    app answers there; the old server keeps nothing of the destination."""
    old, new = (h.address for h in bench.hosts[2:4])

    def cfg(host: str) -> dict:
        return {"service": "moved", "image": "acme/moved", "builder": {"context": "app"},
                "servers": {"web": {"hosts": [host], "ports": ["8113:80"]}}, "ssh": ssh_config(bench)}
    proj.init("staging", cfg(old))
    proj.up("staging")
    built = proj.outputs("staging")
    assert http_get(f"http://{old}:8113/").startswith("service=moved destination=staging")
    try:
        proj.set_config("staging", cfg(new))
        proj.up("staging")
        moved = proj.outputs("staging")
        assert moved["image_id"] == built["image_id"] and moved["version"] == built["version"]
        assert host_docker(bench.hosts[3]).inspect_image(built["image_id"])["RepoTags"] == [built["tag"]]
        assert http_get(f"http://{new}:8113/").startswith(f"service=moved destination=staging "
                                                           f"version={built['version']}")
        assert not host_docker(bench.hosts[2]).containers(all=True, filters={"label": "service=moved"})
        proj.run("preview", "--expect-no-changes", stack="staging")
    finally:
        proj.run("destroy", "--yes", stack="staging")
    for h in bench.hosts[2:4]:
        assert not host_docker(h).containers(all=True, filters={"label": "service=moved"})


@pytest.mark.parametrize("config, message", [
    ({"servers": {"web": {"hosts": ["10.0.0.1", "not a host"]}}},
     "servers.web.hosts[1]: 'not a host' is not a host name or IP address"),
    ({"servers": {"web": {"hosts": ["10.0.0.1"]}}, "sevrice": "x"},
     "sevrice: unknown key"),
    ({"servers": {"web": {"hosts": ["10.0.0.1"], "ports": ["80:eighty"]}}},
     "servers.web.ports[0]: '80:eighty' is not a port mapping"),
])
def test_bad_config_names_the_field_and_shows_no_traceback(bench, proj, config, message):
    proj.init("staging", {"service": "bad", "image": "acme/bad", "builder": {"context": "app"}, **config})
    result = proj.run("preview", stack="staging", check=False)
    assert result.code != 0
    assert f"stack staging: {message}" in result.out
    assert "Traceback" not in result.out


def test_a_misspelt_namespace_is_named_not_dropped(bench, proj):
    """`shipyrd:service` is a setting left out, not another package's: the one line names it."""
    proj.init("staging", {"image": "acme/bad", "builder": {"context": "app"},
                          "servers": {"web": {"hosts": ["10.0.0.1"]}}})
    proj.run("config", "set", "shipyrd:service", "bad", stack="staging")
    result = proj.run("preview", stack="staging", check=False)
    assert result.code != 0
    assert "stack staging: shipyrd:service: unknown namespace shipyrd (did you mean shipyard:service?)" in result.out
    assert "Traceback" not in result.out


@pytest.mark.parametrize("builder, message", [
    ({"context": "nope"},
     "builder.context: directory {proj}/nope does not exist: set builder.context to the app's directory"),
    ({"context": "app", "dockerfile": "Dockerfile.prod"},
     "builder.dockerfile: Dockerfile.prod not found in {proj}/app: create it, or set builder.dockerfile"),
    ({"context": "app", "dockerfile": "../Pulumi.yaml"},
     "builder.dockerfile: ../Pulumi.yaml is outside builder.context ({proj}/app)"),
])
def test_a_missing_context_or_dockerfile_is_one_line_at_preview(bench, proj, builder, message):
    proj.init("staging", {"service": "bad", "image": "acme/bad", "builder": builder,
                          "servers": {"web": {"hosts": [bench.hosts[0].address]}}, "ssh": ssh_config(bench)})
    result = proj.run("preview", stack="staging", check=False)
    assert result.code != 0
    assert "stack staging: " + message.format(proj=proj.dir.resolve()) in result.out
    assert "Traceback" not in result.out and "not a git checkout" not in result.out


def test_an_unreachable_host_is_named_and_nothing_is_created(bench, proj):
    proj.init("staging", {"service": "gone", "image": "acme/gone", "builder": {"context": "app"},
                          "servers": {"web": {"hosts": [bench.hosts[0].address]}},
                          "ssh": {**ssh_config(bench), "port": 2222}})
    result = proj.up("staging", check=False)
    assert result.code != 0
    assert f"host {bench.hosts[0].address}:2222: cannot connect to SSH port 2222" in result.out
    assert "Traceback" not in result.out


def test_a_role_without_proxy_waits_for_the_images_own_healthcheck(bench, tmp_path):
    dockerfile = ("FROM busybox:latest\nCOPY start.sh /start.sh\n"
                  "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD test -f /www/healthy\n"
                  'CMD ["/bin/sh", "/start.sh"]\n')
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path, {"Dockerfile": dockerfile}), pulumi_env(tmp_path / "state"))
    proj.init("staging", {"service": "hc", "image": "acme/hc", "builder": {"context": "app"},
                          "servers": {"jobs": {"hosts": [bench.hosts[0].address]}}, "ssh": ssh_config(bench)})
    result = proj.up("staging", check=False)
    assert result.code != 0
    assert "container hc-jobs-staging-" in result.out and "reports unhealthy (health status unhealthy" in result.out
    assert "health status unhealthy" in result.out
    assert "it was stopped (kept for the next `up`)" in result.out
    left = host_docker(bench.hosts[0]).containers(all=True, filters={"label": "service=hc"})
    assert [c["State"] for c in left] == ["exited"], left  # nothing runs; the state knows the one left
    proj.run("destroy", "--yes", stack="staging")
    assert not host_docker(bench.hosts[0]).containers(all=True, filters={"label": "service=hc"})


def test_a_registry_with_a_password(bench, proj):
    addrs = [h.address for h in bench.hosts[:2]]
    cfg = {"service": "priv", "image": "acme/priv", "builder": {"context": "app"},
           "registry": {"server": bench.auth_registry, "username": "deployer"},
           "servers": {"web": {"hosts": addrs, "ports": ["8131:80"]}}, "ssh": ssh_config(bench)}
    proj.init("staging", cfg, secrets={"shipyard:registry.password": "wrong-password"})
    bad = proj.up("staging", check=False)
    assert bad.code != 0
    assert f"pushing {bench.auth_registry}/acme/priv:" in bad.out
    assert "check registry.username and registry.password" in bad.out
    assert "Traceback" not in bad.out and "wrong-password" not in bad.out

    proj.run("config", "set", "--secret", "--path", "shipyard:registry.password", bench.auth_registry_password,
             stack="staging")
    up = proj.up("staging")
    out = proj.outputs("staging")
    assert out["repo_digest"].startswith(f"{bench.auth_registry}/acme/priv@sha256:")
    for h in bench.hosts[:2]:  # pushed with the password, pulled by digest with it on the other host
        assert http_get(f"http://{h.address}:8131/").startswith("service=priv destination=staging")
        assert out["repo_digest"] in host_docker(h).inspect_image(out["image_id"])["RepoDigests"]
    state = "".join(p.read_text() for p in (proj.dir.parent / "state").rglob("*.json"))
    assert bench.auth_registry_password not in state + up.out + proj.run("stack", "output", "--json",
                                                                            stack="staging").out
    proj.run("destroy", "--yes", stack="staging")


def test_a_fleet_rolls_out_through_one_plugin_instance(bench, proj):
    """Six hosts behind kamal-proxy, every one served by the destination's one `shipyard` plugin instance (its pool
    runs them all at once). Every host runs and serves the new version after a version change, keeps the old one
    stopped, and the stack then has nothing left to change."""
    import json
    hosts = bench.hosts[:6]
    assert len(hosts) == 6, "the test bench runs six hosts"
    name = "fleet.test"
    cfg = {"service": "fleet", "image": "acme/fleet", "registry": {"server": bench.registry},
           "builder": {"context": "app"}, "servers": {"web": {"hosts": [h.address for h in hosts]}},
           "proxy": {"hosts": [name], "healthcheck": {"path": "/up", "interval": 0.3, "timeout": 2},
                     "deploy_timeout": 8, "drain_timeout": 1}, "ssh": ssh_config(bench)}
    proj.init("staging", {**cfg, "version": "f1"})
    proj.up("staging")
    proj.set_config("staging", {**cfg, "version": "f2"})
    proj.up("staging")

    for h in hosts:
        assert http_get(f"http://{h.address}/", host_header=name).startswith(
            "service=fleet destination=staging version=f2"), h.address
        running = {c["Labels"]["version"]: c["State"] for c in host_docker(h).containers(
            all=True, filters={"label": ["service=fleet", "role=web"]})}
        assert running == {"f2": "running", "f1": "exited"}, (h.address, running)
    state = json.loads(proj.run("stack", "export", stack="staging").out)["deployment"]["resources"]
    providers = {r["urn"].rsplit("::", 1)[1]: r["id"] for r in state if r["type"].startswith("pulumi:providers:")}
    assert list(providers) == ["fleet-staging-plugin"], providers
    plugin = f"fleet-staging-plugin::{providers['fleet-staging-plugin']}"
    served_by = {r["urn"].rsplit("::", 1)[1]: r.get("provider", "") for r in state if r.get("custom")
                 and not r["type"].startswith("pulumi:")}
    assert len(served_by) >= 1 + 3 * len(hosts) and all(by.endswith(plugin) for by in served_by.values()), served_by
    proj.run("preview", "--expect-no-changes", stack="staging")

    proj.run("destroy", "--yes", stack="staging")
    for h in hosts:
        assert not host_docker(h).containers(all=True, filters={"label": "service=fleet"}), h.address
