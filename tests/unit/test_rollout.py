"""A destination's rollout as one unit, against fake Docker clients (autospecced from docker.APIClient), one per
host: workers are created stopped and started together, a failure anywhere stops every one started again, and
what ran before stops only at the retirement."""

from __future__ import annotations

import contextlib
import threading

import docker

import pytest

from components import hostlock, hosts, providers
from components.errors import Abandoned, HealthCheckFailed
from components.hosts import SSHTarget
from components.providers import container, rollout

OWNER = "shipyard/staging"
LABELS = {"service": "hello", "destination": "staging"}


def _target(host: str) -> dict:
    return {"host": host, "port": 22, "user": "deploy", "keys": [], "known_hosts": None, "host_key_policy": "strict"}


def _listed(cid: str, role: str, version: str, created: int, state: str, image: str = "sha256:i1") -> dict:
    return {"Id": cid, "Names": [f"/hello-{role}-staging-{version}"], "Created": created, "State": state,
            "ImageID": image, "Labels": {**LABELS, "shipyard.stack": OWNER, "role": role, "version": version}}


@pytest.fixture
def daemons(mocker):
    """host -> a fake daemon whose listing is `listing[host]`; inspect answers from it (a started container runs, a
    stopped one has exited)."""
    clients, listing = {}, {}

    def client(t):
        if t.host not in clients:
            c = mocker.create_autospec(docker.APIClient, instance=True)
            items = listing.setdefault(t.host, [])
            c.containers.side_effect = lambda all=False, filters=None, **_: [
                i for i in items if all or i["State"] == "running"]

            def start(cid):
                next(i for i in items if i["Id"] == cid)["State"] = "running"
            c.start.side_effect = start

            def stop(cid, timeout=None):
                next(i for i in items if i["Id"] == cid)["State"] = "exited"
            c.stop.side_effect = stop
            c.inspect_container.side_effect = lambda cid: {"State": {
                "Running": next(i for i in items if i["Id"] == cid)["State"] == "running", "ExitCode": 0,
                "RestartCount": 0, "Status": next(i for i in items if i["Id"] == cid)["State"]}}
            c.images.return_value = []
            clients[t.host] = c
        return clients[t.host]
    mocker.patch("components.hosts.client", side_effect=client)
    mocker.patch("components.hostlock.held", side_effect=lambda *a, **kw: contextlib.nullcontext(
        mocker.create_autospec(hostlock.HeldLock, instance=True)))
    mocker.patch("components.providers.container.time.sleep")
    return clients, listing


def _entry(host: str, role: str, cid: str, proxied: bool = False) -> dict:
    return {"target": _target(host), "role": role, "name": f"hello-{role}-staging-v2", "container_id": cid,
            "image": "sha256:i2", "proxied": proxied, "ports": [], "readiness_delay": 0,
            "stop_timeout": None if proxied else 30, "retain": 5, "takeover": None}


def _rollout(step: str, *entries: dict) -> dict:
    """A rollout step's props as the component writes them: the entries, their container IDs apart."""
    return {"step": step, "owner": OWNER, "destination": "staging", "labels": LABELS,
            "containers": [{k: v for k, v in e.items() if k != "container_id"} for e in entries],
            "ids": {f"{e['role']}@{e['target']['host']}": e["container_id"] for e in entries}, "redact": ["s3cret"]}


def test_a_worker_is_created_stopped_and_its_predecessor_keeps_running(daemons, mocker):
    clients, listing = daemons
    listing["h1"] = [_listed("old", "jobs", "v1", 1, "running")]
    c = hosts.client(SSHTarget.from_dict(_target("h1")))
    c.create_container.return_value = {"Id": "new"}
    c.create_host_config.return_value = {}
    props = {"owner": OWNER, "destination": "staging", "role": "jobs", "target": _target("h1"),
             "name": "hello-jobs-staging-v2", "labels": {**LABELS, "shipyard.stack": OWNER, "role": "jobs",
                                                         "version": "v2"},
             "image": "sha256:i2", "cmd": None, "env": {}, "secret_env": None, "ports": [], "volumes": [],
             "restart": "unless-stopped", "running": True, "readiness_delay": 0, "rollout": True}
    providers.ContainerProvider().create(props)
    c.start.assert_not_called()
    c.stop.assert_not_called()
    c.rename.assert_called_once_with("new", "hello-jobs-staging-v2")


