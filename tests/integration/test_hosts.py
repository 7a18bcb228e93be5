"""The bench's hosts through the product's own host layer: real sshd, real dockerd, real host-key checks."""

from __future__ import annotations

import uuid
from pathlib import Path

import paramiko
import pytest

from components import hosts
from components.errors import AuthenticationFailed, DockerError, HostKeyRejected, HostUnreachable
from components.hosts import SSHTarget, docker_errors
from tests.conftest import at_once, pulled

pytestmark = pytest.mark.integration

COMMANDS = 200  # per thread: the race this guards against showed within about a second of such traffic


def target(bench, i: int = 0, **kw) -> SSHTarget:
    h = bench.hosts[i]
    return SSHTarget(**{"host": h.address, "port": h.port, "user": h.user, "keys": (bench.identity_file,),
                        "known_hosts": bench.known_hosts, **kw})


def test_a_container_started_on_host1_is_not_visible_on_host2(bench):
    one, two = hosts.client(target(bench, 0)), hosts.client(target(bench, 1))
    assert one.info()["DockerRootDir"] != two.info()["DockerRootDir"]  # two daemons, not one seen twice
    name = f"probe-{uuid.uuid4().hex[:8]}"
    cid = one.create_container(pulled(one, "busybox:latest"), command=["sleep", "300"], name=name)["Id"]
    one.start(cid)
    try:
        assert [c["Id"] for c in one.containers(filters={"name": name})] == [cid]
        assert two.containers(all=True, filters={"name": name}) == []
    finally:
        one.remove_container(cid, force=True)


def test_one_ssh_connection_per_host_per_process(bench):
    hosts.close_all()
    t = target(bench, 0)
    assert hosts.client(t) is hosts.client(t)
    transport = hosts.connection(t).ssh.get_transport()
    for _ in range(5):
        hosts.client(t).ping()
    assert hosts.connection(t).ssh.get_transport() is transport


