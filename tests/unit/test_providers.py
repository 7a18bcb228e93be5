"""Provider logic against a fake Docker client. The fake is autospecced from docker.APIClient, so a call with a
wrong signature fails here as it would on a real host."""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import pytest

from components import hostlock, payloads, providers
from components.providers import base, container
from components.errors import DockerError, HealthCheckFailed, HostError, OwnershipConflict
from components.hosts import SSHTarget

OWNER = "shipyard/staging"
OURS = {"shipyard.stack": OWNER, "destination": "staging", "service": "hello", "role": "web"}
TARGET = {"host": "h1", "port": 22, "user": "root", "keys": [], "known_hosts": None, "host_key_policy": "strict"}


def daemon(*items):
    """A container listing as the daemon answers it: `all`, and `label` (k=v, all must match) and `name` (a
    regular expression on the name with its slash) filters, applied to the host's containers `items`."""
    import re

    def containers(all=False, filters=None, **_):
        filters = filters or {}
        out = []
        for i in items:
            labels = i.get("Labels") or {}
            if not all and i.get("State", "running") != "running":
                continue
            if any(labels.get(k) != v for k, _, v in (f.partition("=") for f in filters.get("label") or [])):
                continue
            if "name" in filters and not any(re.search(filters["name"], n) for n in i.get("Names") or []):
                continue
            out.append(i)
        return out
    return containers


@pytest.fixture
def client(mocker):
    c = mocker.create_autospec(docker.APIClient, instance=True)
    mocker.patch("components.hosts.client", return_value=c)
    mocker.patch("components.hostlock.held", side_effect=lambda *a, **kw: contextlib.nullcontext(
        mocker.create_autospec(hostlock.HeldLock, instance=True)))
    c.containers.return_value = []
    c.create_container.return_value = {"Id": "new" * 8}
    c.create_host_config.return_value = {}
    c.inspect_container.return_value = {"State": {"Running": True, "ExitCode": 0, "RestartCount": 0}}
    mocker.patch("components.providers.container.time.sleep")
    return c


def container_props(**over):
    return {"owner": OWNER, "destination": "staging", "role": "web", "target": TARGET,
            "name": "hello-web-staging-v1", "labels": {**OURS, "version": "v1"}, "image": "sha256:" + "a" * 64,
            "cmd": None, "env": {"A": "1"}, "secret_env": {"S": "s3cret"},
            "ports": [{"host_ip": None, "host_port": 8080.0, "container_port": 80.0, "protocol": "tcp"}],
            "volumes": [], "restart": "unless-stopped", "running": True, "readiness_delay": 0, **over}


def test_create_refuses_a_name_another_destination_owns_and_changes_nothing(client):
    client.containers.side_effect = daemon({"Id": "x" * 64, "Names": ["/hello-web-staging-v1"], "Labels": {
        "destination": "production", "shipyard.stack": "o/p/production"}})
    with pytest.raises(OwnershipConflict, match="belongs to stack o/p/production .destination production.; "
                                                "nothing was changed"):
        providers.ContainerProvider().create(container_props())
    client.rename.assert_not_called()
    client.create_container.assert_not_called()
    client.remove_container.assert_not_called()
    client.stop.assert_not_called()


def test_create_pins_the_image_id_starts_under_a_pending_name_then_takes_the_real_one(client):
    result = providers.ContainerProvider().create(container_props())
    kwargs = client.create_container.call_args.kwargs
    assert kwargs["image"] == "sha256:" + "a" * 64
    assert kwargs["name"].startswith("hello-web-staging-v1_pending_")
    assert kwargs["environment"] == ["A=1", "S=s3cret"]
    assert kwargs["labels"]["destination"] == "staging"
    assert client.create_host_config.call_args.kwargs["port_bindings"] == {"80/tcp": [8080]}
    assert client.create_host_config.call_args.kwargs["restart_policy"]["Name"] == "unless-stopped"
    client.start.assert_called_once_with("new" * 8)
    client.rename.assert_called_once_with("new" * 8, "hello-web-staging-v1")
    assert result.id == "new" * 8


def test_a_container_on_a_new_server_makes_the_kamal_network_its_proxy_has_not_made_yet(client, mocker):
    """A destination's containers do not wait for its kamal-proxy: on a host without the `kamal` network, a container
    that joins it - as its own network or a further one - makes it first (under the exclusive host lock, as the
    proxy's own start does): Docker 29 takes the create and fails only the start. Where it exists, nothing is
    made."""
    from components import hostlock
    client.networks.return_value = []
    props = container_props(network="kamal", ports=[])
    assert providers.ContainerProvider().create(props).id == "new" * 8
    assert client.create_network.call_args_list == [mocker.call("kamal", driver="bridge")]
    assert client.create_container.call_count == 1
    assert not any(c.kwargs.get("shared") for c in hostlock.held.call_args_list)
    accessory = container_props(network="shop-staging", extra_networks=["kamal"], ports=[])
    providers.ContainerProvider().create(accessory)
    assert client.create_network.call_count == 2
    assert client.connect_container_to_network.call_args.args[1] == "kamal"
    client.networks.return_value = [{"Name": "kamal"}]
    providers.ContainerProvider().create(props)
    assert client.create_network.call_count == 2  # no third
    asked = client.networks.call_count
    providers.ContainerProvider().create(container_props(network="shop-staging", ports=[]))
    assert client.networks.call_count == asked  # a container off the kamal network never asks for it


def test_a_kamal_apps_shell_expansions_are_the_hosts_and_nothing_else_is(client, mocker):
    """Kamal's `docker run --env A="${HOME}/x"` is expanded by the host's shell: so are these values, there; a `$`
    without braces, backticks and quotes stay as written; secrets are never sent to the shell."""
    run = mocker.patch("components.hosts.run", return_value=(0, "BEGIN/home/deploy/x\0END"))
    props = container_props(env={"A": "${HOME}/x", "B": "$5 `x`"}, host_shell_env=True)
    providers.ContainerProvider().create(props)
    script = run.call_args.args[1][2]
    assert script == "printf BEGIN; printf '%s\\0' \"${HOME}/x\"; printf END"
    assert client.create_container.call_args.kwargs["environment"] == ["A=/home/deploy/x", "B=$5 `x`", "S=s3cret"]
    run.return_value = (2, "sh: bad substitution")
    with pytest.raises(DockerError, match=r"expanding \$\{...\} in A with the host's shell, as Kamal does failed: "
                                          r"sh: bad substitution"):
        providers.ContainerProvider().create(props)


def test_docker_run_options_and_logging_reach_the_container(client):
    props = container_props(options={"memory": "2g", "cpus": "1.5", "add-host": ["db:10.0.0.5"], "init": True,
                                     "user": "app"},
                            logging={"driver": None, "options": {"max-size": "10m"}})
    providers.ContainerProvider().create(props)
    host = client.create_host_config.call_args.kwargs
    assert (host["mem_limit"], host["nano_cpus"], host["extra_hosts"], host["init"]) == \
        ("2g", 1_500_000_000, ["db:10.0.0.5"], True)
    assert host["log_config"] == {"Type": "", "Config": {"max-size": "10m"}}  # the daemon's driver, Kamal's option
    assert client.create_container.call_args.kwargs["user"] == "app"


def test_a_docker_run_flag_shipyard_does_not_set_is_refused_by_its_path():
    from components import config
    with pytest.raises(config.ConfigError, match=r"^servers.web.options: net: not a `docker run` flag shipyard sets \(it sets add-host, "):
        config.load({"service": "s", "image": "acme/s", "servers": {"web": {"hosts": ["h"], "options": {
            "net": "host"}}}}, stack="staging")


