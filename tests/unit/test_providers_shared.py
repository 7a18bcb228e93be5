"""The proxy, route, network and volume providers against a fake Docker client (autospecced from docker.APIClient)
and a fake host lock: what they do to a host, given what the host reports."""

from __future__ import annotations

import contextlib

import docker
import pytest

from components import hostlock, hosts, providers
from components.errors import DockerError, HealthCheckFailed, OwnershipConflict

OWNER = "shipyard/staging"
TARGET = {"host": "h1", "port": 22, "user": "root", "keys": [], "known_hosts": None, "host_key_policy": "strict"}
LABELS = {"service": "shop", "destination": "staging", "shipyard.stack": OWNER}
PROXY = {"hosts": ["shop.test"], "path_prefix": None, "app_port": 80, "ssl": False, "image": "kp:1",
         "healthcheck": {"path": "/up", "interval": 1, "timeout": 5}, "deploy_timeout": 30, "drain_timeout": 30,
         "response_timeout": 30}
E = "\x1b[{}m{}\x1b[0m"


def listing(*routes: tuple[str, str]) -> str:
    rows = ["".join(E.format("3;94", c) + "  " for c in ("Service", "Host", "Path", "Target", "State", "TLS"))]
    rows += ["".join(E.format("0", c) + "  " for c in (name, "shop.test", "", target, "running", "no"))
             for name, target in routes]
    return "\n".join(rows)


@pytest.fixture
def client(mocker):
    c = mocker.create_autospec(docker.APIClient, instance=True)
    mocker.patch("components.hosts.client", return_value=c)
    c.containers.return_value = []
    c.networks.return_value = []
    c.create_container.return_value = {"Id": "proxy-new"}
    c.inspect_container.return_value = {"Config": {"Image": "kp:1", "Labels": {}}, "Name": "/x"}
    mocker.patch("components.hostlock.held", side_effect=lambda *a, **kw: contextlib.nullcontext(
        mocker.create_autospec(hostlock.HeldLock, instance=True)))
    mocker.patch("components.providers.proxy.time.sleep")
    return c


@pytest.fixture
def kamal_proxy(mocker):
    """`kamal-proxy <args>` inside the proxy container: answers from a list of routes."""
    state = {"routes": [], "calls": [], "timeouts": {}}

    def exec_in(_t, _container, argv, timeout=600):
        state["calls"].append(argv[1:])
        state["timeouts"][argv[1]] = timeout
        if argv[1] == "list":
            return 0, listing(*state["routes"])
        return 0, "ok"
    mocker.patch("components.hosts.exec_in", side_effect=exec_in)
    return state


def proxy_container(image: str, state: str = "running") -> dict:
    return {"Id": "proxy-old", "Names": ["/kamal-proxy"], "Image": image, "State": state}


