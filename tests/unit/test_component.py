"""Structure of the component under Pulumi's mocks: type tokens, parents, names, secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pulumi
import pytest

from components import config
from components.resources import ShipyardResource

REGISTERED: list[pulumi.runtime.MockResourceArgs] = []
MADE: list[ShipyardResource] = []  # every plugin resource declared (`_record`)
CHILDREN: list[tuple[str, object, dict]] = []  # (name, parent, props) of every plugin resource declared
AFTER: dict[str, list[str]] = {}  # name -> the names of the resources it depends on


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        REGISTERED.append(args)
        outs = dict(args.inputs)
        if args.typ == "shipyard:index:Image":
            outs.update(image_id="sha256:" + "a" * 64, repo_digest="")
        if args.typ == "shipyard:index:Container":
            outs.update(container_id="c-" + args.name)
        return f"{args.name}-id", outs

    def call(self, args):
        return {}


def registered(check: Callable[[Any], None]) -> pulumi.Output:
    """`check` once every plugin resource declared is registered: the mocks register on the SDK's threads, so a look
    at REGISTERED before may miss some, under load."""
    return pulumi.Output.all(*[r.urn for r in MADE]).apply(check)


def _record(tmp_path: Path, mocker) -> None:
    """Mocks that record every resource, and every plugin resource's parent, props and dependencies."""
    REGISTERED.clear()
    CHILDREN.clear()
    AFTER.clear()
    MADE.clear()
    real = ShipyardResource.__init__

    def spy(self, name, props, opts=None, **kw):
        MADE.append(self)
        CHILDREN.append((name, opts.parent if opts else None, props))
        AFTER[name] = [d.pulumi_resource_name for d in (opts.depends_on or [])] if opts else []
        real(self, name, props, opts, **kw)
    mocker.patch.object(ShipyardResource, "__init__", spy)
    pulumi.runtime.set_mocks(Mocks(), project="shipyard", stack="staging", preview=False)
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")


@pytest.fixture
def service(tmp_path: Path, mocker):
    _record(tmp_path, mocker)
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1", "builder": {"context": "."},
                       "servers": {"web": {"hosts": ["h1", "h2"], "ports": ["8080:80"],
                                           "env": {"secret": ["TOKEN"]}}},
                       "registry": {"server": "r:5000", "username": "u", "password": "hunter2"},
                       "secrets": {"TOKEN": "t0ken"}}, stack="staging")
    from components.service import DestinationService
    return DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)


@pulumi.runtime.test
def test_types_parents_and_names(service):
    def check(_):
        by_type = {}
        for r in REGISTERED:
            by_type.setdefault(r.typ, []).append(r)
        # a rollout registers once its inputs resolve, which may be after this look
        assert set(by_type) - {"shipyard:index:Rollout"} == {
            "shipyard:deploy:DestinationService", "pulumi:providers:shipyard", "shipyard:index:Image",
            "shipyard:index:Container", "shipyard:index:Network"}
        assert sorted(n for n, _, _ in CHILDREN if "-rollout-" in n) == [
            "hello-staging-rollout-retire", "hello-staging-rollout-start"]
        assert sorted(r.name for r in by_type["shipyard:index:Container"]) == [
            "hello-staging-web@h1", "hello-staging-web@h2"]
        image = by_type["shipyard:index:Image"][0]
        assert image.name == "hello-staging-image"
        assert image.inputs["tag"] == "r:5000/acme/hello:v1-staging"
        assert image.inputs["labels"]["destination"] == "staging"
        for c in by_type["shipyard:index:Container"]:
            assert c.inputs["name"] == "hello-web-staging-v1"
            assert c.inputs["image"] == "sha256:" + "a" * 64  # the image ID, never the tag
    # the containers output resolves once every container is registered
    return pulumi.Output.all(service.containers, service.urls).apply(lambda a: (check(a), assert_urls(a[1])))


def assert_urls(urls):
    assert urls == ["http://h1:8080", "http://h2:8080"]