def test_a_routes_kamal_proxy_settings_are_passed_only_where_set():
    from components.config import Proxy
    plain = payloads.proxy_deploy_argv("s", "c:80", Proxy(hosts=("a.test",)).route_props())
    assert not [a for a in plain if a.startswith(("--buffer", "--forward", "--log-", "--tls-redirect", "--max-"))]
    assert "buffer_requests" not in Proxy().route_props()  # recorded routes show no change
    argv = payloads.proxy_deploy_argv("s", "c:80", Proxy(
        hosts=("a.test",), ssl=True, ssl_redirect=False, forward_headers=True, buffer_requests=True,
        max_request_body=1000, log_response_headers=("X-Id",)).route_props())
    assert {"--tls", "--tls-redirect=false", "--forward-headers=true", "--buffer-requests=true"} <= set(argv)
    assert argv[argv.index("--max-request-body") + 1] == "1000"
    assert argv[argv.index("--log-response-header") + 1] == "X-Id"


def test_asset_bridging_mounts_one_directory_with_both_versions_assets(client, mocker):
    """Kamal's asset_path: the new image's assets and the running predecessor's in the new container's directory,
    the new ones added to the predecessor's."""
    mocker.patch("components.hostfiles.home", return_value="/home/deploy")
    run = mocker.patch("components.hosts.run", return_value=(0, ""))
    client.containers.side_effect = daemon({"Id": "o" * 64, "Names": ["/hello-web-staging-v0"], "State": "running",
                                            "Labels": {**OURS, "version": "v0"}})
    props = container_props(assets={"path": "/app/public/assets", "dir": ".shipyard/hello-staging/assets"})
    providers.ContainerProvider().create(props)
    script = run.call_args_list[0].args[1][2]
    base = "/home/deploy/.shipyard/hello-staging/assets"
    assert f"docker container cp -L hello-web-staging-v1-assets:/app/public/assets/. {base}/extracted/web-v1" in script
    assert f"cp -rnT {base}/extracted/web-v1 {base}/volumes/web-v0 || true" in script
    assert f"cp -rnT {base}/extracted/web-v0 {base}/volumes/web-v1 || true" in script
    binds = client.create_host_config.call_args.kwargs["binds"]
    assert f"{base}/volumes/web-v1:/app/public/assets" in binds


def test_accessory_files_keep_their_mode_and_owner_and_mounts_take_their_options(client, mocker, tmp_path):
    mocker.patch("components.hostfiles.home", return_value="/home/deploy")
    write = mocker.patch("components.hostfiles.write_file")
    mocker.patch("components.hostfiles.make_dir")
    run = mocker.patch("components.hosts.run", return_value=(0, ""))
    (tmp_path / "key").write_text("k")
    props = container_props(role="db", ports=[], state_dir=".shipyard/hello-staging/db", files=[
        {"local": str(tmp_path / "key"), "target": "/etc/key", "hash": "sha256:" + "b" * 64, "mode": "0600",
         "owner": "999:999", "options": "z"}], directories=[{"name": "data/pg", "target": "/var/lib/pg",
                                                              "options": "Z"}])
    providers.ContainerProvider().create(props)
    remote = "/home/deploy/.shipyard/hello-staging/db/files/0-bbbbbbbbbbbb-0600-999.999-key"
    assert write.call_args.args[1:] == (remote, b"k") and write.call_args.kwargs == {"mode": 0o600}
    assert run.call_args.args[1] == ["chown", "999:999", remote]
    assert client.create_host_config.call_args.kwargs["binds"] == [
        f"{remote}:/etc/key:ro,z", "/home/deploy/.shipyard/hello-staging/db/data/pg:/var/lib/pg:rw,Z"]
    run.return_value = (1, "chown: changing ownership: Operation not permitted")
    with pytest.raises(HostError, match=r"chown 999:999 failed .*: the SSH user may not give files away"):
        providers.ContainerProvider().create(props)


def test_how_the_hosts_kamal_proxy_runs():
    default = payloads.proxy_run(None)
    assert default["port_bindings"] == {"80/tcp": [80], "443/tcp": [443]} and "command" not in default["container"]
    assert default["log_max_size"] == "10m" and default["host"] == {}
    run = payloads.proxy_run({"http_port": 8080.0, "https_port": 8443, "bind_ips": ["10.0.0.1"], "debug": True,
                              "metrics_port": 9090.0, "log_max_size": "30m", "options": {"memory": "512m"}})
    assert run["port_bindings"] == {"80/tcp": [("10.0.0.1", 8080)], "443/tcp": [("10.0.0.1", 8443)]}
    assert run["container"]["command"] == ["kamal-proxy", "run", "--debug", "--metrics-port=9090"]
    assert run["ports"] == [80, 443, 9090] and run["host"] == {"mem_limit": "512m"}
    assert payloads.proxy_run({"publish": False})["port_bindings"] is None
    assert payloads.proxy_run_digest({"metrics_port": 9090.0}) == payloads.proxy_run_digest({"metrics_port": 9090})


def test_kamal_quoting_for_the_hosts_shell():
    assert payloads.host_shell_quoted('a ${HOME} $X `b` "q" \\z') == '"a ${HOME} \\$X \\`b\\` \\"q\\" \\\\z"'
    assert payloads.host_shell_values("BEGIN x \0\0END", 2) == [" x ", ""]
    assert payloads.host_shell_values("BEGINx\0END", 2) is None
    assert payloads.kamal_env({"A": "", "B": "  ", "C": "c"}) == {"C": "c"}


def test_a_container_that_crashes_is_removed_and_the_old_one_keeps_its_port_and_its_name(client):
    old = {"Id": "o" * 64, "Names": ["/hello-web-staging-v0"], "Labels": {**OURS, "version": "v0"},
           "State": "running", "Ports": [{"PublicPort": 8080}], "Created": 1}
    client.containers.side_effect = daemon(old)
    # Docker restarts it (restart policy): it counts as running, but it restarted - a crash
    client.inspect_container.return_value = {"State": {"Running": True, "Restarting": True, "ExitCode": 3,
                                                       "RestartCount": 1}}
    client.logs.return_value = b"boom: s3cret is wrong\n"
    with pytest.raises(HealthCheckFailed, match=r"container hello-web-staging-v1 \(role web\) of destination "
                                                r"staging exited with code 3, restarted 1 time right after "
                                                r"starting; it was removed .* Last output: boom: \[secret\] is wrong"):
        providers.ContainerProvider().create(container_props())
    client.stop.assert_called_once_with("o" * 64, timeout=providers.STOP_TIMEOUT_S)  # port handed over...
    client.start.assert_any_call("o" * 64)  # ...and back
    client.remove_container.assert_called_once_with("new" * 8, v=False, force=True)
    client.rename.assert_not_called()


def test_an_accessory_is_replaced_create_before_delete_and_its_old_one_runs_again_if_the_new_one_fails(client):
    """One writer of its data at a time: the old accessory stops just before the new one starts (it publishes no
    port here - the volume alone is reason enough) and starts again, never removed, when the new one crashes."""
    old = {"Id": "o" * 64, "Names": ["/hello-staging-db"], "Labels": {**OURS, "role": "accessory.db"},
           "State": "running", "Created": 1}
    client.containers.side_effect = daemon(old)
    client.inspect_container.return_value = {"State": {"Running": False, "ExitCode": 3, "RestartCount": 0}}
    client.logs.return_value = b"bad config\n"
    props = container_props(role="accessory.db", name="hello-staging-db", labels={**OURS, "role": "accessory.db"},
                            ports=[], exclusive=True, retain=1)
    with pytest.raises(HealthCheckFailed, match="it was removed and the previous version keeps running"):
        providers.ContainerProvider().create(props)
    client.stop.assert_called_once_with("o" * 64, timeout=providers.STOP_TIMEOUT_S)
    client.start.assert_any_call("o" * 64)
    client.remove_container.assert_called_once_with("new" * 8, v=False, force=True)
    client.rename.assert_not_called()
    olds = {**props, "delete_first": True, "container_id": "o" * 64}  # recorded by earlier releases
    d = providers.ContainerProvider().diff("o" * 64, olds, {**props, "cmd": ["other"]})
    assert d.replaces == ["cmd"] and not d.delete_before_replace