def test_the_proxy_is_adopted_whatever_its_image_and_a_stopped_one_started(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:other", "exited")]
    client.networks.return_value = [{"Name": "kamal"}]
    out = providers.ProxyProvider().create({"target": TARGET, "image": "kp:1"}).outs
    client.create_container.assert_not_called()
    client.start.assert_called_once_with("proxy-old")
    assert out["container_id"] == "proxy-old"


def test_a_missing_proxy_is_started_with_kamals_names(client, kamal_proxy):
    providers.ProxyProvider().create({"target": TARGET, "image": "kp:1"})
    client.create_network.assert_called_once_with("kamal", driver="bridge")
    kwargs = client.create_container.call_args.kwargs
    assert kwargs["image"] == "kp:1" and kwargs["name"] == "kamal-proxy"
    assert client.create_host_config.call_args.kwargs["binds"] == [
        "kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy:rw"]


def no_such_image(client, pull_stream):
    """The host has no image until a pull succeeds."""
    def inspect(_ref):
        if not client.pull.called or any("error" in chunk for chunk in pull_stream):
            raise docker.errors.ImageNotFound("no such image")
        return {"Id": "sha256:kp"}
    client.inspect_image.side_effect = inspect
    client.pull.side_effect = lambda *a, **kw: iter(pull_stream)


def test_a_new_server_pulls_the_proxy_image_with_no_login_before_starting_the_proxy(client, kamal_proxy):
    no_such_image(client, [{"status": "Pulling from basecamp/kamal-proxy"}])
    client.create_container.side_effect = lambda **kw: (client.pull.assert_called_once(), {"Id": "proxy-new"})[1]
    providers.ProxyProvider().create({"target": TARGET, "image": "kp:1"})
    client.pull.assert_called_once_with("kp:1", stream=True, decode=True, auth_config={})  # never the operator's
    client.create_container.assert_called_once()


def test_an_upgrade_whose_image_cannot_be_pulled_leaves_the_running_proxy_alone(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:1")]
    no_such_image(client, [{"error": "manifest unknown", "errorDetail": {"message": "manifest unknown"}}])
    with pytest.raises(DockerError, match="h1: pulling kp:2 for kamal-proxy failed: manifest unknown"):
        providers.ProxyProvider().update("id", {"target": TARGET, "image": "kp:1"}, {"target": TARGET, "image": "kp:2"})
    client.stop.assert_not_called()
    client.remove_container.assert_not_called()


def test_the_proxy_is_upgraded_only_when_this_stacks_image_changed(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:2")]  # another destination upgraded it
    client.networks.return_value = [{"Name": "kamal"}]
    p = providers.ProxyProvider()
    assert not p.diff("id", {"target": TARGET, "image": "kp:1", "running_image": "kp:2"},
                      {"target": TARGET, "image": "kp:1"}).changes  # no flip back to kp:1
    p.update("id", {"target": TARGET, "image": "kp:1"}, {"target": TARGET, "image": "kp:3"})
    client.stop.assert_called_once()
    assert client.create_container.call_args.kwargs["image"] == "kp:3"


def test_the_proxy_goes_only_with_its_last_route(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-production", "abc:80")]
    providers.ProxyProvider().delete("id", {"target": TARGET, "image": "kp:1"})
    client.remove_container.assert_not_called()
    client.remove_volume.assert_not_called()
    kamal_proxy["routes"] = []
    providers.ProxyProvider().delete("id", {"target": TARGET, "image": "kp:1"})
    client.remove_container.assert_called_once_with("proxy-old")
    client.remove_volume.assert_called_once_with("kamal-proxy-config")  # its config, of no route now
    client.containers.return_value = []  # already gone: nothing to do, no error
    providers.ProxyProvider().delete("id", {"target": TARGET, "image": "kp:1"})


def route_props(**over):
    return {"owner": OWNER, "destination": "staging", "target": TARGET, "labels": LABELS,
            "service": "shop-web-staging", "upstream": "shop-web-staging-v2:80", "container_id": "0123456789abcdef",
            "proxy": PROXY, **over}


def test_a_route_targets_the_container_by_id(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:1")]
    providers.RouteProvider().create(route_props())
    deploy = [c for c in kamal_proxy["calls"] if c[0] == "deploy"]
    assert deploy and deploy[0][:4] == ["deploy", "shop-web-staging", "--target", "0123456789ab:80"]


def test_a_route_waits_for_kamal_proxy_as_long_as_its_deploy_and_drain_timeouts_allow(client, kamal_proxy):
    """`kamal-proxy deploy` says nothing while it health-checks the new container (up to deploy_timeout, which may
    be an hour) and drains the old one: the channel it runs on waits that long, not a fixed 10 minutes."""
    client.containers.return_value = [proxy_container("kp:1")]
    providers.RouteProvider().create(route_props(proxy={**PROXY, "deploy_timeout": 3600, "drain_timeout": 120}))
    assert kamal_proxy["timeouts"]["deploy"] >= 3600 + 120
    assert kamal_proxy["timeouts"]["deploy"] <= 3600 + 120 + 60  # still a deadline


def test_a_route_whose_host_lock_was_lost_switches_nothing(client, kamal_proxy, mocker):
    """The lock's own connection died (or someone released it) while the route was being looked at: the switch
    and everything after it is not done, and the error says so."""
    from components.errors import LockLost
    client.containers.return_value = [proxy_container("kp:1")]
    lost = mocker.create_autospec(hostlock.HeldLock, instance=True)
    lost.check.side_effect = LockLost("h1", "the host lock taken for routing was lost")
    hostlock.held.side_effect = lambda *a, **kw: contextlib.nullcontext(lost)
    with pytest.raises(LockLost, match="host h1: the host lock .* was lost"):
        providers.RouteProvider().create(route_props())
    assert [c for c in kamal_proxy["calls"] if c[0] == "deploy"] == []
    client.stop.assert_not_called()


def test_after_the_switch_the_previous_container_stops_and_a_failed_switch_stops_nothing(client, kamal_proxy,
                                                                                          mocker):
    """Kamal's order: the old version stops as soon as its route has switched and drained, not at the end of the
    whole `up`; if kamal-proxy refuses the new one, the old one keeps serving."""
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "0ld000000001:80")]
    client.inspect_container.return_value = {"Id": "0ld000000001" + "0" * 52, "Name": "/shop-web-staging-v1",
                                             "State": {"Running": True}, "Config": {"Labels": {**LABELS,
                                                                                               "role": "web"}}}
    providers.RouteProvider().update("id", route_props(), route_props())
    client.stop.assert_called_once_with("0ld000000001" + "0" * 52, timeout=providers.STOP_TIMEOUT_S)

    client.stop.reset_mock()
    hosts.exec_in.side_effect = lambda _t, _c, argv, timeout=600: (0, listing(*kamal_proxy["routes"])) \
        if argv[1] == "list" else (1, "target failed to become healthy")
    old = client.inspect_container.return_value
    client.inspect_container.side_effect = lambda cid: old if cid.startswith("0ld") else {
        "NetworkSettings": {"Networks": {"kamal": {"IPAddress": "172.18.0.5"}}}}
    probe = mocker.patch("components.hosts.http_probe", return_value=(
        404, "HTTP/1.1 404 Not Found from 172.18.0.5:80/up"))
    with pytest.raises(HealthCheckFailed) as failed:
        providers.RouteProvider().update("id", route_props(role="web"), route_props(role="web"))
    assert str(failed.value) == (
        "host h1: kamal-proxy did not switch shop-web-staging (role web of destination staging) to "
        "shop-web-staging-v2:80: target failed to become healthy; last health check: HTTP/1.1 404 Not Found from "
        "172.18.0.5:80/up; the previous version keeps serving")  # what the new container answers, as a create says
    assert probe.call_args.args[1:] == ("172.18.0.5", 80, PROXY["healthcheck"]["path"],
                                        float(PROXY["healthcheck"]["timeout"]))
    client.stop.assert_not_called()


def test_a_route_serving_someone_elses_container_is_refused(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "kamalapp123:80")]
    client.inspect_container.return_value = {"Name": "/shop-web-staging-abc", "Config": {"Labels": {
        "service": "shop", "role": "web", "destination": "staging"}}}  # a Kamal app's: no shipyard.stack
    with pytest.raises(OwnershipConflict, match="route shop-web-staging serves container shop-web-staging-abc of "
                                                "destination staging of another deployer; nothing was changed"):
        providers.RouteProvider().create(route_props())
    assert not [c for c in kamal_proxy["calls"] if c[0] == "deploy"]
    providers.RouteProvider().delete("id", route_props())  # and never removed by us
    assert not [c for c in kamal_proxy["calls"] if c[0] == "remove"]


def test_a_route_brings_back_a_proxy_that_went_away(client, kamal_proxy, mocker):
    ensure = mocker.patch("components.providers.proxy.ensure_proxy")
    answers = iter([None, {}])  # the proxy does not answer, then (brought back) it has no routes yet
    mocker.patch("components.providers.proxy.proxy_routes", side_effect=lambda t: next(answers))
    client.containers.return_value = [proxy_container("kp:1")]
    providers.RouteProvider().create(route_props())
    ensure.assert_called_once()
    assert ensure.call_args.args[0]["image"] == "kp:1"


def test_read_reports_the_container_the_route_serves(client, kamal_proxy):
    """`pulumi refresh` shows a route pointed elsewhere since (by hand, or Kamal's rollback); a route that serves
    what was recorded reads back exactly as recorded."""
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "0123456789ab:80")]
    p = providers.RouteProvider()
    assert p.read("id", route_props()).outs == route_props()
    kamal_proxy["routes"] = [("shop-web-staging", "fedcba987654:80")]
    client.inspect_container.return_value = {"Id": "fedcba987654" + "0" * 52, "Name": "/by-hand",
                                             "Config": {"Labels": {}}}
    out = p.read("id", route_props()).outs
    assert out["container_id"] == "fedcba987654" + "0" * 52 and out["upstream"] == "by-hand:80"
    assert p.diff("id", out, route_props()).changes  # so the next `up` switches it back
    kamal_proxy["routes"] = []
    assert p.read("id", route_props()).id == ""  # removed by hand: gone