def test_a_wrong_host_key_is_refused(bench, tmp_path: Path):
    # host2's key filed under host1's address: exactly what a man in the middle would present
    h1, h2 = bench.hosts[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{h1.address} {' '.join(h2.host_key_pub.split()[:2])}\n")
    hosts.close_all()
    with pytest.raises(HostKeyRejected, match="does not match"):
        hosts.client(target(bench, 0, known_hosts=str(forged)))


def test_an_unknown_host_is_refused_by_default_and_remembered_with_accept_new(bench, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    hosts.close_all()
    with pytest.raises(HostKeyRejected, match="not in"):
        hosts.client(target(bench, 0, known_hosts=str(empty)))
    c = hosts.client(target(bench, 0, known_hosts=str(empty), host_key_policy="accept-new"))
    assert c.ping()
    assert empty.read_text().split()[:3] == [bench.hosts[0].address, *bench.hosts[0].host_key_pub.split()[:2]]
    hosts.close_all()
    assert hosts.client(target(bench, 0, known_hosts=str(empty))).ping()  # now known: strict accepts it


def test_a_users_hashed_known_hosts_is_read_once_and_again_when_it_changes(bench, tmp_path: Path):
    """A user's own known_hosts: hashed lines (OpenSSH's HashKnownHosts) among a few hundred others. Read once for
    every connection to a host, and again once it changes: a key replaced since is refused."""
    h1, h2 = bench.hosts[:2]
    name = h1.address if h1.port == 22 else f"[{h1.address}]:{h1.port}"

    def line(host: str, pub: str) -> str:
        return f"{paramiko.HostKeys.hash_host(host)} {' '.join(pub.split()[:2])}\n"
    others = "".join(line(f"host{i}.example.com", h2.host_key_pub) for i in range(300))
    known = tmp_path / "known_hosts"
    known.write_text(others + line(name, h1.host_key_pub))
    hosts.close_all()
    assert hosts.client(target(bench, 0, known_hosts=str(known))).ping()
    known.write_text(others + line(name, h2.host_key_pub))  # host2's key filed under host1's name
    hosts.close_all()
    with pytest.raises(HostKeyRejected, match="does not match"):
        hosts.client(target(bench, 0, known_hosts=str(known)))


def test_unreachable_and_refused_logins_name_the_host(bench, tmp_path: Path):
    hosts.close_all()
    with pytest.raises(HostUnreachable, match=rf"host {bench.hosts[0].address}:2222: cannot connect"):
        hosts.client(target(bench, 0, port=2222))
    other_key = tmp_path / "id"
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    with pytest.raises(AuthenticationFailed, match=f"SSH login as {bench.hosts[0].user} was refused"):
        hosts.client(target(bench, 0, keys=(str(other_key),)))
    # a key file that is not there is no network problem: it is passed over, and named when nothing else logs in
    missing = str(tmp_path / "no-such-key")
    with pytest.raises(AuthenticationFailed, match=rf"no SSH key to log in as {bench.hosts[0].user} with; not on "
                                                   rf"this machine: {missing} \(ssh.keys\): set ssh.keys"):
        hosts.client(target(bench, 0, keys=(missing,), keys_only=True))
    with pytest.raises(AuthenticationFailed, match=rf"was refused .*: check ssh.user and ssh.keys; not on this "
                                                   rf"machine: {missing} \(ssh.keys\)"):
        hosts.client(target(bench, 0, keys=(missing, str(other_key)), keys_only=True))
    hosts.client(target(bench, 0, keys=(missing, bench.identity_file), keys_only=True)).ping()


def test_docker_errors_are_translated(bench):
    t = target(bench, 0)
    address = bench.hosts[0].address  # Engine 20.10 says "no such image", current engines "No such image"
    with pytest.raises(DockerError, match=rf"host {address}: inspecting nothing failed: .*[Nn]o such image"):
        with docker_errors(t, "inspecting nothing"):
            hosts.client(t).inspect_image("no-such-image:nope")


def test_short_commands_beside_docker_api_calls_never_break_the_shared_connection(bench):
    """Commands that end at once (as a deploy's probes and `kamal-proxy list` do), six at a time beside four threads
    of Docker API calls: every one succeeds on the one connection. sshd drops a whole connection on an end-of-input
    for a channel it already closed; a command's input was ended after it could have exited, and a deploy's other
    calls on the host then failed with "the connection broke"."""
    hosts.close_all()
    t = target(bench, 0)
    transport = hosts.connection(t).ssh.get_transport()

    def commands() -> list[tuple[int, str]]:  # the ones that did not print "ok"
        return [r for r in (hosts.run(t, ["echo", "ok"], doing="echoing") for _ in range(COMMANDS)) if r != (0, "ok")]

    def api_calls() -> list:
        for _ in range(COMMANDS):
            hosts.client(t).containers(all=True)
        return []

    assert at_once([commands] * 6 + [api_calls] * 4, deadline_s=120) == [[]] * 10
    assert hosts.connection(t).ssh.get_transport() is transport  # never reconnected


def test_image_saves_given_up_half_read_leave_the_hosts_docker_api_free(bench):
    """An image copy reads `docker save` on one host as another takes it in; when the receiving host fails, the
    rest is never read, and the failure keeps what it was reading referenced until every copy has ended. More such
    copies than the host has Docker API channels, each given up after its first chunk and kept: the host still
    answers every call, on the same connection."""
    from components.dockerapi import MAX_CHANNELS, saved_image
    hosts.close_all()
    t = target(bench, 0)
    c = hosts.client(t)
    image = c.inspect_image(pulled(c, "busybox:latest"))["Id"]
    transport = hosts.connection(t).ssh.get_transport()
    kept = []

    def give_up() -> list[bytes]:
        firsts = []
        for _ in range(MAX_CHANNELS + 2):
            saved = saved_image(c, image)
            kept.append(saved)
            try:
                firsts.append(next(saved.iter_content(64 << 10)))
            finally:
                saved.close()
        return firsts

    firsts, version = at_once([give_up, lambda: c.version()], deadline_s=60)
    assert isinstance(firsts, list) and all(firsts), firsts  # each archive began
    assert version["ApiVersion"] and c.containers(all=True) is not None  # not one channel held
    assert hosts.connection(t).ssh.get_transport() is transport


def test_a_host_whose_docker_cannot_be_used_says_why_and_what_to_do(bench, bench_ctl):
    """A new server whose deploy user may not use Docker's socket, or whose Docker daemon does not run: SSH logs in,
    and the Docker API's channel ends with no answer. One line names the host, what the host says and what to do,
    never "the connection broke"; once Docker is usable, the next try connects."""
    host = bench.hosts[6]
    t = target(bench, 6)
    socket = Path(host.docker_socket)
    hosts.close_all()
    socket.chmod(0o600)  # root's alone, as where the user is not in the docker group
    try:
        with pytest.raises(DockerError) as denied:
            hosts.client(t)
    finally:
        socket.chmod(0o660)
    assert str(denied.value).startswith(f"host {host.address}: the Docker daemon cannot be reached over SSH: "
                                        f"`docker system dial-stdio` says: "), denied.value
    assert "permission denied" in str(denied.value), denied.value  # in the words of the host's Docker CLI
    assert str(denied.value).endswith(f"user {host.user} may not use Docker there: add it to the docker group "
                                      f"(`sudo usermod -aG docker {host.user}`, then log in again) or deploy as "
                                      f"root, then run `pulumi up` again"), denied.value
    bench_ctl.stop_docker(7)
    try:
        with pytest.raises(DockerError) as stopped:
            hosts.client(t)
    finally:
        bench_ctl.restart_docker(7)
    assert "`docker system dial-stdio` says: " in str(stopped.value), stopped.value
    assert str(stopped.value).endswith("the Docker daemon does not run there: start it (`sudo systemctl enable --now "
                                       "docker`), then run `pulumi up` again"), stopped.value
    assert hosts.client(t).version()["ApiVersion"]