def live(client, *items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fake daemon keeps `items` (by ID) and what create, start, stop, rename and remove do to them."""
    by_id = {i["Id"]: i for i in items}
    client.containers.side_effect = lambda all=False, filters=None, **_: [  # as listed: a copy
        dict(i) for i in daemon(*by_id.values())(all, filters)]

    def create(image=None, name=None, labels=None, **_):
        by_id["new" * 8] = {"Id": "new" * 8, "Names": [f"/{name}"], "Labels": labels, "State": "created",
                            "Created": 2}
        return {"Id": "new" * 8}
    client.create_container.side_effect = create
    client.start.side_effect = lambda cid: by_id[cid].update(State="running")
    client.stop.side_effect = lambda cid, timeout=None: by_id[cid].update(State="exited")
    client.rename.side_effect = lambda cid, name: by_id[cid].update(Names=[f"/{name}"])
    client.remove_container.side_effect = lambda cid, **_: by_id.pop(cid)

    def inspect(cid):
        if cid not in by_id:
            raise docker.errors.NotFound(f"No such container: {cid}")
        return {"State": {"Running": by_id[cid]["State"] == "running", "ExitCode": 0, "RestartCount": 0}}
    client.inspect_container.side_effect = inspect
    return by_id


def test_a_run_that_goes_no_further_puts_back_the_accessory_it_replaced_and_the_next_up_hands_over_again(client,
                                                                                                        mocker):
    """An accessory's new config replaced it, then another operation of the run failed (an app role's new version
    was not ready): the run ends with the old accessory - same container, under its name - running and the new one
    stopped beside it, as before the deploy. The state records the new one: the next diff finds it stopped (an
    update of `running`); the delete the failed run left pending for the old one leaves it serving, and the update
    hands over again and removes it."""
    from components.providers import rollout
    labels = {**OURS, "role": "accessory.db"}
    by_id = live(client, {"Id": "o" * 64, "Names": ["/hello-staging-db"], "Labels": labels, "State": "running",
                          "Created": 1})
    props = container_props(role="accessory.db", name="hello-staging-db", labels=labels, ports=[], exclusive=True,
                            retain=1)
    old, new = "o" * 64, providers.ContainerProvider().create(props).id

    def now() -> dict[str, tuple[str, str]]:
        return {cid: (i["State"], i["Names"][0]) for cid, i in by_id.items()}
    assert now() == {old: ("exited", f"/hello-staging-db_replaced_{old[:12]}"), new: ("running", "/hello-staging-db")}

    rollout.abandon()
    assert now() == {old: ("running", "/hello-staging-db"), new: ("exited", f"/hello-staging-db_replaced_{new[:12]}")}

    mocker.patch.object(rollout, "RUN", rollout._Run())  # the next `up`: its own plugin process
    recorded = {**props, "container_id": new}
    provider = providers.ContainerProvider()
    olds, why = provider.observed(new, recorded)
    assert olds == {**recorded, "running": False}
    assert why == ("host h1: container hello-staging-db is stopped (a failed deploy put back the one it "
                   "replaced, or it was stopped by hand): this update starts it")
    d = provider.diff(new, olds, props)
    assert d.changes and not d.replaces
    provider.delete(old, {**props, "container_id": old})  # pending since the failed run
    assert now()[old] == ("running", "/hello-staging-db")
    provider.update(new, olds, props)
    assert now() == {new: ("running", "/hello-staging-db")}
    assert provider.observed(new, recorded) == (recorded, "")  # runs as recorded: nothing to change
    rollout.abandon()  # this run ends: it took nothing over that it must put back
    assert now() == {new: ("running", "/hello-staging-db")}


def test_a_replaced_accessory_is_removed_by_the_engines_delete_and_a_failure_after_that_keeps_the_new_one(client):
    """The run got to its end: the engine deletes the replaced accessory (its clean-up spared it till then), and
    an interruption after that keeps the new one."""
    from components.providers import rollout
    labels = {**OURS, "role": "accessory.db"}
    by_id = live(client, {"Id": "o" * 64, "Names": ["/hello-staging-db"], "Labels": labels, "State": "running",
                          "Created": 1})
    props = container_props(role="accessory.db", name="hello-staging-db", labels=labels, ports=[], exclusive=True,
                            retain=1)
    new = providers.ContainerProvider().create(props).id
    providers.ContainerProvider().delete("o" * 64, {**props, "container_id": "o" * 64})
    rollout.abandon(rollout.INTERRUPTED)
    assert {cid: i["State"] for cid, i in by_id.items()} == {new: "running"}


def test_observed_looks_at_the_host_only_for_a_running_accessory_and_keeps_the_record_when_unreachable(client):
    recorded = {**container_props(ports=[], exclusive=True), "container_id": "c" * 64}
    client.inspect_container.return_value = {"State": {"Running": True}}
    assert providers.ContainerProvider.observed("c" * 64, recorded) == (recorded, "")
    client.inspect_container.side_effect = docker.errors.NotFound("gone")
    assert providers.ContainerProvider.observed("c" * 64, recorded) == (recorded, "")  # gone: the read says so
    client.inspect_container.side_effect = OSError("connection reset")
    assert providers.ContainerProvider.observed("c" * 64, recorded) == (recorded, "")  # the run says so later
    client.inspect_container.reset_mock()
    for olds in ({**recorded, "exclusive": False}, {**recorded, "running": False}):
        assert providers.ContainerProvider.observed("c" * 64, olds) == (olds, "")
    client.inspect_container.assert_not_called()


def test_leftovers_of_an_interrupted_run_are_removed_before_a_new_create(client):
    pending = {"Id": "p" * 64, "Names": ["/hello-web-staging-v1_pending_1234abcd"],
               "Labels": {**OURS, "version": "v1"}, "State": "running", "Created": 5, "ImageID": "sha256:x"}
    client.containers.side_effect = daemon(pending)
    providers.ContainerProvider().create(container_props(ports=[]))
    client.remove_container.assert_any_call("p" * 64, v=False, force=True)


def test_a_failed_create_whose_clean_up_failed_is_removed_by_a_later_runs_clean_up_in_any_role(client, mocker):
    """A cut connection failed an accessory's create and its clean-up: its replacement ran on under its pending name,
    beside the accessory, while later `up`s changed only the app. The next accessory's or rollout's clean-up on the
    host removes it - not what this run is creating under a pending name."""
    mocker.patch.object(container, "RUN_NONCE", "5e6f7a8b")
    earlier = {"Id": "d" * 64, "Names": ["/hello-staging-db_pending_1234abcd"], "State": "running", "Created": 5,
               "Labels": {**OURS, "version": "v1", "role": "db"}, "ImageID": "sha256:x"}
    ours_now = {**earlier, "Id": "e" * 64, "Names": ["/hello-jobs-staging-v2_pending_5e6f7a8b0001"],
                "Labels": {**OURS, "version": "v2", "role": "jobs"}}
    current = {**earlier, "Id": "w" * 64, "Names": ["/hello-web-staging-v2"],
               "Labels": {**OURS, "version": "v2", "role": "web"}}
    removed = container.after_rollout(client, container_props(), "w" * 64, [earlier, ours_now, current])
    assert removed == {"d" * 64}
    client.remove_container.assert_called_once_with("d" * 64, v=False, force=True)


def test_a_new_worker_first_stops_the_one_an_interrupted_rollout_started_beside_the_last_whole_one(client, mocker):
    def worker(version: str, started: str) -> dict[str, Any]:
        return {"Id": version * 16, "Names": [f"/hello-jobs-staging-{version}"], "State": "running", "Created": 5,
                "Labels": {**OURS, "version": version, "role": "jobs"}, "ImageID": "sha256:x", "started": started}
    whole, unfinished = worker("v1", "2026-11-30T05:00:00.5Z"), worker("v2", "2026-11-30T05:07:00Z")
    mocker.patch.object(container, "proxy_routes", return_value=None)  # no proxy on this host
    client.containers.side_effect = daemon(whole, unfinished)
    client.inspect_container.side_effect = lambda cid: {"State": {"StartedAt": {
        i["Id"]: i["started"] for i in (whole, unfinished)}[cid], "Running": True}}
    props = container_props(role="jobs", name="hello-jobs-staging-v3", ports=[], rollout=True, proxy=None,
                            labels={**OURS, "version": "v3", "role": "jobs"})
    providers.ContainerProvider().create(props)
    client.stop.assert_called_once_with("v2" * 16, timeout=container.stop_timeout(props))
    client.start.assert_not_called()  # a worker is created stopped: the rollout starts it
    # the interrupted run got past its routes (the web role serves v2): its worker is the one that stays
    web = {**worker("w2", "2026-11-30T05:06:00Z"), "Names": ["/hello-web-staging-v2"],
           "Labels": {**OURS, "version": "v2", "role": "web"}}
    client.containers.side_effect = daemon(whole, unfinished, web)
    mocker.patch.object(container, "proxy_routes", return_value={"hello-web-staging": {
        "target": "hello-web-staging-v2:80"}})
    client.stop.reset_mock()
    providers.ContainerProvider().create(props)
    client.stop.assert_called_once_with("v1" * 16, timeout=container.stop_timeout(props))


def test_an_accessory_image_is_pulled_with_the_stacks_login_for_its_registry_and_no_other(client):
    import docker.errors
    client.inspect_image.side_effect = [docker.errors.ImageNotFound("no"), {"Id": "sha256:pg"}] * 2
    client.pull.side_effect = lambda *a, **kw: iter([{"status": "Downloaded"}])
    login = {"server": "reg.example", "username": "u", "password": "p"}
    for image, sent in (("postgres:16", {}), ("reg.example/acme/pg:16", {"username": "u", "password": "p"})):
        client.pull.reset_mock()
        props = container_props(image=image, role="db", ports=[], registry_auth=login)
        providers.ContainerProvider().create(props)
        client.pull.assert_called_once_with(image, stream=True, decode=True, auth_config=sent)
        assert client.create_container.call_args.kwargs["image"] == "sha256:pg"


def test_a_host_port_another_container_publishes_is_refused_at_check_before_anything_changes(client):
    proxy = {"Id": "p", "Names": ["/kamal-proxy"], "State": "running", "Labels": {"kamal-proxy": "true"},
             "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]}
    previous = {"Id": "o", "Names": ["/hello-web-staging-v0"], "State": "running", "Labels": {**OURS, "version": "v0"},
                "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]}
    client.containers.return_value = [previous]
    provider = providers.ContainerProvider()
    assert provider.check({}, container_props()).failures == []  # its role's previous version hands the port over
    client.containers.return_value = [previous, proxy]
    [failure] = provider.check({}, container_props()).failures
    assert failure.property == "ports" and failure.reason == (
        "host h1: port 8080 is already published by container kamal-proxy of something not managed by this "
        "project; nothing was changed. Publish hello-web-staging-v1 on another port, or stop that container")
    client.containers.reset_mock()
    assert provider.check(container_props(), container_props()).failures == []  # unchanged ports: no look
    client.containers.assert_not_called()


def test_host_names_another_stacks_route_holds_are_refused_at_check_before_any_container_runs(client, mocker):
    """A second stack that kept the first one's proxy hosts: refused at the container's check (at preview, and at
    `up` before any of the rollout's containers runs), not by its route's switch once its workers have started."""
    from components.providers import container
    proxy = {"app_port": 80, "hosts": ["shop.test"], "healthcheck": {"path": "/up", "interval": 1, "timeout": 5}}
    props = container_props(ports=[], rollout=True, proxy=proxy, takeover=None)
    routes = mocker.patch.object(base, "proxy_routes", return_value={
        "shop-web-staging": {"host": "shop.test", "path": "/", "target": "0ld000000001:80"}})
    client.inspect_container.return_value = {"Id": "0ld000000001" + "0" * 52, "Name": "/shop-web-staging-v1",
                                             "Config": {"Labels": {"shipyard.stack": "shipyard/shop-staging",
                                                                   "destination": "staging", "service": "shop",
                                                                   "role": "web"}}}
    provider = providers.ContainerProvider()
    [failure] = provider.check({}, props).failures
    assert failure.property == "proxy" and failure.reason == (
        "host h1: kamal-proxy route shop-web-staging holds the host names of route hello-web-staging and serves "
        "container shop-web-staging-v1 of stack shipyard/shop-staging (destination staging); nothing was changed. "
        "Use other proxy hosts, or remove that route (`docker exec kamal-proxy kamal-proxy remove "
        "shop-web-staging`) if it is no one's.")
    # this stack's own route of the role (a rename) hands its host names over; other host names are free
    client.inspect_container.return_value["Config"]["Labels"] = {**OURS, "version": "v0"}
    assert provider.check({}, props).failures == []
    assert provider.check({}, {**props, "proxy": {**proxy, "hosts": ["other.test"]}}).failures == []
    # unchanged proxy settings (a version change, a no-op) and a host not known yet: no look at all
    routes.reset_mock()
    assert provider.check(props, props).failures == []
    assert provider.check({}, {**props, "target": {**TARGET, "host": container.UNKNOWN}}).failures == []
    assert provider.check({}, {**props, "labels": container.UNKNOWN}).failures == []  # a version not known yet
    routes.assert_not_called()


def test_the_first_check_that_looks_at_routes_begins_the_look_on_every_host_the_run_reaches(mocker):
    """The engine checks one resource at a time: a fleet's first deploy looks at every host's routes at once, each
    look taken by one check; a later check on the same host looks again."""
    hosts_ = [SSHTarget(host=f"f{i}", user="root") for i in range(3)]
    mocker.patch.object(base, "_looks", {})
    mocker.patch.object(base, "_looked", set())
    mocker.patch.object(base.hosts, "reached", return_value=hosts_)
    routes = mocker.patch.object(base, "proxy_routes", side_effect=lambda t: {"r": {"host": t.host}})
    assert base.proxy_routes_looked(hosts_[1]) == {"r": {"host": "f1"}}
    assert sorted(c.args[0].host for c in routes.call_args_list) == ["f0", "f1", "f2"]
    assert base.proxy_routes_looked(hosts_[2]) == {"r": {"host": "f2"}} and routes.call_count == 3
    assert base.proxy_routes_looked(hosts_[2]) == {"r": {"host": "f2"}} and routes.call_count == 4


def test_container_diff_is_exact_and_connection_settings_never_replace():
    p = providers.ContainerProvider()
    olds = {**container_props(), "container_id": "c1", "__provider": "old"}
    assert not p.diff("c1", olds, {**container_props(), "__provider": "new"}).changes
    d = p.diff("c1", olds, container_props(image="sha256:" + "b" * 64))
    assert d.changes and d.replaces == ["image"]
    d = p.diff("c1", {**olds, "running": False}, container_props())
    assert d.changes and d.replaces == []
    d = p.diff("c1", olds, container_props(secret_env={"S": "rotated"}))
    assert d.replaces == ["secret_env"]
    for ssh in ({"known_hosts": "/elsewhere"}, {"port": 2222}, {"keys": ["~/.ssh/new"]}, {"user": "deploy"}):
        d = p.diff("c1", olds, container_props(target={**TARGET, **ssh}))
        assert d.changes and d.replaces == [], ssh
    assert p.diff("c1", olds, container_props(target={**TARGET, "host": "h2"})).replaces == ["target"]


def test_a_label_written_with_the_organization_is_no_change():
    p = providers.ContainerProvider()
    olds = container_props(labels={**OURS, "version": "v1", "shipyard.stack": "organization/shipyard/staging"})
    assert not p.diff("c1", olds, container_props()).changes


def test_delete_never_touches_a_container_that_is_not_ours(client):
    client.inspect_container.return_value = {"Config": {"Labels": {"destination": "production"}}}
    with pytest.raises(OwnershipConflict, match="left alone"):
        providers.ContainerProvider().delete("c1", container_props())
    client.stop.assert_not_called()
    client.remove_container.assert_not_called()


def _listed(cid, version, created, running):
    return {"Id": cid, "Names": [f"/hello-web-staging-{version}"], "Labels": {**OURS, "version": version},
            "Created": created, "State": "running" if running else "exited"}


def test_delete_of_a_replaced_container_keeps_it_stopped_for_rollback(client):
    client.inspect_container.return_value = {"Config": {"Labels": {**OURS, "version": "v1"}}}
    client.containers.side_effect = daemon(_listed("v2id", "v2", 20, True), _listed("v1id", "v1", 10, True))
    providers.ContainerProvider().delete("v1id", container_props())
    client.stop.assert_called_once_with("v1id", timeout=providers.STOP_TIMEOUT_S)
    client.remove_container.assert_not_called()


def test_a_worker_replaced_by_the_next_version_gets_its_drain_timeout_to_finish(client):
    """A role without proxy: its old container stops once the new one is ready, with the role's stop timeout (Kamal's
    drain_timeout, 30 s by default) between SIGTERM and SIGKILL, not Docker's 10 s."""
    client.containers.side_effect = daemon(_listed("v1id", "v1", 10, True))
    client.inspect_container.return_value = {"State": {"Running": True, "ExitCode": 0, "RestartCount": 0}}
    providers.ContainerProvider().create(container_props(ports=[], stop_timeout=45, labels={**OURS, "version": "v2"},
                                                         name="hello-web-staging-v2"))
    client.stop.assert_called_once_with("v1id", timeout=45)
    client.stop.reset_mock()
    client.containers.side_effect = daemon(_listed("v2id", "v2", 20, True), _listed("v1id", "v1", 10, True))
    providers.ContainerProvider().delete("v1id", container_props(stop_timeout=45))  # the engine's delete, after
    client.stop.assert_called_once_with("v1id", timeout=45)