def test_read_of_a_route_recorded_by_an_earlier_release(client, kamal_proxy):
    old = {k: v for k, v in route_props().items() if k != "container_id"}
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "shop-web-staging-v2:80")]  # routed by name
    p = providers.RouteProvider()
    assert p.read("id", old).outs == old
    kamal_proxy["routes"] = [("shop-web-staging", "fedcba987654:80")]
    client.inspect_container.return_value = {"Id": "fedcba987654" + "0" * 52, "Name": "/by-hand",
                                             "Config": {"Labels": {}}}
    out = p.read("id", old).outs
    assert "container_id" not in out and out["upstream"] == "by-hand:80"
    assert p.diff("id", out, route_props()).changes


def test_an_update_switches_back_a_route_pointed_by_hand_but_never_takes_another_stacks(client, kamal_proxy):
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "fedcba987654:80")]
    client.inspect_container.return_value = {"Id": "fedcba987654" + "0" * 52, "Name": "/by-hand",
                                             "State": {"Running": True}, "Config": {"Labels": {}}}
    providers.RouteProvider().update("id", route_props(), route_props())
    assert [c[:4] for c in kamal_proxy["calls"] if c[0] == "deploy"] == [
        ["deploy", "shop-web-staging", "--target", "0123456789ab:80"]]
    client.stop.assert_not_called()  # not ours: it keeps running
    kamal_proxy["calls"].clear()
    client.inspect_container.return_value = {"Id": "fedcba987654" + "0" * 52, "Name": "/shop-web-staging-v9",
                                             "State": {"Running": True}, "Config": {"Labels": {
                                                 "shipyard.stack": "other/staging", "destination": "staging",
                                                 "service": "shop"}}}
    with pytest.raises(OwnershipConflict, match="serves container shop-web-staging-v9 of stack other/staging"):
        providers.RouteProvider().update("id", route_props(), route_props())
    assert not [c for c in kamal_proxy["calls"] if c[0] == "deploy"]