@pulumi.runtime.test
def test_every_resource_is_a_child_of_the_component_and_secrets_stay_secret(service):
    assert CHILDREN and all(parent is service for _, parent, _ in CHILDREN)
    props = {name: p for name, _, p in CHILDREN}
    secret = [props["hello-staging-image"]["registry_password"]] + [
        props[f"hello-staging-web@{h}"]["secret_env"] for h in ("h1", "h2")]

    async def flags():
        return [await o.is_secret() for o in secret]
    return pulumi.Output.from_input(asyncio.ensure_future(flags())).apply(_assert_all_secret)


def _assert_all_secret(flags: list[bool]) -> None:
    assert flags == [True, True, True]


@pulumi.runtime.test
def test_a_rollout_is_one_unit_no_route_switches_before_every_role_is_ready(tmp_path, mocker):
    """Every role's new container, then the workers' start, then the routes, then the retirement of what ran
    before; a second boot batch begins after the first one's retirement."""
    _record(tmp_path, mocker)
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1", "builder": {"context": "."},
                       "servers": {"web": {"hosts": ["h1", "h2"], "proxy": {"hosts": ["hello.example"]}},
                                   "jobs": {"hosts": ["h1", "h2"], "cmd": "work"}},
                       "boot": {"limit": 1}}, stack="staging")
    from components.service import DestinationService
    DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)

    def check(_):
        props = {name: p for name, _, p in CHILDREN}
        for n, host in ((1, "h1"), (2, "h2")):
            start, retire = f"hello-staging-rollout-start-{n}", f"hello-staging-rollout-retire-{n}"
            batch = {f"hello-staging-web@{host}", f"hello-staging-jobs@{host}"}
            assert batch <= set(AFTER[start])
            assert start in AFTER[f"hello-staging-web-route@{host}"]  # and so after every container of the batch
            # only the route waits for kamal-proxy: it starts beside the containers, and goes beside them
            assert f"hello-staging-proxy@{host}" in AFTER[f"hello-staging-web-route@{host}"]
            assert not {f"hello-staging-proxy@{host}"} & {*AFTER[f"hello-staging-web@{host}"],
                                                         *AFTER[f"hello-staging-jobs@{host}"]}
            assert {start, f"hello-staging-web-route@{host}"} <= set(AFTER[retire])
            assert (props[start]["step"], props[retire]["step"]) == ("start", "retire")
            assert props[f"hello-staging-jobs@{host}"]["rollout"] and props[f"hello-staging-web@{host}"]["rollout"]
        assert "hello-staging-rollout-retire-1" in AFTER["hello-staging-web@h2"]
        assert "hello-staging-rollout-retire-1" in AFTER["hello-staging-jobs@h2"]
    return registered(check)