def test_start_starts_every_worker_and_leaves_what_runs_alone(daemons):
    clients, listing = daemons
    listing["h1"] = [_listed("old1", "jobs", "v1", 1, "running"), _listed("new1", "jobs", "v2", 2, "created"),
                     _listed("web2", "web", "v2", 2, "running")]
    listing["h2"] = [_listed("new2", "jobs", "v2", 2, "running")]  # started by an earlier attempt
    providers.RolloutProvider().create(_rollout("start", _entry("h1", "jobs", "new1"), _entry("h2", "jobs", "new2"),
                                                _entry("h1", "web", "web2", proxied=True)))
    clients["h1"].start.assert_called_once_with("new1")
    clients["h1"].stop.assert_not_called()  # the predecessor runs until the retirement
    clients["h2"].start.assert_not_called()


def _h2s_worker_crashes(daemons, step: str, state: str) -> str:
    """Two hosts, each with a worker of v1 running and one of v2 in `state`; h2's exits at once when started (its
    output names a secret). Runs the rollout's `step`, which fails; returns its message."""
    clients, listing = daemons
    listing["h1"] = [_listed("old1", "jobs", "v1", 1, "running"), _listed("new1", "jobs", "v2", 2, state)]
    listing["h2"] = [_listed("old2", "jobs", "v1", 1, "running"), _listed("bad2", "jobs", "v2", 2, state)]
    h2 = hosts.client(SSHTarget.from_dict(_target("h2")))
    h2.inspect_container.side_effect = lambda cid: {"State": {"Running": False, "ExitCode": 1, "RestartCount": 0,
                                                              "Status": "exited"}}
    h2.logs.return_value = b"cannot start: s3cret\n"
    with pytest.raises(HealthCheckFailed) as failure:
        providers.RolloutProvider().create(_rollout(step, _entry("h1", "jobs", "new1"), _entry("h2", "jobs", "bad2")))
    return str(failure.value)


def test_a_worker_that_crashes_stops_every_worker_started_and_changes_no_role(daemons):
    clients, listing = daemons
    message = _h2s_worker_crashes(daemons, "start", "created")
    assert message.startswith("host h2: container hello-jobs-staging-v2 (role jobs) of destination staging exited "
                              "with code 1"), message
    assert "it was stopped (kept for the next `up`)" in message and "[secret]" in message and "s3cret" not in message
    assert message.endswith("The workers of this rollout started already were stopped again; no role changed")
    clients["h1"].stop.assert_called_once_with("new1", timeout=30)  # started, then stopped again
    clients["h2"].stop.assert_called_once_with("bad2", timeout=30)
    for c in clients.values():
        c.remove_container.assert_not_called()  # the state knows them: the next `up` tries them again
    assert {i["Id"] for i in listing["h1"] + listing["h2"] if i["State"] == "running"} >= {"old1", "old2"}


def test_a_failed_start_stops_the_new_unrouted_web_container_and_the_next_start_starts_it(daemons, mocker):
    clients, listing = daemons
    listing["h1"] = [_listed("web1", "web", "v1", 1, "running"), _listed("web2", "web", "v2", 2, "running"),
                     _listed("old1", "jobs", "v1", 1, "running"), _listed("bad1", "jobs", "v2", 2, "created")]
    routes = {"hello-web-staging": {"target": "hello-web-staging-v1:80"}}
    mocker.patch.object(rollout, "proxy_routes", return_value=routes)
    h1 = hosts.client(SSHTarget.from_dict(_target("h1")))
    crashed = {"Running": False, "ExitCode": 1, "RestartCount": 0, "Status": "exited"}
    h1.inspect_container.side_effect = lambda cid: {"State": crashed}
    h1.logs.return_value = b"cannot start\n"
    step = _rollout("start", _entry("h1", "jobs", "bad1"), _entry("h1", "web", "web2", proxied=True))
    with pytest.raises(HealthCheckFailed):
        providers.RolloutProvider().create(step)
    assert {i["Id"]: i["State"] for i in listing["h1"]} == {"web1": "running", "web2": "exited",
                                                          "old1": "running", "bad1": "exited"}
    # the next `up` tries again: its start starts the web container before its route switches
    h1.start.reset_mock()
    h1.inspect_container.side_effect = lambda cid: {"State": {"Running": True, "ExitCode": 0, "RestartCount": 0,
                                                              "Status": "running"}}
    providers.RolloutProvider().update("staging-start", step, step)
    assert {call.args[0] for call in h1.start.call_args_list} == {"bad1", "web2"}