def test_a_renamed_route_takes_its_host_names_over_from_this_stacks_old_route(client, kamal_proxy):
    """kamal-proxy gives a host name to one route: the old one switches to the new container, then goes, then the
    new one is deployed. A route of another stack holding them is refused before anything changes."""
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web-staging", "0ld000000001:80")]  # listing() gives every route shop.test
    client.inspect_container.return_value = {"Id": "0ld000000001" + "0" * 52, "Name": "/shop-web-staging-v1",
                                             "State": {"Running": True}, "Config": {"Labels": {**LABELS,
                                                                                               "role": "web"}}}
    renamed = route_props(service="shop-web", role="web")
    providers.RouteProvider().create(renamed)
    assert [c[:4] if c[0] == "deploy" else c for c in kamal_proxy["calls"] if c[0] != "list"] == [
        ["deploy", "shop-web-staging", "--target", "0123456789ab:80"], ["remove", "shop-web-staging"],
        ["deploy", "shop-web", "--target", "0123456789ab:80"]]

    kamal_proxy["calls"].clear()
    client.inspect_container.return_value = {"Id": "0ld000000001" + "0" * 52, "Name": "/shop-web-staging-v1",
                                             "State": {"Running": True}, "Config": {"Labels": {
                                                 "shipyard.stack": "other/staging", "destination": "staging",
                                                 "service": "shop", "role": "web"}}}
    with pytest.raises(OwnershipConflict, match="kamal-proxy route shop-web-staging holds the host names of route "
                                                "shop-web and serves container shop-web-staging-v1 of stack "
                                                r"other/staging \(destination staging\); nothing was changed"):
        providers.RouteProvider().create(renamed)
    assert [c for c in kamal_proxy["calls"] if c[0] != "list"] == []