@pulumi.runtime.test
def test_an_app_of_accessories_only_builds_nothing_and_declares_its_accessories(tmp_path, mocker):
    _record(tmp_path, mocker)
    (tmp_path / "Dockerfile").unlink()  # no Dockerfile, no git checkout: nothing is built
    cfg = config.load({"service": "data", "image": "acme/data",
                       "accessories": {"db": {"image": "postgres:16", "host": "h1"}}}, stack="staging")
    from components.service import DestinationService
    svc = DestinationService("data-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)
    assert (svc.version, svc.image_id, svc.tag) == (None, None, None)

    def check(_):
        types = {r.typ for r in REGISTERED}
        assert "shipyard:index:Image" not in types and "shipyard:index:Rollout" not in types
        assert [n for n, _, _ in CHILDREN if "@" in n] == ["data-staging-network@h1", "data-staging-accessory-db@h1"]
    return registered(check)


@pytest.mark.parametrize("builder,message", [
    ({"context": "app"}, r"^builder.context: directory .*/app does not exist: set builder.context"),
    ({"context": ".", "dockerfile": "Dockerfile.prod"}, r"^builder.dockerfile: Dockerfile.prod not found in "),
])
def test_a_missing_context_or_dockerfile_stops_the_program_before_any_resource(tmp_path, mocker, builder, message):
    from components import service as service_module
    from components.errors import ConfigError
    pulumi.runtime.set_mocks(Mocks(), project="shipyard", stack="staging", preview=True)
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    resources = [mocker.patch.object(service_module, name, autospec=True)
                 for name in ("Image", "Network", "Volume", "Container", "Proxy", "ProxyRoute")]
    cfg = config.load({"service": "hello", "image": "acme/hello", "builder": builder,
                       "servers": {"web": {"hosts": ["h1"]}}}, stack="staging")
    with pytest.raises(ConfigError, match=message):
        service_module.DestinationService("hello-staging", cfg, owner="shipyard/staging",
                                          project_dir=tmp_path)
    for resource in resources:
        resource.assert_not_called()



@pulumi.runtime.test
def test_one_plugin_instance_serves_every_host(tmp_path, mocker):
    """One `shipyard` provider per destination, whatever its host count: its own pool runs every host at once (no
    provider processes per group of hosts), and it is explicit - the package's default provider would read the
    stack's `shipyard:*` config as its own settings."""
    _record(tmp_path, mocker)
    hosts = [f"h{i}" for i in range(1, 10)]
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1", "builder": {"context": "."},
                       "servers": {"web": {"hosts": hosts, "proxy": {"hosts": ["hello.example"]}}}}, stack="staging")
    from components.service import DestinationService
    DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)

    def check(_):
        providers = [r for r in REGISTERED if r.typ.startswith("pulumi:providers:")]
        assert {(r.typ, r.name) for r in providers} == {("pulumi:providers:shipyard", "hello-staging-plugin")}
        assert all(not r.inputs for r in providers)
        served = {r.name: (r.provider or "").split("::")[-2] for r in REGISTERED if r.typ.startswith("shipyard:index:")}
        assert len(served) >= 1 + 4 * len(hosts) - len(hosts)  # image, and per host a proxy, network and container
        assert set(served.values()) == {"hello-staging-plugin"}, served
    return registered(check)  # not once the containers are: a host's proxy is declared beside its container


@pulumi.runtime.test
def test_builder_arch_and_login_and_boot_wait_reach_the_build_and_the_rollout(tmp_path, mocker):
    """Kamal's builder.arch (the build's platform), builder.remote's own login (the build host's SSH user) and
    boot.wait (seconds after a batch's retirement, before the next batch; none after the last)."""
    _record(tmp_path, mocker)
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1",
                       "builder": {"context": ".", "arch": "arm64", "host": "b1", "user": "app"},
                       "servers": {"web": {"hosts": ["h1", "h2"]}}, "boot": {"limit": 1, "wait": 2}},
                      stack="staging")
    from components.service import DestinationService
    DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)

    def check(_):
        props = {name: p for name, _, p in CHILDREN}
        image = props["hello-staging-image"]
        assert image["build_platform"] == "linux/arm64"
        assert (image["build_host"]["host"], image["build_host"]["user"]) == ("b1", "app")
        assert all(t["user"] == "root" for t in image["ship_to"])
        assert props["hello-staging-rollout-retire-1"]["wait"] == 2
        assert "wait" not in props["hello-staging-rollout-retire-2"]
    return pulumi.Output.from_input(1).apply(check)


