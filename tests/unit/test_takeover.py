"""Taking over a running Kamal deployment: which containers are Kamal's (data cases), what a Kamal stack's config
and plan say, and what the route provider does against a fake Docker client (autospecced from docker.APIClient)."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import docker
import pytest

from components import config, decisions, hostlock, kamal, plan, providers
from components.errors import ConfigError, OwnershipConflict

KAMAL = {"service": "shop", "role": "web", "destination": ""}  # Kamal without a destination: `--label destination`
OURS = {"service": "shop", "role": "web", "destination": "production", "shipyard.stack": "shipyard/production"}
NO_DEST = {"destination": None, "role": "web"}


@pytest.mark.parametrize("case, labels, service, role, destination, kamals", [
    ("kamal without destination", KAMAL, "shop", "web", None, True),
    ("kamal with its destination", {**KAMAL, "destination": "staging"}, "shop", "web", "staging", True),
    ("another kamal destination", {**KAMAL, "destination": "staging"}, "shop", "web", None, False),
    ("another role", {**KAMAL, "role": "jobs"}, "shop", "web", None, False),
    ("another service", {**KAMAL, "service": "blog"}, "shop", "web", None, False),
    ("a shipyard stack's", {**OURS, "destination": ""}, "shop", "web", None, False),
    ("unlabeled", {}, "shop", "web", None, False),
])
def test_kamal_app(case, labels, service, role, destination, kamals):
    assert decisions.kamal_app(labels, service, role, destination) is kamals


def test_route_takeover_needs_the_opt_in():
    assert decisions.route_takeover(KAMAL, NO_DEST, "shop")
    assert not decisions.route_takeover(KAMAL, None, "shop")
    assert not decisions.route_takeover(KAMAL, {"destination": "production", "role": "web"}, "shop")
    assert not decisions.route_takeover(OURS, NO_DEST, "shop")


def test_kamal_to_stop_is_only_kamals_running_containers_of_the_role():
    items = [{"Id": "k1", "State": "running", "Labels": KAMAL},
             {"Id": "k0", "State": "exited", "Labels": KAMAL},
             {"Id": "jobs", "State": "running", "Labels": {**KAMAL, "role": "jobs"}},
             {"Id": "ours", "State": "running", "Labels": OURS}]
    assert decisions.kamal_to_stop(items, NO_DEST, "shop") == ("k1",)
    assert decisions.kamal_to_stop(items, None, "shop") == ()


# -- the config and the plan ------------------------------------------------------------------------------------------


def kamal_project(tmp_path: Path) -> Path:
    app = tmp_path / "myapp"
    (app / "config").mkdir(parents=True)
    (app / "config/deploy.yml").write_text(textwrap.dedent("""\
        service: shop
        image: acme/shop
        servers: [10.0.0.1]
        proxy: {host: shop.example.com}
        """))
    (app / "config/deploy.staging.yml").write_text("{}\n")
    (tmp_path / "infra").mkdir()
    return tmp_path / "infra"


def test_a_kamal_stack_takes_over_with_kamals_destination_unless_it_says_not_to(tmp_path):
    project = kamal_project(tmp_path)
    opts = {"config": "../myapp/config/deploy.yml"}
    assert kamal.stack_config({"kamal": opts}, stack="staging", project_dir=project, environ={})["takeover"] == {
        "destination": "staging"}
    raw = kamal.stack_config({"kamal": {**opts, "destination": None}}, stack="production", project_dir=project,
                             environ={})
    assert raw["takeover"] == {"destination": None}
    cfg = config.load(raw, stack="production")
    (spec,) = plan.container_specs(cfg, "v2", "shipyard/production")
    assert spec.name == "shop-web-production-v2"  # shipyard's own container name...
    assert spec.proxy_service == "shop-web"  # ...under Kamal's route name
    off = kamal.stack_config({"kamal": {**opts, "takeover": False}}, stack="staging", project_dir=project,
                             environ={})
    assert "takeover" not in off
    (spec,) = plan.container_specs(config.load(off, stack="staging"), "v2", "shipyard/staging")
    assert spec.proxy_service == "shop-web-staging"
    with pytest.raises(ConfigError) as err:
        kamal.stack_config({"kamal": {**opts, "takeover": "yes"}}, stack="staging", project_dir=project)
    assert err.value.path == "kamal.takeover"


# -- the route provider -----------------------------------------------------------------------------------------------

TARGET = {"host": "h1", "port": 22, "user": "root", "keys": [], "known_hosts": None, "host_key_policy": "strict"}
PROXY = {"hosts": ["shop.example.com"], "path_prefix": None, "app_port": 80, "ssl": False,
         "healthcheck": {"path": "/up", "interval": 1, "timeout": 5}, "deploy_timeout": 30, "drain_timeout": 30,
         "response_timeout": 30, "image": "basecamp/kamal-proxy:v0.9.2"}
LISTING = "Service  Host  Path  Target  State  TLS\nshop-web  shop.example.com  /  kamal0000001:80  running  no\n"


@pytest.fixture
def host(mocker):
    c = mocker.create_autospec(docker.APIClient, instance=True)
    mocker.patch("components.hosts.client", return_value=c)
    mocker.patch("components.hostlock.held", side_effect=lambda *a, **kw: contextlib.nullcontext(
        mocker.create_autospec(hostlock.HeldLock, instance=True)))
    c.containers.return_value = [{"Id": "kamal0000001" + "0" * 52, "State": "running", "Labels": KAMAL,
                                  "Names": ["/kamal-proxy"]}]
    c.inspect_container.return_value = {"Id": "kamal0000001" + "0" * 52, "Name": "/shop-web-0123abcd",
                                        "State": {"Running": True}, "Config": {"Labels": KAMAL}}
    calls: list[list[str]] = []

    def exec_in(t, container, argv, timeout=600):
        calls.append(argv)
        return (0, LISTING) if argv[1] == "list" else (0, "")
    mocker.patch("components.hosts.exec_in", side_effect=exec_in)
    return c, calls


def route_props(**over):
    return {"owner": "shipyard/production", "destination": "production", "target": TARGET, "service": "shop-web",
            "labels": {"service": "shop", "destination": "production", "shipyard.stack": "shipyard/production"},
            "upstream": "shop-web-production-v2:80", "container_id": "new0000000001" + "0" * 51, "proxy": PROXY,
            "lock": {"stack": "shipyard/production", "timeout": 5}, **over}


def test_a_takeover_deploys_over_kamals_route_then_stops_kamals_container(host):
    c, calls = host
    providers.RouteProvider().create(route_props(takeover=NO_DEST))
    assert [a[:3] for a in calls] == [["kamal-proxy", "list"], ["kamal-proxy", "deploy", "shop-web"]]
    assert calls[1][calls[1].index("--target") + 1] == "new000000000:80"
    kamals = "kamal0000001" + "0" * 52
    c.stop.assert_called_once_with(kamals, timeout=providers.STOP_TIMEOUT_S)
    c.remove_container.assert_not_called()  # stopped, kept: Kamal can take it back


def test_without_the_takeover_kamals_route_is_refused_and_nothing_changes(host):
    c, calls = host
    with pytest.raises(OwnershipConflict, match=r"route shop-web serves container shop-web-0123abcd of another "
                                                r"deployer \(without a destination\); nothing was changed. If it is "
                                                r"your Kamal deployment of this app, name its config in shipyard:"):
        providers.RouteProvider().create(route_props())
    assert [a[:2] for a in calls] == [["kamal-proxy", "list"]]
    c.stop.assert_not_called()


def test_a_route_that_serves_kamal_again_is_left_alone_by_delete(host):
    _, calls = host
    providers.RouteProvider().delete("shop-web@h1", route_props(takeover=NO_DEST))
    assert ["kamal-proxy", "remove", "shop-web"] not in calls


def test_a_role_without_proxy_stops_kamals_container_once_its_rollout_retires(host, mocker):
    """A worker's own container is created stopped (the rollout starts it); Kamal's worker stops when the rollout
    retires what ran before, never at the create."""
    c, _ = host
    kamal_jobs = {"Id": "kjobs" * 8, "State": "running", "Labels": {**KAMAL, "role": "jobs"},
                  "Names": ["/shop-jobs-abc123"], "ImageID": "sha256:" + "b" * 64}
    c.containers.return_value = [kamal_jobs]
    c.create_container.return_value = {"Id": "new" * 8}
    c.create_host_config.return_value = {}
    props = {"owner": "shipyard/production", "destination": "production", "role": "jobs", "target": TARGET,
             "name": "shop-jobs-production-v2", "labels": {**OURS, "role": "jobs", "version": "v2"},
             "image": "sha256:" + "a" * 64, "cmd": None, "env": {}, "secret_env": None, "ports": [], "volumes": [],
             "restart": "unless-stopped", "running": True, "readiness_delay": 0, "rollout": True,
             "takeover": {"destination": None, "role": "jobs"}}
    providers.ContainerProvider().create(props)
    c.stop.assert_not_called()
    c.start.assert_not_called()
    c.images.return_value = []
    c.containers.return_value = [kamal_jobs, {"Id": "new" * 8, "State": "running", "Names": ["/" + props["name"]],
                                              "Labels": props["labels"], "ImageID": props["image"]}]
    entry = {"target": TARGET, "role": "jobs", "name": props["name"], "container_id": "new" * 8,
             "image": props["image"], "proxied": False, "ports": [], "readiness_delay": 0, "stop_timeout": 30,
             "retain": 5, "takeover": props["takeover"]}
    rollout = {"step": "retire", "owner": props["owner"], "destination": "production",
               "labels": {"service": "shop", "destination": "production"}, "containers": [entry]}
    providers.RolloutProvider().create(rollout)
    c.stop.assert_called_once_with("kjobs" * 8, timeout=providers.STOP_TIMEOUT_S)
    c.remove_container.assert_not_called()
    c.stop.reset_mock()
    providers.RolloutProvider().create({**rollout, "containers": [{**entry, "takeover": None}]})
    c.stop.assert_not_called()