def test_an_update_that_renames_the_route_removes_the_old_one(client, kamal_proxy):
    """A takeover's destination changed (or went): the route's name changes in place, and its old route goes even
    when it no longer shares a host name."""
    client.containers.return_value = [proxy_container("kp:1")]
    kamal_proxy["routes"] = [("shop-web", "0123456789ab:80")]
    client.inspect_container.return_value = {"Id": "0123456789abcdef", "Name": "/shop-web-staging-v2",
                                             "State": {"Running": True}, "Config": {"Labels": {**LABELS,
                                                                                               "role": "web"}}}
    moved = route_props(proxy={**PROXY, "hosts": ["new.shop.test"]})
    providers.RouteProvider().update("id", route_props(service="shop-web"), moved)
    assert ["remove", "shop-web"] in kamal_proxy["calls"]
    assert kamal_proxy["calls"][-1][:2] == ["deploy", "shop-web-staging"]
    client.stop.assert_not_called()  # the same container serves on


def net_props(**over):
    return {"owner": OWNER, "destination": "staging", "target": TARGET, "name": "shop-staging", "labels": LABELS,
            **over}


def test_a_network_of_ours_is_adopted_and_anothers_refused(client):
    client.networks.return_value = [{"Name": "shop-staging", "Id": "n1", "Labels": LABELS}]
    assert providers.NetworkProvider().create(net_props()).id == "n1"
    client.create_network.assert_not_called()
    client.networks.return_value = [{"Name": "shop-staging", "Id": "n1", "Labels": {"destination": "staging"}}]
    with pytest.raises(OwnershipConflict, match="network shop-staging belongs to destination staging of another"):
        providers.NetworkProvider().create(net_props())


def test_a_network_someone_else_attached_to_is_left_alone(client):
    client.inspect_network.return_value = {"Labels": LABELS, "Containers": {"c1": {}}}
    client.inspect_container.return_value = {"Id": "c1", "Config": {"Labels": {"destination": "production"}}}
    providers.NetworkProvider().delete("n1", net_props())
    client.remove_network.assert_not_called()
    client.inspect_container.return_value = {"Id": "c1", "Config": {"Labels": {**LABELS, "role": "web"}}}
    providers.NetworkProvider().delete("n1", net_props())
    client.disconnect_container_from_network.assert_called_once_with("c1", "n1", force=True)
    client.remove_network.assert_called_once_with("n1")


def test_a_volume_of_ours_is_taken_back_and_only_ours_deleted(client):
    vol = {**net_props(), "name": "shop-staging-data"}
    client.inspect_volume.return_value = {"Labels": LABELS}
    providers.VolumeProvider().create(vol)
    client.create_volume.assert_not_called()  # kept by an earlier destroy: taken back, data and all
    client.inspect_volume.return_value = {"Labels": {"destination": "production"}}
    with pytest.raises(OwnershipConflict):
        providers.VolumeProvider().create(vol)
    providers.VolumeProvider().delete("v", vol)
    client.remove_volume.assert_not_called()
    client.inspect_volume.side_effect = docker.errors.NotFound("gone")
    providers.VolumeProvider().delete("v", vol)  # already gone: fine