def test_retire_stops_workers_predecessors_with_their_drain_time_and_leaves_routed_ones_to_the_route(daemons):
    clients, listing = daemons
    listing["h1"] = [_listed("old-jobs", "jobs", "v1", 1, "running"), _listed("new-jobs", "jobs", "v2", 2, "running"),
                     _listed("old-web", "web", "v1", 1, "running"), _listed("new-web", "web", "v2", 2, "running"),
                     *[_listed(f"jobs-v0{i}", "jobs", f"v0{i}", 0, "exited") for i in range(5)]]
    providers.RolloutProvider().create(_rollout("retire", _entry("h1", "jobs", "new-jobs"),
                                                _entry("h1", "web", "new-web", proxied=True)))
    c = clients["h1"]
    c.stop.assert_called_once_with("old-jobs", timeout=30)
    removed = {call.args[0] for call in c.remove_container.call_args_list}
    assert len(removed) == 1 and removed < {f"jobs-v0{i}" for i in range(5)}  # 5 stopped versions kept
    assert "old-web" not in removed


def test_retire_waits_boot_wait_after_its_batch_before_the_next_begins(daemons, mocker):
    clients, listing = daemons
    listing["h1"] = [_listed("new-jobs", "jobs", "v2", 2, "running")]
    sleep = mocker.patch("components.providers.rollout.time.sleep")
    providers.RolloutProvider().create({**_rollout("retire", _entry("h1", "jobs", "new-jobs")), "wait": 2})
    sleep.assert_called_once_with(2.0)


def test_a_rollout_changes_with_its_containers_not_with_how_hosts_are_reached():
    olds = _rollout("start", _entry("h1", "jobs", "a"))
    moved_key = {**_entry("h1", "jobs", "a"), "target": {**_target("h1"), "keys": ["/other/key"]}}
    assert not providers.RolloutProvider().diff("x", olds, _rollout("start", moved_key)).changes
    new = providers.RolloutProvider().diff("x", olds, _rollout("start", _entry("h1", "jobs", "b")))
    assert new.changes and not new.replaces


def test_a_rollout_recorded_with_its_ids_in_the_entries_is_the_same_rollout():
    """States written before the IDs moved apart (`ids`) carry them in the entries: no change, and each entry has
    its ID either way."""
    earlier = {**_rollout("retire"), "containers": [_entry("h1", "jobs", "a"), _entry("h1", "web", "b", True)]}
    earlier.pop("ids")
    now = _rollout("retire", _entry("h1", "jobs", "a"), _entry("h1", "web", "b", True))
    assert not providers.RolloutProvider().diff("x", earlier, now).changes
    assert rollout.entries(earlier) == rollout.entries(now) == [_entry("h1", "jobs", "a"),
                                                                 _entry("h1", "web", "b", True)]


def test_a_destroy_connects_to_every_host_of_the_rollout_as_it_begins(mocker):
    """The rollout's delete is the first of a destroy: it starts each host's connections (once per host, however
    many roles run there), and touches nothing on the hosts."""
    ahead = mocker.patch("components.hosts.open_ahead")
    client = mocker.patch("components.hosts.client")
    providers.RolloutProvider().delete("x", _rollout("retire", _entry("h1", "jobs", "a"),
                                                     _entry("h1", "web", "b", True), _entry("h2", "web", "c", True)))
    assert ahead.call_args.args[0] == [SSHTarget.from_dict(_target("h1")), SSHTarget.from_dict(_target("h2"))]
    client.assert_not_called()