@pulumi.runtime.test
def test_hooks_stand_in_kamals_order_in_the_graph(tmp_path, mocker):
    """pre-connect and pre-build before the image, pre-deploy after it and before anything on a host, pre-/post-
    app-boot around each batch, post-deploy after the last; a stack without hooks has none."""
    _record(tmp_path, mocker)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for h in ("pre-connect", "pre-build", "pre-deploy", "pre-app-boot", "post-app-boot", "post-deploy"):
        (hooks / h).write_text("#!/bin/sh\n")
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1", "builder": {"context": "."},
                       "servers": {"web": {"hosts": ["h1", "h2"]}}, "boot": {"limit": 1},
                       "secrets": {"S": "s3cret"}, "hooks": {"path": "hooks", "secrets": {"HOOK_ONLY": "h"}}},
                      stack="staging")
    from components.service import DestinationService
    DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path)

    def check(_):
        props = {name: p for name, _, p in CHILDREN}
        h = "hello-staging-hook-"
        assert {f"{h}pre-connect", f"{h}pre-build"} <= set(AFTER["hello-staging-image"])
        assert "hello-staging-image" in AFTER[f"{h}pre-deploy"]
        assert f"{h}pre-deploy" in AFTER["hello-staging-network@h1"]
        assert f"{h}pre-app-boot-1" in AFTER["hello-staging-web@h1"]
        assert "hello-staging-rollout-retire-1" in AFTER[f"{h}post-app-boot-1"]
        assert f"{h}post-app-boot-1" in AFTER[f"{h}pre-app-boot-2"]
        assert f"{h}post-app-boot-2" in AFTER[f"{h}post-deploy"]
        assert props[f"{h}pre-deploy"]["workdir"] == str(tmp_path)
        assert props[f"{h}pre-build"]["secrets"] is None  # secrets only where Kamal gives them
        assert props[f"{h}pre-connect"]["secrets"] is not None and props[f"{h}post-deploy"]["secrets"] is not None

    def build_hosts(details):  # KAMAL_HOSTS of pre-build: every host, as Kamal gives it, not the build host's alone
        assert details["HOSTS"] == "h1,h2"

    def connect(a):  # pre-connect: every secret, the hooks' own too, and KAMAL_LOCK false (before Kamal's lock)
        details, secrets = a
        assert details["LOCK"] == "false" and secrets == {"HOOK_ONLY": "h", "S": "s3cret"}
    props = {name: p for name, _, p in CHILDREN}
    return pulumi.Output.all(pulumi.Output.from_input(1).apply(check), [
        p["details"].apply(build_hosts) for name, _, p in CHILDREN if name == "hello-staging-hook-pre-build"],
        pulumi.Output.all(props["hello-staging-hook-pre-connect"]["details"],
                          props["hello-staging-hook-pre-connect"]["secrets"]).apply(connect))


@pulumi.runtime.test
def test_a_rollback_builds_nothing_so_runs_no_pre_build_and_its_hooks_say_rollback(tmp_path, mocker):
    """As `kamal rollback`: the hooks get KAMAL_COMMAND=rollback, and there is no pre-build (nothing is built)."""
    _record(tmp_path, mocker)
    (tmp_path / "hooks").mkdir()
    for h in ("pre-build", "pre-deploy", "post-deploy"):
        (tmp_path / "hooks" / h).write_text("#!/bin/sh\n")
    cfg = config.load({"service": "hello", "image": "acme/hello", "version": "v1", "builder": {"context": "."},
                       "servers": {"web": {"hosts": ["h1"]}}, "hooks": {"path": "hooks"}}, stack="staging")
    from components.service import DestinationService
    DestinationService("hello-staging", cfg, owner="shipyard/staging", project_dir=tmp_path, command="rollback")

    def check(details):
        hooks = {name: p for name, _, p in CHILDREN if "-hook-" in name}
        assert set(hooks) == {"hello-staging-hook-pre-deploy", "hello-staging-hook-post-deploy"}
        assert details["COMMAND"] == "rollback"
    props = {name: p for name, _, p in CHILDREN}
    return props["hello-staging-hook-pre-deploy"]["details"].apply(check)


STOPPED_WHILE_WAITING = '''
import asyncio, os, signal, threading
from components import program
signal.signal(signal.SIGINT, program._stopped)

async def declaring():
    try:
        print("declared so far", end="")
        # as the CLI stops a program whose run has failed
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        await asyncio.sleep(5)
    finally:
        asyncio.get_running_loop()  # the SDK's clean-up, which needs a running loop

asyncio.new_event_loop().run_until_complete(declaring())  # as the SDK runs a program
print("went on after SIGINT")
'''


@pytest.mark.parametrize("where", ["waiting", "running"])
def test_the_program_stopped_by_sigint_exits_at_once_with_no_traceback(where):
    """The CLI stops the program with SIGINT once the run has failed; the program may be anywhere then - in the event
    loop's wait, or running Python. Either way it ends with status 1, what it printed kept, and nothing else said."""
    import subprocess
    import sys
    code = STOPPED_WHILE_WAITING if where == "waiting" else STOPPED_WHILE_WAITING.replace(
        "await asyncio.sleep(5)", "while True: pass")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "declared so far", "")