def test_a_stop_timeout_recorded_by_no_earlier_release_is_no_change():
    olds = {**container_props(), "container_id": "c1"}
    assert not providers.ContainerProvider().diff("c1", olds, {**container_props(), "stop_timeout": 30}).changes
    recorded = {**olds, "stop_timeout": 30}
    d = providers.ContainerProvider().diff("c1", recorded, {**container_props(), "stop_timeout": 60})
    assert d.changes and not d.replaces  # a new drain timeout is an update, never a replacement


def test_delete_leaves_running_a_container_a_route_still_targets(client, mocker):
    """A route switch failed after the new container was ready (its SSH connection cut, the host lock's deadline
    passed): the engine's pending delete of the old container runs first in the next `up`, while kamal-proxy
    still routes to it. It keeps serving; the route's switch retires it."""
    v1, v2 = "0ld000000001" + "0" * 52, "n3w000000002" + "0" * 52
    client.containers.side_effect = daemon(_listed(v2, "v2", 20, True), _listed(v1, "v1", 10, True))
    routes = {"hello-web-staging": {"service": "hello-web-staging", "target": "0ld000000001:80"}}
    listing = mocker.patch("components.providers.container.proxy_routes", return_value=routes)
    proxied = container_props(proxy={"app_port": 80})
    providers.ContainerProvider().delete(v1, proxied)
    client.stop.assert_not_called()
    client.remove_container.assert_not_called()
    routes["hello-web-staging"]["target"] = "n3w000000002:80"  # switched: now it stops, kept for rollback
    providers.ContainerProvider().delete(v1, proxied)
    client.stop.assert_called_once_with(v1, timeout=providers.STOP_TIMEOUT_S)
    listing.reset_mock()
    providers.ContainerProvider().delete(v1, container_props())  # a role without a route asks no proxy
    listing.assert_not_called()
    # stopped already (its route's switch stopped it): it serves nothing, so kamal-proxy is not asked either
    client.containers.side_effect = daemon(_listed(v2, "v2", 20, True), _listed(v1, "v1", 10, False))
    providers.ContainerProvider().delete(v1, proxied)
    listing.assert_not_called()
    # the run removed the role's route already (a destroy, the role left the config): no route serves it
    mocker.patch.object(base, "_removed_routes", set())
    client.containers.side_effect = daemon(_listed(v1, "v1", 10, True))
    role = container_props(proxy={"app_port": 80}, rollout=True)
    base.route_removed(SSHTarget(host=TARGET["host"]), container.route_name(role))
    client.stop.reset_mock()
    providers.ContainerProvider().delete(v1, role)
    listing.assert_not_called()
    client.remove_container.assert_any_call(v1, v=False, force=True)
    # switched again since (the same run deploys it anew): its routes are asked again
    base.route_switched(SSHTarget(host=TARGET["host"]), container.route_name(role))
    providers.ContainerProvider().delete(v1, role)
    listing.assert_called_once()


