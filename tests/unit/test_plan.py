"""Planning is data in, data out."""

from __future__ import annotations

from components import config, decisions, payloads, plan

OWNER = "shipyard/staging"


def cfg(**over):
    base = {"service": "hello", "image": "acme/hello", "registry": {"server": "r.example.com"},
            "servers": {"web": {"hosts": ["h1", "h2"], "ports": ["8080:80"], "env": {"clear": {"B": "2"}}},
                        "jobs": {"hosts": ["h2"], "cmd": "bin/jobs", "restart": "always"}},
            "env": {"clear": {"A": "1"}}}
    return config.load({**base, **over}, stack="staging")


def test_image_spec():
    spec = plan.image_spec(cfg(), "abc", OWNER)
    assert spec.tag == "r.example.com/acme/hello:abc-staging"
    assert spec.labels == {"service": "hello", "destination": "staging", "version": "abc", "shipyard.stack": OWNER}
    assert spec.build_host == "h1" and spec.hosts == ("h1", "h2")


def test_container_specs_one_per_role_and_host():
    specs = plan.container_specs(cfg(), "abc", OWNER)
    assert [(s.resource_name, s.name) for s in specs] == [
        ("web@h1", "hello-web-staging-abc"), ("web@h2", "hello-web-staging-abc"), ("jobs@h2", "hello-jobs-staging-abc")]
    web, _, jobs = specs
    assert web.env["A"] == "1" and web.env["B"] == "2" and "B" not in jobs.env
    assert web.env["SHIPYARD_DESTINATION"] == "staging" and web.env["SHIPYARD_VERSION"] == "abc"
    assert web.env["SHIPYARD_HOST"] == "h1"
    assert web.labels["role"] == "web" and jobs.labels["role"] == "jobs"
    assert jobs.cmd == ("sh", "-c", "bin/jobs") and web.cmd is None
    assert jobs.restart == "always"
    assert plan.published_urls(web) == ["http://h1:8080"]
    assert plan.published_urls(jobs) == []


def test_resource_names_do_not_depend_on_the_version():
    a = [s.resource_name for s in plan.container_specs(cfg(), "v1", OWNER)]
    b = [s.resource_name for s in plan.container_specs(cfg(), "v2", OWNER)]
    assert a == b


def test_diff_only_counts_declared_inputs():
    olds = {"a": 1, "b": [1, 2], "c": {"x": 1}, "computed": "old", "__provider": "p1"}
    news = {"a": 1, "b": (1, 2), "c": {"x": 1}, "computed": None, "__provider": "p2"}
    assert not decisions.diff(olds, news, replace=("a", "b"), update=("c",)).has_changes
    d = decisions.diff(olds, {**news, "a": 2, "c": {"x": 2}}, replace=("a", "b"), update=("c",))
    assert d.changed == ("a", "c") and d.replaces == ("a",)
    assert decisions.diff({"l": []}, {"l": None}, replace=("l",), update=()).changed == ()  # empty == unset


def test_docker_payloads():
    ports = [config.Port.parse("8080:80").model_dump(), config.Port.parse("127.0.0.1:53:53/udp").model_dump()]
    # numbers come back from Pulumi's serialization as floats
    ports[0]["host_port"], ports[0]["container_port"] = 8080.0, 80.0
    exposed, bindings = payloads.port_bindings(ports)
    assert exposed == [(80, "tcp"), (53, "udp")]
    assert bindings == {"80/tcp": [8080], "53/udp": [("127.0.0.1", 53)]}
    assert payloads.volume_binds(["data:/var/lib/data", "/srv/x:/x:ro"], "hello", "staging") == [
        "hello-staging-data:/var/lib/data:rw", "/srv/x:/x:ro"]
    assert payloads.restart_policy("no") == {"Name": "", "MaximumRetryCount": 0}
    assert payloads.env_list({"B": "2", "A": "1"}) == ["A=1", "B=2"]


def test_boot_batches_limit_how_many_hosts_change_at_once():
    assert plan.boot_batches(("a", "b", "c"), None) == [("a", "b", "c")]
    assert plan.boot_batches(("a", "b", "c"), 2) == [("a", "b"), ("c",)]
    assert plan.boot_batches((), 2) == []


def test_proxy_deploy_command():
    proxy = config.Proxy(hosts=("shop.test",), path_prefix="/app", ssl=True,
                         healthcheck={"path": "/up", "interval": 0.5, "timeout": 2}).model_dump()
    assert payloads.proxy_deploy_argv("shop-web-staging", "shop-web-staging-v2:80", proxy) == [
        "kamal-proxy", "deploy", "shop-web-staging", "--target", "shop-web-staging-v2:80",
        "--health-check-path", "/up", "--health-check-interval", "500ms", "--health-check-timeout", "2000ms",
        "--deploy-timeout", "30000ms", "--drain-timeout", "30000ms", "--target-timeout", "30000ms",
        "--host", "shop.test", "--path-prefix", "/app", "--tls"]


def test_proxied_roles_route_by_host_name():
    specs = plan.container_specs(cfg(proxy={"hosts": ["shop.test"], "app_port": 3000}), "abc", OWNER)
    web = specs[0]
    assert web.proxy.app_port == 3000 and web.network == "kamal" and web.proxy_service == "hello-web-staging"
    assert plan.published_urls(web) == ["http://shop.test"]
    assert specs[2].proxy is None and specs[2].network is None  # jobs: no proxy


def test_accessory_specs_and_volumes_carry_the_destination():
    c = cfg(servers={"web": {"hosts": ["h1"], "volumes": ["uploads:/app/uploads", "/srv/shared:/shared:ro"]}},
            accessories={"db": {"image": "postgres:16", "hosts": ["h2"], "volumes": ["pgdata:/var/lib/pg"],
                                "port": "5432", "directories": ["backups:/backups", "wal:/wal:z"],
                                "files": ["app/pg.conf:/etc/pg.conf:ro,z",
                                          {"local": "app/key", "remote": "/etc/key", "mode": "0600",
                                           "owner": "999:999"}]}})
    (db,) = plan.accessory_specs(c, OWNER)
    assert db.name == "hello-staging-db" and db.role == "accessory.db" and db.host == "h2"
    assert db.labels["destination"] == "staging" and db.labels["accessory"] == "db"
    assert db.volumes == ("hello-staging-pgdata:/var/lib/pg:rw",)
    assert db.directories == (("backups", "/backups", None), ("wal", "/wal", "z"))
    assert [(f.local, f.remote, f.mode, f.owner, f.options) for f in db.files] == [
        ("app/pg.conf", "/etc/pg.conf", None, None, "ro,z"), ("app/key", "/etc/key", "0600", "999:999", None)]
    assert plan.destination_volumes(c) == {"h1": ("hello-staging-uploads",), "h2": ("hello-staging-pgdata",)}


def test_the_engine_runs_two_operations_per_host_at_least_its_cpu_default():
    assert plan.engine_parallel(1, 2) == 8  # the engine's own default on 2 CPUs
    assert plan.engine_parallel(16, 2) == 34
    assert plan.engine_parallel(16, 16) == 64