def test_a_replaced_worker_stays_running_while_its_successor_was_never_started(daemons):
    """The engine's pending delete of the previous worker after a rollout that failed in another role: the new one
    was only created, so the old one still does the work."""
    clients, listing = daemons
    listing["h1"] = [_listed("new", "jobs", "v2", 2, "created"), _listed("old", "jobs", "v1", 1, "running")]
    props = {"owner": OWNER, "destination": "staging", "role": "jobs", "target": _target("h1"),
             "name": "hello-jobs-staging-v1", "labels": {**LABELS, "shipyard.stack": OWNER, "role": "jobs"},
             "image": "sha256:i1", "retain": 5}
    providers.ContainerProvider().delete("old", props)
    clients["h1"].stop.assert_not_called()
    clients["h1"].remove_container.assert_not_called()
    assert container.standby({"rollout": True, "proxy": None}) and not container.standby({"rollout": True,
                                                                                         "proxy": {"app_port": 80}})


def test_a_refresh_reads_a_worker_its_rollout_never_started_as_no_drift(daemons):
    """After a rollout that failed in another role, the new worker exists but was never started: a refresh must not
    record that as a stopped container, or the next `up` would start it outside its rollout."""
    clients, listing = daemons
    listing["h1"] = [_listed("new", "jobs", "v2", 2, "created")]
    c = hosts.client(SSHTarget.from_dict(_target("h1")))
    c.inspect_container.side_effect = lambda cid: {"State": {"Running": False, "Status": "created"},
                                                   "Name": "/hello-jobs-staging-v2", "Image": "sha256:i2",
                                                   "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}}}
    props = {"target": _target("h1"), "name": "hello-jobs-staging-v2", "image": "sha256:i2", "running": True,
             "restart": "unless-stopped", "rollout": True, "proxy": None}
    assert providers.ContainerProvider().read("new", props).outs["running"] is True
    c.inspect_container.side_effect = lambda cid: {"State": {"Running": False, "Status": "exited"},
                                                   "Name": "/hello-jobs-staging-v2", "Image": "sha256:i2",
                                                   "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}}}
    assert providers.ContainerProvider().read("new", props).outs["running"] is False  # stopped since: drift


def test_a_failed_run_stops_the_proxied_containers_made_ready_for_a_start_that_never_comes(daemons, mocker):
    """Another role's create fails before the rollout's start: the engine runs nothing after it, so the new web
    containers made ready in this run stop (kept), also one made ready after the failure; one its start took
    already is that step's to handle, and what ran before runs on."""
    clients, listing = daemons
    listing["h1"] = [_listed("web1", "web", "v1", 1, "running"), _listed("web2", "web", "v2", 2, "running")]
    listing["h2"] = [_listed("web3", "web", "v2", 2, "running"), _listed("web4", "web", "v2", 3, "running")]
    mocker.patch.object(rollout, "proxy_routes", return_value={"hello-web-staging": {
        "target": "hello-web-staging-v1:80"}})

    def props(host: str) -> dict:
        return {"owner": OWNER, "destination": "staging", "labels": {**LABELS, "role": "web"}, "role": "web",
                "target": _target(host), "name": "hello-web-staging-v2", "stop_timeout": None}
    rollout.made_ready(props("h1"), "web2")
    rollout.made_ready(props("h2"), "web4")
    rollout.RUN.started(["web4"])  # its start runs: that step stops it if it fails
    rollout.abandon()
    assert {i["Id"]: i["State"] for i in listing["h1"] + listing["h2"]} == {
        "web1": "running", "web2": "exited", "web3": "running", "web4": "running"}
    rollout.made_ready(props("h2"), "web3")  # a create that finishes after the failure: no start comes for it
    assert next(i for i in listing["h2"] if i["Id"] == "web3")["State"] == "exited"


def test_a_replaced_accessory_is_put_back_only_by_a_run_that_ended_before_anything_relied_on_it(mocker):
    """A run that ends before the engine deletes the accessory it replaced puts that one back - at once when the run
    had failed while it took over - unless an app role's route switched in the run (its new version may need the new
    accessory) or the accessory's own route did (it serves the new one); another accessory's route is neither."""
    back = mocker.patch.object(rollout, "put_accessory_back")
    db = {"role": "accessory.db", "name": "hello-staging-db"}
    route = {"destination": "staging", "service": "hello-web-staging", "container_id": "web2"}

    def run() -> rollout._Run:
        mocker.patch.object(rollout, "RUN", rollout._Run())
        back.reset_mock()
        return rollout.RUN

    run()
    rollout.accessory_switched(db, "new", ["old"])
    rollout.replaced_gone("old")  # the engine's delete: the run got to its end
    rollout.abandon(rollout.INTERRUPTED)
    back.assert_not_called()

    run()
    rollout.accessory_switched(db, "new", ["old"])
    with rollout.switching({**route, "role": "accessory.cache", "service": "hello-cache-staging"}):
        pass
    rollout.abandon()
    back.assert_called_once_with(db, "new", ["old"])

    run()
    rollout.accessory_switched(db, "new", ["old"])
    with rollout.switching({**route, "role": "accessory.db", "service": "hello-db-staging", "container_id": "new"}):
        pass
    rollout.abandon()
    back.assert_not_called()

    run()
    rollout.accessory_switched(db, "new", ["old"])
    with rollout.switching({**route, "role": "web"}):
        pass
    rollout.abandon()
    back.assert_not_called()

    run()
    rollout.abandon()
    rollout.accessory_switched(db, "new", ["old"])  # a create that finishes after the failure
    back.assert_called_once_with(db, "new", ["old"])


def _started_on_two_hosts(listing: dict) -> list[dict]:
    """h1 and h2 each run a worker of v1 and have one of v2, which a rollout's `start` starts; returns the rollout's
    entries."""
    for host in ("h1", "h2"):
        listing[host] = [_listed(f"old-{host}", "jobs", "v1", 1, "running"),
                         _listed(f"new-{host}", "jobs", "v2", 2, "created")]
    workers = [_entry("h1", "jobs", "new-h1"), _entry("h2", "jobs", "new-h2")]
    providers.RolloutProvider().create(_rollout("start", *workers))
    return workers


def test_a_run_that_fails_after_start_stops_its_workers_again_and_the_next_retire_starts_them_first(daemons,
                                                                                                        mocker):
    """A route's switch fails after `start` (or any step after it): no `retire` comes, so the workers `start` started
    stop again and their predecessors do the work, as before the deploy. The next `up` records no new `start`: its
    `retire` starts them, each ready, before it stops the predecessors."""
    clients, listing = daemons
    workers = _started_on_two_hosts(listing)
    assert {i["Id"]: i["State"] for h in ("h1", "h2") for i in listing[h]} == {
        "old-h1": "running", "new-h1": "running", "old-h2": "running", "new-h2": "running"}

    rollout.abandon()  # the route's switch failed
    assert {i["Id"]: i["State"] for h in ("h1", "h2") for i in listing[h]} == {
        "old-h1": "running", "new-h1": "exited", "old-h2": "running", "new-h2": "exited"}

    mocker.patch.object(rollout, "RUN", rollout._Run())  # the next `up`: its own plugin process
    for c in clients.values():
        c.start.reset_mock()
        c.stop.reset_mock()
    providers.RolloutProvider().create(_rollout("retire", *workers))
    assert {i["Id"]: i["State"] for h in ("h1", "h2") for i in listing[h]} == {
        "old-h1": "exited", "new-h1": "running", "old-h2": "exited", "new-h2": "running"}
    for host, c in clients.items():
        c.start.assert_called_once_with(f"new-{host}")
        c.stop.assert_called_once_with(f"old-{host}", timeout=30)


def test_a_start_or_retire_after_the_run_failed_undoes_itself_and_a_retired_batch_stays(daemons, mocker):
    """Another host's operation fails while `start` runs: its workers (and the proxied containers it started) stop
    again as soon as they have started, and the step fails, so the next `up` runs it again. A `retire` sent as the
    failure's put-back runs retires nothing. A batch whose `retire` began before the failure is that step's: the
    failure leaves it."""
    clients, listing = daemons
    listing["h1"] = [_listed("old1", "jobs", "v1", 1, "running"), _listed("new1", "jobs", "v2", 2, "created"),
                     _listed("web1", "web", "v1", 1, "running"), _listed("web2", "web", "v2", 2, "exited")]
    listing["h2"] = [_listed("old2", "jobs", "v1", 1, "exited"), _listed("new2", "jobs", "v2", 2, "running")]
    mocker.patch.object(rollout, "proxy_routes", return_value={"hello-web-staging": {
        "target": "hello-web-staging-v1:80"}})
    providers.RolloutProvider().create(_rollout("retire", _entry("h2", "jobs", "new2")))  # batch 1, done
    rollout.abandon()
    batch2 = (_entry("h1", "jobs", "new1"), _entry("h1", "web", "web2", proxied=True))
    with pytest.raises(Abandoned, match="^destination staging: another operation of this deploy failed while its "
                                        "rollout started the new workers: they were stopped again; no role changed"):
        providers.RolloutProvider().create(_rollout("start", *batch2))  # batch 2, in flight
    assert {i["Id"]: i["State"] for i in listing["h1"]} == {"old1": "running", "new1": "exited",
                                                          "web1": "running", "web2": "exited"}
    with pytest.raises(Abandoned, match="nothing was retired; the next `up` finishes the rollout"):
        providers.RolloutProvider().create(_rollout("retire", *batch2))
    assert next(i for i in listing["h1"] if i["Id"] == "old1")["State"] == "running"
    clients["h2"].start.assert_not_called()
    clients["h2"].stop.assert_not_called()


def test_an_interrupted_run_undoes_the_start_in_flight_and_says_it_was_interrupted(daemons, mocker):
    """One Ctrl-C while `start` waits for the new worker: the engine's `Cancel` comes first, the step undoes itself
    when its wait ends, and its one line says the deploy was interrupted - a failure elsewhere after that does not
    change what it says."""
    clients, listing = daemons
    listing["h1"] = [_listed("old1", "jobs", "v1", 1, "running"), _listed("new1", "jobs", "v2", 2, "created")]
    rollout.abandon(rollout.INTERRUPTED)
    rollout.abandon()
    with pytest.raises(Abandoned, match="^destination staging: the deploy was interrupted while its rollout started "
                                        "the new workers: they were stopped again; no role changed$"):
        providers.RolloutProvider().create(_rollout("start", _entry("h1", "jobs", "new1")))
    assert {i["Id"]: i["State"] for i in listing["h1"]} == {"old1": "running", "new1": "exited"}
    with pytest.raises(Abandoned, match="^destination staging: the deploy was interrupted before its rollout retired"):
        providers.RolloutProvider().create(_rollout("retire", _entry("h1", "jobs", "new1")))


def test_a_run_ended_after_every_route_of_a_batch_switched_leaves_its_new_workers_running(daemons, mocker):
    """Ctrl-C (or a failure elsewhere) after the routes of a batch have all switched: the new version serves, so its
    workers run on - not put back to a version no route serves - and the next `up` retires what ran before. A batch
    whose route has not switched goes back."""
    clients, listing = daemons
    mocker.patch.object(rollout, "proxy_routes", return_value={})
    for host in ("h1", "h2"):
        listing[host] = [_listed(f"old-{host}", "jobs", "v1", 1, "running"),
                         _listed(f"new-{host}", "jobs", "v2", 2, "created"),
                         _listed(f"web-{host}", "web", "v2", 2, "running")]
    for host in ("h1", "h2"):  # two batches (`boot.limit: 1`)
        providers.RolloutProvider().create(_rollout("start", _entry(host, "jobs", f"new-{host}"),
                                                    _entry(host, "web", f"web-{host}", proxied=True)))
    with rollout.switching(_route("web-h1")):
        pass
    rollout.abandon(rollout.INTERRUPTED)
    assert {i["Id"]: i["State"] for h in ("h1", "h2") for i in listing[h] if i["Id"] != f"web-{h}"} == {
        "old-h1": "running", "new-h1": "running", "old-h2": "running", "new-h2": "exited"}


def _route(cid: str) -> dict:
    return {"destination": "staging", "service": "hello-web-staging", "container_id": cid}


def test_a_run_ends_only_once_the_route_switch_under_way_is_done_and_no_switch_begins_after(daemons, mocker):
    """Ctrl-C while a batch's route is switching: the run waits for the switch, which completes, so the batch's
    workers run on with the version the route now serves (not put back under it); a route of the batch whose switch
    begins after that is refused and serves what it served before."""
    clients, listing = daemons
    mocker.patch.object(rollout, "proxy_routes", return_value={})
    listing["h1"] = [_listed("old1", "jobs", "v1", 1, "running"), _listed("new1", "jobs", "v2", 2, "created"),
                     _listed("web1", "web", "v2", 2, "running")]
    providers.RolloutProvider().create(_rollout("start", _entry("h1", "jobs", "new1"),
                                                _entry("h1", "web", "web1", proxied=True)))
    entered, release = threading.Event(), threading.Event()

    def switch():
        with rollout.switching(_route("web1")):
            entered.set()
            release.wait(5)
    switcher = threading.Thread(target=switch)
    switcher.start()
    entered.wait(5)
    cancel = threading.Thread(target=rollout.abandon, args=(rollout.INTERRUPTED,))
    cancel.start()
    cancel.join(0.2)
    assert cancel.is_alive()  # waits for the switch under way
    with pytest.raises(Abandoned, match="^destination staging: the deploy was interrupted before route "
                                        "hello-web-staging switched: it serves what it served before$"):
        with rollout.switching(_route("web2")):
            pass
    release.set()
    switcher.join(5)
    cancel.join(5)
    assert {i["Id"]: i["State"] for i in listing["h1"]} == {"old1": "running", "new1": "running", "web1": "running"}


def test_a_failed_retire_puts_back_every_worker_of_the_run_so_no_predecessor_stops_anywhere(daemons):
    """`start` started both hosts' new workers; h2's exited since, and the `retire` starting it again finds it does
    not become ready: h1's new worker, started by that `start`, stops again too - on no host do two versions run."""
    clients, listing = daemons
    workers = _started_on_two_hosts(listing)
    next(i for i in listing["h2"] if i["Id"] == "new-h2")["State"] = "exited"
    clients["h2"].inspect_container.side_effect = lambda cid: {"State": {
        "Running": False, "ExitCode": 1, "RestartCount": 0, "Status": "exited"}}
    clients["h2"].logs.return_value = b"cannot start\n"
    with pytest.raises(HealthCheckFailed, match="The workers of this rollout started already were stopped again; "
                                                "their predecessors run on$"):
        providers.RolloutProvider().create(_rollout("retire", *workers))
    assert {i["Id"]: i["State"] for h in ("h1", "h2") for i in listing[h]} == {
        "old-h1": "running", "new-h1": "exited", "old-h2": "running", "new-h2": "exited"}


def test_a_worker_that_does_not_come_back_at_retire_stops_again_and_no_predecessor_stops(daemons):
    """The workers a failed run stopped again after its `start`: the next `retire` starts them first, and when one
    does not become ready, stops the others again before any predecessor stops."""
    clients, listing = daemons
    message = _h2s_worker_crashes(daemons, "retire", "exited")
    assert message.endswith("The workers of this rollout started already were stopped again; their predecessors run "
                            "on"), message
    clients["h1"].stop.assert_called_once_with("new1", timeout=30)
    clients["h2"].stop.assert_called_once_with("bad2", timeout=30)
    assert {i["Id"] for i in listing["h1"] + listing["h2"] if i["State"] == "running"} == {"old1", "old2"}
