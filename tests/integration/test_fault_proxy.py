"""The product's host layer through the bench's fault proxy (toxiproxy between the deployer and each sshd): it
works through the proxy, slows down with latency, and reports a cut connection as a host error, not a traceback."""

from __future__ import annotations

import time
import uuid

import pytest

from components import hostfiles, hosts, ssh
from components.errors import HostError
from components.hosts import SSHTarget, docker_errors
from tests.conftest import at_once, host_docker

pytestmark = pytest.mark.integration

PINGS = 5


def proxied(bench, i: int = 0) -> SSHTarget:
    h = bench.hosts[i]
    return SSHTarget(host=h.proxied_address, port=h.proxied_port, user=h.user, keys=(bench.identity_file,),
                     known_hosts=bench.known_hosts)


def ping_times(target: SSHTarget) -> list[float]:
    """Seconds per `docker ping` over the host's open SSH connection (one HTTP round trip each)."""
    times = []
    for _ in range(PINGS):
        start = time.perf_counter()
        assert hosts.client(target).ping()
        times.append(time.perf_counter() - start)
    return times


def test_docker_over_ssh_through_the_fault_proxy_reaches_the_hosts_daemon(bench, fault_proxy):
    hosts.close_all()
    t = proxied(bench)
    assert hosts.client(t).ping()
    # host1's daemon (its key is known under the proxied [address]:port too: strict host-key checking passed)
    assert hosts.client(t).info()["DockerRootDir"] == host_docker(bench.hosts[0]).info()["DockerRootDir"]
    assert hosts.client(t).info()["DockerRootDir"] != host_docker(bench.hosts[1]).info()["DockerRootDir"]


def test_latency_on_the_proxy_slows_every_round_trip(bench, fault_proxy):
    hosts.close_all()
    t = proxied(bench)
    hosts.client(t).ping()  # connected, channel open
    plain = ping_times(t)
    with fault_proxy.latency("host1", 25):  # each way: 50 ms per round trip
        slow = ping_times(t)
    restored = ping_times(t)
    print(f"\ndocker ping over SSH through the fault proxy, {PINGS} each: "
          f"plain min {min(plain) * 1000:.1f} ms, median {sorted(plain)[PINGS // 2] * 1000:.1f} ms; "
          f"+25 ms each way min {min(slow) * 1000:.1f} ms, median {sorted(slow)[PINGS // 2] * 1000:.1f} ms; "
          f"restored median {sorted(restored)[PINGS // 2] * 1000:.1f} ms")
    assert min(slow) >= 0.050  # a lower bound only: this machine may be slower, never faster than the wire


@pytest.mark.parametrize("doing", ["docker", "sftp"])
def test_a_cut_of_an_open_connection_is_a_host_error(bench, fault_proxy, doing):
    hosts.close_all()
    t = proxied(bench)
    assert hosts.client(t).ping()  # the connection is open
    fault_proxy.cut("host1")  # TCP reset at the next byte: what a deploy sees when the network drops mid-way
    with pytest.raises(HostError, match=rf"^host {t.host}:{t.port}: "):
        if doing == "docker":
            with docker_errors(t, "pinging the daemon"):
                hosts.client(t).ping()
        else:
            hostfiles.write_file(t, f"/tmp/probe-{uuid.uuid4().hex[:8]}", b"x")


def test_a_host_gone_silent_is_a_host_error_within_the_answer_time_not_the_calls_timeout(bench, fault_proxy,
                                                                                          monkeypatch):
    """Every packet dropped, nothing closed (a host or network gone silent): the connection's own requests go
    unanswered, so it is closed and what waits on it fails as a broken connection - here within seconds (the
    times shortened), in a deploy within ANSWER_S, not the Docker API call's ten minutes. One that answers stays."""
    monkeypatch.setattr(ssh, "KEEPALIVE_S", 0.5)
    monkeypatch.setattr(ssh, "ANSWER_S", 2)
    hosts.close_all()
    t = proxied(bench)
    assert hosts.client(t).ping()
    time.sleep(2)  # asked and answered a few times: still open
    assert hosts.client(t).ping()
    fault_proxy.blackhole("host1")
    start = time.monotonic()
    with pytest.raises(HostError, match=rf"^host {t.host}:{t.port}: "):
        with docker_errors(t, "pinging the daemon"):
            hosts.client(t).ping()
    assert time.monotonic() - start < 15
    hosts.close_all()


def test_a_cut_refuses_new_connections_with_a_host_error_until_restored(bench, fault_proxy):
    hosts.close_all()
    t = proxied(bench)
    probe = f"/tmp/probe-{uuid.uuid4().hex[:8]}"
    fault_proxy.cut("host1")
    with pytest.raises(HostError, match=rf"^host {t.host}:{t.port}: "):
        with docker_errors(t, "pinging the daemon"):
            hosts.client(t).ping()
    with pytest.raises(HostError, match=rf"^host {t.host}:{t.port}: "):
        hostfiles.write_file(t, probe, b"x")
    fault_proxy.restore("host1")
    assert hosts.client(t).ping()
    hostfiles.write_file(t, probe, b"after the cut")
    assert hostfiles.file_mode(t, probe) == 0o600
    hostfiles.remove_file(t, probe)


def test_a_disabled_proxy_refuses_connections_until_enabled(bench, fault_proxy):
    hosts.close_all()
    t = proxied(bench)
    assert hosts.client(t).ping()
    fault_proxy.set_enabled("host1", False)  # open connections closed, new ones refused
    with pytest.raises(HostError, match=rf"^host {t.host}:{t.port}: "):
        with docker_errors(t, "pinging the daemon"):
            hosts.client(t).ping()
    fault_proxy.set_enabled("host1", True)
    assert hosts.client(t).ping()


def test_a_cut_while_more_docker_api_calls_than_channels_are_under_way_ends_every_one_with_a_host_error(
        bench, fault_proxy):
    """Twelve threads of Docker API calls on a connection of six channels, half of them waiting for a free one when
    the network goes: every one ends, with a host error, rather than waiting for ever for a channel."""
    hosts.close_all()
    t = proxied(bench)
    assert hosts.client(t).ping()

    def calls() -> None:
        for _ in range(500):
            with docker_errors(t, "listing containers"):
                hosts.client(t).containers(all=True)

    def cut() -> None:
        time.sleep(0.5)  # the calls under way, half of them waiting for a channel
        fault_proxy.cut("host1")

    *errors, was_cut = at_once([calls] * 12 + [cut], deadline_s=60)
    assert was_cut is None
    assert all(isinstance(e, HostError) and str(e).startswith(f"host {t.host}:{t.port}: ") for e in errors), errors