def test_delete_with_no_successor_removes_the_role_and_its_retained_versions(client):
    client.inspect_container.return_value = {"Config": {"Labels": {**OURS, "version": "v2"}}}
    client.containers.side_effect = daemon(_listed("v2id", "v2", 20, True), _listed("v1id", "v1", 10, False))
    providers.ContainerProvider().delete("v2id", container_props())
    assert {c.args[0] for c in client.remove_container.call_args_list} == {"v2id", "v1id"}


def test_read_reports_drift(client):
    client.inspect_container.return_value = {"Image": "sha256:" + "b" * 64, "State": {"Running": False},
                                             "Name": "/hello-web-staging-v1",
                                             "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}}}
    r = providers.ContainerProvider().read("c1", container_props())
    assert r.outs["image"] == "sha256:" + "b" * 64 and r.outs["running"] is False
    # an accessory keeps its image reference: refresh of an unchanged one shows no change
    r = providers.ContainerProvider().read("c1", container_props(image="postgres:16"))
    assert r.outs["image"] == "postgres:16"
    client.inspect_container.side_effect = docker.errors.NotFound("gone")
    assert providers.ContainerProvider().read("c1", container_props()).id == ""


def image_props(**over):
    return {"owner": OWNER, "destination": "staging", "build_host": TARGET, "ship_to": [TARGET],
            "tag": "acme/hello:v1-staging",
            "labels": {"destination": "staging", "service": "hello", "shipyard.stack": OWNER, "version": "v1",
                       "shipyard.build": "sha256:b1"},
            "context_hash": "sha256:1", "registry_server": None, **over}


def test_image_diff_replaces_on_build_inputs_and_updates_on_new_hosts():
    p = providers.ImageProvider()
    olds = {**image_props(), "image_id": "sha256:i", "hosts": ["h1"]}
    assert not p.diff("i", olds, image_props()).changes
    assert p.diff("i", olds, image_props(context_hash="sha256:2")).replaces == ["context_hash"]
    assert p.diff("i", olds, image_props(tag="acme/hello:v2-staging")).replaces == ["tag"]
    more = image_props(ship_to=[TARGET, {**TARGET, "host": "h2"}])
    d = p.diff("i", olds, more)
    assert d.changes and d.replaces == []
    d = p.diff("i", {**olds, "hosts": []}, image_props())  # refresh found it missing
    assert d.changes and d.replaces == []
    d = p.diff("i", olds, image_props(build_host={**TARGET, "known_hosts": "/x"}))
    assert d.changes and d.replaces == []


def test_image_delete_leaves_other_destinations_images_alone(client):
    client.images.return_value = [{"Id": "sha256:i", "RepoTags": ["acme/hello:v1-staging"],
                                   "Labels": {"destination": "production", "shipyard.stack": "shipyard/production"}}]
    providers.ImageProvider().delete("sha256:i", image_props())
    client.remove_image.assert_not_called()


def test_a_destroy_removes_the_build_steps_the_daemon_left_leaves_first_and_nothing_of_others(client, mocker):
    """Untagged images with the destination's labels: a build step chain (base <- first <- a <- b) whose image went,
    its first step labelled with the destination alone (the builder adds a label a step), a rebuild's predecessor;
    removed child first. Never another stack's or service's, one another image is built on, one a container uses
    (the daemon refuses: 409)."""
    import docker.errors
    mine = {"destination": "staging", "service": "hello"}
    store = {"sha256:first": ("sha256:base", {"destination": "staging"}), "sha256:a": ("sha256:first", mine),
             "sha256:b": ("sha256:a", {**mine, "shipyard.stack": OWNER}),
             "sha256:used": ("", mine), "sha256:theirs": ("", {**mine, "shipyard.stack": "other/staging"}),
             "sha256:another": ("", {"destination": "staging", "service": "another"})}

    def images(all=False, filters=None):  # as the daemon filters: every `label` of the filter
        wanted = dict(f.split("=", 1) for f in (filters or {}).get("label", []))
        return [{"Id": i, "ParentId": p, "RepoTags": None, "Labels": labels} for i, (p, labels) in store.items()
                if wanted.items() <= labels.items()]

    def remove_image(ref):
        if ref == "sha256:used":
            raise docker.errors.APIError("conflict", response=mocker.Mock(status_code=409))
        if any(p == ref for p, _ in store.values()):
            raise AssertionError(f"{ref} removed before its child")
        del store[ref]
    client.images.side_effect = images
    client.remove_image.side_effect = remove_image
    providers.ImageProvider().delete("sha256:i", image_props())
    assert set(store) == {"sha256:used", "sha256:theirs", "sha256:another"}
    assert {"sha256:theirs", "sha256:another"}.isdisjoint({c.args[0] for c in client.remove_image.call_args_list})
    # listed once, not once a level: a step whose every child went is removed next
    assert [c.kwargs.get("all") for c in client.images.call_args_list].count(True) == 1


def test_build_steps_the_daemon_removed_with_their_child_are_not_removed_again(client):
    from components.providers.base import remove_build_leftovers
    mine = {"destination": "staging", "service": "hello"}
    client.images.return_value = [{"Id": i, "ParentId": p, "RepoTags": None, "Labels": mine}
                                  for i, p in (("sha256:a", "sha256:base"), ("sha256:b", "sha256:a"),
                                               ("sha256:c", "sha256:b"))]
    client.remove_image.return_value = [{"Deleted": "sha256:c"}, {"Deleted": "sha256:b"}]
    remove_build_leftovers(client, image_props(), set())
    assert [c.args[0] for c in client.remove_image.call_args_list] == ["sha256:c", "sha256:a"]


def test_image_create_refuses_a_tag_someone_else_owns(client):
    client.inspect_image.return_value = {"Config": {"Labels": {"destination": "production"}}}
    with pytest.raises(OwnershipConflict, match="image tag acme/hello:v1-staging belongs to destination production"):
        providers.ImageProvider().create(image_props())
    client.build.assert_not_called()


def test_a_version_is_reused_whatever_the_checkout_but_never_rebuilt_with_other_settings(client):
    labels = {**image_props()["labels"], "shipyard.source": "sha256:old-checkout"}
    client.inspect_image.return_value = {"Id": "sha256:v1", "Config": {"Labels": labels}, "RepoDigests": []}
    check = providers.ImageProvider().check({}, image_props(context_hash="sha256:new-checkout"))
    assert not check.failures and check.inputs["reuse"] == ("the image already built for version v1 (sha256:v1), "
                                                            "not the current checkout")
    # the checkout that version was built from: its image, said so with nothing more
    same = providers.ImageProvider().check({}, image_props(context_hash="sha256:old-checkout"))
    assert same.inputs["reuse"] == "the image already built for version v1 (sha256:v1)"
    # recorded as what it was made from: once the checkout holds v1's commit again, v1 is unchanged, not refused
    assert check.inputs["context_hash"] == "sha256:old-checkout"
    assert check.inputs["labels"]["shipyard.source"] == "sha256:old-checkout"
    again = providers.ImageProvider().check({**check.inputs, "image_id": "sha256:v1", "hosts": ["h1"]},
                                            image_props(context_hash="sha256:old-checkout",
                                                        labels={**image_props()["labels"],
                                                                "shipyard.source": "sha256:old-checkout"}))
    assert not again.failures
    result = providers.ImageProvider().create(image_props(context_hash="sha256:new-checkout"))
    assert result.id == "sha256:v1"
    client.build.assert_not_called()
    other = image_props(labels={**image_props()["labels"], "shipyard.build": "sha256:other-args"})
    check = providers.ImageProvider().check({}, other)
    assert [f.property for f in check.failures] == ["tag"]
    assert "already names a build made with other builder settings" in check.failures[0].reason


def test_a_changed_source_under_the_same_version_is_refused_and_an_upgrade_rebuilds_nothing(client):
    olds = {**image_props(context_hash="tar-sha256:aaa"), "image_id": "sha256:i", "hosts": ["h1"]}
    check = providers.ImageProvider().check(olds, image_props(context_hash="tar-sha256:bbb"))
    assert [f.property for f in check.failures] == ["tag"]
    assert "version v1 already names a build and context_hash changed" in check.failures[0].reason
    # a hash recorded by an earlier release (files, not the tar) is not comparable: no refusal, no change
    earlier = {**image_props(context_hash="sha256:files",
                             labels={k: v for k, v in image_props()["labels"].items() if k != "shipyard.build"}),
               "image_id": "sha256:i", "hosts": ["h1"]}
    assert not providers.ImageProvider().check(earlier, image_props(context_hash="tar-sha256:bbb")).failures
    assert not providers.ImageProvider().diff("i", earlier, image_props(context_hash="tar-sha256:bbb")).changes


def test_a_stack_that_starts_promoting_a_version_it_built_itself_is_told_to_promote_the_next_one(client):
    olds = {**image_props(context_hash="tar-sha256:aaa"), "image_id": "sha256:i", "hosts": ["h1"]}
    promote = {"stack": "staging", "service": "hello", "repository": "acme/hello", "version": "v1"}
    news = image_props(context_hash=None, from_ref="acme/hello@sha256:s", promote=promote)
    check = providers.ImageProvider().check(olds, news)
    assert [(f.property, f.reason) for f in check.failures] == [(
        "promote", "version v1 already names a build of this destination's own; a promotion takes stack staging's "
                   "build of a version this destination has not deployed: deploy a new commit to staging first, "
                   "then this stack; nothing was changed")]


def test_a_pinned_version_reuses_its_build_whatever_the_checkout_holds(client):
    olds = {**image_props(context_hash="tar-sha256:aaa", pinned=True), "image_id": "sha256:i", "hosts": ["h1"]}
    news = image_props(context_hash="tar-sha256:bbb", pinned=True,
                       labels={**image_props()["labels"], "shipyard.source": "tar-sha256:bbb"})
    check = providers.ImageProvider().check(olds, news)
    assert check.failures == []  # not refused: the version names that build, and it is reused
    assert check.inputs["context_hash"] == "tar-sha256:aaa" and check.inputs["labels"] == olds["labels"]
    assert not providers.ImageProvider().diff("i", olds, check.inputs).changes  # nothing rebuilt, nothing changed
    # other builder settings under the same version still name another build: refused, naming them alone (what the
    # checkout holds is no reason: the version is pinned)
    other = providers.ImageProvider().check(olds, {**news, "build_args": {"X": "1"}})
    assert "version v1 already names a build and build_args changed" in other.failures[0].reason


def test_a_push_reports_the_digest_the_registry_stored():
    from components.providers.base import stream_result
    pushed = [{"status": "Pushing"}, {"status": "v1: digest: sha256:abc size: 527"},
              {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": "sha256:abc", "Size": 527}}]
    assert stream_result(pushed) == ([], None, "sha256:abc")
    assert stream_result([{"error": "denied", "errorDetail": {"message": "denied: auth"}}])[1] == "denied: auth"
    # read to its end after an error (a response left half-read would keep one of the host's Docker API channels)
    read = []
    chunks = ({"error": "first"}, {"error": "second"}, {"stream": "end"})
    assert stream_result(read.append(c) or c for c in chunks)[1] == "first"
    assert len(read) == 3


def test_image_ships_to_every_host_and_a_failing_host_fails_the_step_after_the_others(mocker):
    """Hosts pull at the same time; one that cannot pull fails the step, naming it, and the others still got the
    image (the next `up` ships only to the failed one)."""
    import docker.errors

    from components.errors import HostError
    clients = {}
    for host in ("h1", "h2", "h3", "h4"):
        c = mocker.create_autospec(docker.APIClient, instance=True)
        c.inspect_image.side_effect = docker.errors.NotFound("no such image")
        c.pull.return_value = iter([{"status": "Downloaded"}] if host != "h2" else [{"error": "manifest unknown"}])
        clients[host] = c
    mocker.patch("components.hosts.client", side_effect=lambda t: clients[t.host])
    outs = {**image_props(), "image_id": "sha256:i", "repo_digest": "reg/acme/hello@sha256:d"}
    to = [{**TARGET, "host": h} for h in ("h2", "h3", "h4")]
    with pytest.raises(HostError, match="h2.*pulling reg/acme/hello@sha256:d failed: manifest unknown"):
        providers.ImageProvider()._ship(outs, to)
    for host in ("h3", "h4"):
        clients[host].tag.assert_called_once_with("sha256:i", "acme/hello", "v1-staging")
        # no stack login: explicitly none, so docker-py never sends the operator's own
        clients[host].pull.assert_called_once_with("reg/acme/hello@sha256:d", stream=True, decode=True,
                                                   auth_config={})
    clients["h2"].tag.assert_not_called()
    assert providers.ImageProvider()._ship(outs, []) == []


def test_a_destination_moved_to_a_new_host_copies_its_image_from_where_it_is(mocker):
    """The app moves from h1 to h2 (a replaced server) with no registry: h2 is now the build host too, and never
    had the image - it is copied from h1, where it was built. A failure reading it is h1's, one taking it in h2's,
    and either way h1's `docker save` is closed, read or not. When no host it was on has it any more, one line
    says so and what to do."""
    import docker.errors
    import requests.exceptions

    from components.errors import DockerError
    clients = {h: mocker.create_autospec(docker.APIClient, instance=True) for h in ("h1", "h2")}
    clients["h1"].inspect_image.return_value = {"Id": "sha256:i"}
    clients["h2"].inspect_image.side_effect = docker.errors.NotFound("no such image")
    clients["h2"].load_image.return_value = iter([])
    mocker.patch("components.hosts.client", side_effect=lambda t: clients[t.host])
    saves = []

    def saved_image(c, image, chunks=(b"tar",)):
        assert c is clients["h1"] and image == "sha256:i"
        saves.append(mocker.Mock(**{"iter_content.return_value": iter(chunks)}))
        return saves[-1]
    mocker.patch("components.dockerapi.saved_image", side_effect=saved_image)
    h2 = {**TARGET, "host": "h2"}
    olds = {**image_props(), "image_id": "sha256:i", "repo_digest": "", "hosts": ["h1"]}
    news = image_props(build_host=h2, ship_to=[h2])
    out = providers.ImageProvider().update("sha256:i", olds, news).outs
    assert out["hosts"] == ["h2"] and out["image_id"] == "sha256:i"
    clients["h2"].tag.assert_called_once_with("sha256:i", "acme/hello", "v1-staging")

    def cut_short():
        yield b"ta"
        raise requests.exceptions.ConnectionError("reset")
    mocker.patch("components.dockerapi.saved_image", side_effect=lambda c, image: saved_image(c, image, cut_short()))
    clients["h2"].load_image.side_effect = lambda data: iter(list(data))
    with pytest.raises(HostError, match="^host h1: the connection broke while saving acme/hello:v1-staging"):
        providers.ImageProvider().update("sha256:i", olds, news)
    mocker.patch("components.dockerapi.saved_image", side_effect=saved_image)
    clients["h2"].load_image.side_effect = docker.errors.APIError("no space left on device")
    with pytest.raises(HostError, match="^host h2: shipping acme/hello:v1-staging failed: no space left"):
        providers.ImageProvider().update("sha256:i", olds, news)
    assert len(saves) == 3 and all(s.close.call_count == 1 for s in saves)
    clients["h1"].inspect_image.side_effect = docker.errors.NotFound("no such image")  # h1 pruned it meanwhile
    with pytest.raises(DockerError, match="host h2: image acme/hello:v1-staging .* no host it was on \\(h1\\) has "
                                          "it any more and no registry holds it: deploy a new version"):
        providers.ImageProvider().update("sha256:i", olds, news)


def test_a_build_shares_the_image_lock_and_a_rollout_prunes_only_when_no_build_runs(client, mocker):
    """Another destination's build may take this one's images as its cache: builds hold the host's image lock
    shared, removals exclusive - and a rollout's pruning skips (the next one prunes) rather than wait long."""
    from components import hostlock
    held = hostlock.held
    client.build.return_value = iter([{"stream": "Successfully built"}])
    client.inspect_image.return_value = {"Id": "sha256:new"}
    mocker.patch("components.providers.image._build_auth")
    mocker.patch("components.source.context_tar", return_value=b"")
    built = providers.ImageProvider()._build(client, providers.base.target(image_props(), "build_host"),
                                             {**image_props(), "context": ".", "dockerfile": "Dockerfile",
                                              "build_platform": "linux/arm64"})
    assert built == "sha256:new" and client.build.call_args.kwargs["platform"] == "linux/arm64"  # builder.arch
    assert held.call_args.kwargs["lock"] == "images" and held.call_args.kwargs["shared"] is True

    held.side_effect = hostlock.LockTimeout("h1", "busy")
    client.images.return_value = [{"Id": "sha256:old", "RepoTags": ["acme/hello:v0-staging"], "Labels": OURS}]
    container.prune_images(client, container_props(), used=set())
    assert held.call_args.kwargs["lock"] == "images" and held.call_args.kwargs["shared"] is False
    client.remove_image.assert_not_called()
    held.side_effect = lambda *a, **kw: contextlib.nullcontext()
    # the image list's tags and labels decide: no inspect per image; a last tag whose removal deleted the image
    # leaves nothing to remove by ID
    client.remove_image.return_value = [{"Untagged": "acme/hello:v0-staging"}, {"Deleted": "sha256:old"}]
    client.inspect_image.reset_mock()
    container.prune_images(client, container_props(), used=set())
    assert [c.args for c in client.remove_image.call_args_list] == [("acme/hello:v0-staging",)]
    client.inspect_image.assert_not_called()
    client.remove_image.reset_mock(return_value=True)
    client.remove_image.return_value = [{"Untagged": "acme/hello:v0-staging"}]  # still held by a digest reference
    container.prune_images(client, container_props(), used=set())
    assert [c.args for c in client.remove_image.call_args_list] == [("acme/hello:v0-staging",), ("sha256:old",)]



def _image_hosts(mocker, **images_by_host):
    """One fake daemon per host: this destination's images there (`Id`s) and which of them containers use."""
    clients = {}
    for host, (images, used) in images_by_host.items():
        c = mocker.create_autospec(docker.APIClient, instance=True)
        c.images.return_value = [{"Id": i, "RepoTags": [f"acme/hello:{i[-2:]}-staging"], "Labels": OURS}
                                 for i in images]
        c.containers.return_value = [{"Id": f"c-{i}", "ImageID": i, "Labels": OURS} for i in used]

        def inspect_image(ref, images=images):
            if ref not in images:
                raise docker.errors.NotFound("no such image")
            return {"Id": ref, "Config": {"Labels": OURS}, "RepoTags": []}
        c.inspect_image.side_effect = inspect_image
        clients[host] = c
    mocker.patch("components.hosts.client", side_effect=lambda t: clients[t.host])
    mocker.patch("components.hostlock.held", side_effect=lambda *a, **kw: contextlib.nullcontext(
        mocker.create_autospec(hostlock.HeldLock, instance=True)))
    return clients


def _removed(c) -> set[str]:
    """The images removed, by ID (a removal by tag, `acme/hello:v1-staging`, counts for `sha256:v1`)."""
    refs = {call.args[0] for call in c.remove_image.call_args_list}
    return {r if r.startswith("sha256:") else f"sha256:{r.split(':')[1].split('-')[0]}" for r in refs}


def test_image_removal_visits_the_build_host_and_keeps_there_only_what_deploy_hosts_still_use(mocker):
    """The build host is not a deploy host: its copies of the destination's images were never pruned. A replaced
    version's removal takes there every image of the destination that no deploy host's container (running or
    retained for rollback) uses; a destroy (no container left anywhere) takes them all."""
    clients = _image_hosts(mocker, build=(["sha256:v1", "sha256:v2", "sha256:v3"], []),
                           h1=(["sha256:v2", "sha256:v3"], ["sha256:v2", "sha256:v3"]))
    props = image_props(build_host={**TARGET, "host": "build"}, ship_to=[TARGET])
    providers.ImageProvider().delete("sha256:v1", props)
    assert _removed(clients["build"]) == {"sha256:v1"}
    assert _removed(clients["h1"]) == set()  # rollouts prune a deploy host

    clients = _image_hosts(mocker, build=(["sha256:v2", "sha256:v3"], []), h1=(["sha256:v2", "sha256:v3"], []))
    providers.ImageProvider().delete("sha256:v3", props)
    assert _removed(clients["build"]) == {"sha256:v2", "sha256:v3"}
    assert _removed(clients["h1"]) == {"sha256:v2", "sha256:v3"}


def test_a_host_that_left_the_config_is_cleaned_up_by_the_next_removal(mocker):
    """A host dropped from the config (same version: the image is updated, not replaced) keeps its containers until
    the end of that `up`, so its images cannot go then; the image records the host, and the next version's removal
    of this one (or a destroy) takes this destination's images there."""
    p = providers.ImageProvider()
    h2 = {**TARGET, "host": "h2"}
    clients = _image_hosts(mocker, h1=(["sha256:v1", "sha256:v2"], ["sha256:v2"]), h2=(["sha256:v1"], []),
                           h3=(["sha256:v1"], []))
    olds = {**image_props(ship_to=[TARGET, h2]), "image_id": "sha256:v1", "hosts": ["h1", "h2"]}
    outs = p.update("sha256:v1", olds, image_props(ship_to=[TARGET])).outs
    assert outs["hosts"] == ["h1"] and [h["host"] for h in outs["left_hosts"]] == ["h2"]
    assert not p.diff("sha256:v1", outs, image_props(ship_to=[TARGET])).changes  # recorded, no change after
    again = p.update("sha256:v1", outs, image_props(ship_to=[TARGET, {**TARGET, "host": "h3"}]))
    assert [h["host"] for h in again.outs["left_hosts"]] == ["h2"]  # until a removal visited it

    p.delete("sha256:v1", outs)
    assert _removed(clients["h2"]) == {"sha256:v1"}
    assert _removed(clients["h1"]) == set()

    from components import hosts
    from components.errors import HostUnreachable
    reach = hosts.client.side_effect

    def gone(t):
        if t.host == "h2":
            raise HostUnreachable("h2", "cannot connect")
        return reach(t)
    mocker.patch("components.hosts.client", side_effect=gone)
    p.delete("sha256:v1", outs)  # a host that left is often gone for good: tried, never an error


def test_a_container_being_removed_by_another_step_or_gone_counts_as_removed(client, mocker):
    """The engine's delete of a replaced container and the rollout's retirement may remove the same one at once:
    the daemon answers the second with 409 "already in progress" - done, not a failed deploy."""
    import docker.errors

    def refusal(status, text):
        return docker.errors.APIError(text, response=mocker.Mock(status_code=status), explanation=text)
    for status, text in ((409, "removal of container abc is already in progress"), (404, "No such container: abc")):
        client.remove_container.side_effect = refusal(status, text)
        container.remove_container(client, "abc")
    client.remove_container.side_effect = refusal(409, "You cannot remove a running container abc")
    with pytest.raises(docker.errors.APIError):
        container.remove_container(client, "abc")


def test_a_container_that_never_becomes_healthy_is_told_with_its_last_output_its_secrets_redacted(mocker):
    """It is removed once this is said: what it printed last is what the user has to go on."""
    c = mocker.Mock()
    c.inspect_container.return_value = {"State": {"Running": True, "Status": "running", "ExitCode": 0,
                                                  "RestartCount": 0}}
    c.logs.return_value = b"booting\nconnecting with t0ken-value\nGET /up 404\n"
    mocker.patch.object(container, "health_answer", return_value=(404, "HTTP/1.1 404 Not Found from 172.18.0.5:80/up"))
    clock = iter(range(0, 1000, 5))
    mocker.patch.object(container.time, "monotonic", side_effect=lambda: next(clock))
    mocker.patch.object(container.time, "sleep")
    props = {"name": "shop-web-staging-v3", "role": "web", "destination": "staging", "network": "kamal",
             "proxy": {"deploy_timeout": 8, "healthcheck": {"interval": 1, "path": "/up"}},
             "secret_env": {"TOKEN": "t0ken-value"}}
    with pytest.raises(HealthCheckFailed) as err:
        container.wait_ready(c, SSHTarget("h1"), "c3", props)
    assert str(err.value) == (
        "host h1: container shop-web-staging-v3 (role web) of destination staging did not become healthy within 8s; "
        "it was removed and the previous version keeps serving. Last health check: HTTP/1.1 404 Not Found from "
        "172.18.0.5:80/up. Last output: booting | connecting with [secret] | GET /up 404. If the app answers on "
        "another path or boots slower, set proxy.healthcheck.path (now /up) or proxy.deploy_timeout (now 8s; a Kamal "
        "config's deploy_timeout)")
