"""The host layer's decisions about SSH channels and connections, against fakes autospecced from paramiko: a
session sshd refuses is not a broken connection, and a host lock knows when it no longer holds."""

from __future__ import annotations

import dataclasses
import subprocess
from concurrent.futures import Future
from pathlib import Path

import paramiko
import pytest

from components import hostlock, hosts, ssh
from components.configtypes import SSH
from components.errors import AuthenticationFailed, ConfigError, HostError, HostUnreachable
from components.hosts import SSHTarget, open_ahead  # the real one (conftest: no test opens connections ahead)

T = SSHTarget(host="h1")


def test_a_session_sshd_refuses_is_not_a_broken_connection(mocker):
    """sshd refuses a session beyond MaxSessions (paramiko's ChannelException): the connection and everything on it
    - the Docker API, other commands - stays; only a really broken one is dropped."""
    forget = mocker.patch("components.hosts._forget")
    with pytest.raises(HostError, match="host h1: running x failed: sshd refused another SSH session .*MaxSessions") \
            as refused:
        with hosts.docker_errors(T, "running x"):
            raise paramiko.ChannelException(1, "Administratively prohibited")
    assert not isinstance(refused.value, HostUnreachable)
    forget.assert_not_called()
    with pytest.raises(HostUnreachable):
        with hosts.docker_errors(T, "running x"):
            raise EOFError()
    forget.assert_called_once_with(T)


def test_only_a_connection_that_is_down_is_dropped(mocker):
    """A failure of one channel (a command that timed out, a Docker API stream the daemon ended), or a late one of a
    connection already replaced, leaves the connection every other call on the host uses."""
    conn = mocker.Mock(alive=True)
    mocker.patch.dict(hosts._connections, {T: conn})
    with pytest.raises(HostUnreachable):
        with hosts.docker_errors(T, "running x"):
            raise TimeoutError()
    assert hosts._connections[T] is conn
    conn.close.assert_not_called()
    conn.alive = False
    with pytest.raises(HostUnreachable):
        with hosts.docker_errors(T, "running x"):
            raise EOFError()
    assert T not in hosts._connections
    conn.close.assert_called_once_with()


def test_a_refused_session_is_asked_for_again_until_its_deadline(mocker):
    mocker.patch("components.hosts.time.sleep")
    ssh = mocker.create_autospec(paramiko.SSHClient, instance=True)
    transport = ssh.get_transport.return_value
    chan = mocker.create_autospec(paramiko.Channel, instance=True)
    transport.open_session.side_effect = [paramiko.ChannelException(1, "open failed")] * 3 + [chan]
    assert hosts.open_session(ssh, 30) is chan
    assert transport.open_session.call_count == 4

    transport.open_session.side_effect = paramiko.ChannelException(1, "open failed")
    with pytest.raises(paramiko.ChannelException):
        hosts.open_session(ssh, 0.01)

    # two refused at once: paramiko gives the refusal to one of them, the other gets a bare "Unable to open channel."
    transport.open_session.side_effect = [paramiko.SSHException("Unable to open channel."), chan]
    transport.is_active.return_value = True
    assert hosts.open_session(ssh, 30) is chan
    transport.open_session.side_effect = paramiko.SSHException("Unable to open channel.")
    transport.is_active.return_value = False  # the connection itself is gone: no second try
    with pytest.raises(paramiko.SSHException):
        hosts.open_session(ssh, 30)
    assert transport.open_session.call_count == 8


def _command_channel(mocker, status: int):
    """The session channel `hosts.run` gets: no output, then `status`."""
    chan = mocker.create_autospec(paramiko.Channel, instance=True)
    chan.recv.side_effect = lambda n: b""
    chan.recv_exit_status.return_value = status
    mocker.patch("components.hosts._session").return_value.__enter__.return_value = chan
    return chan

def test_a_command_gets_no_input_rather_than_an_end_of_input_after_it_may_have_exited(mocker):
    """sshd drops the whole connection on an end-of-input for a channel it closed, which a command that exits at
    once has: it gets /dev/null instead of one."""
    chan = _command_channel(mocker, status=0)
    hosts.run(T, ["echo", "a b"], doing="echoing")
    chan.exec_command.assert_called_once_with("echo 'a b' </dev/null")
    chan.shutdown_write.assert_not_called()


def test_a_command_whose_connection_goes_mid_way_is_a_broken_connection(mocker):
    forget = mocker.patch("components.hosts._forget")
    chan = _command_channel(mocker, status=-1)  # no exit status came
    chan.get_transport.return_value.is_active.return_value = False
    with pytest.raises(HostUnreachable, match=r"host h1: the connection broke while echoing \(EOFError: the SSH "
                                              r"connection closed while the command ran\)"):
        hosts.run(T, ["echo"], doing="echoing")
    forget.assert_called_once_with(T)


def test_a_lock_whose_channel_is_gone_is_not_held(mocker):
    chan = mocker.create_autospec(paramiko.Channel, instance=True)
    chan.closed = False
    chan.exit_status_ready.return_value = False
    chan.recv.side_effect = [b"he", b"ld\n"]
    lock = hostlock.HeldLock(T, chan, "host lock", "routing shop")
    lock.check("switching route shop")
    chan.sendall.assert_called_once_with(b"?\n")

    chan.recv.side_effect = [b""]  # the holding process ended (released, or its connection went)
    with pytest.raises(hostlock.LockLost, match="host h1: the host lock taken for routing shop was lost before "
                                                "switching route shop"):
        lock.check("switching route shop")
    chan.recv.side_effect = OSError("timed out")  # no answer: the connection is dead as far as we can tell
    assert not lock.holds()
    chan.exit_status_ready.return_value = True
    assert not lock.holds()


def test_a_target_without_a_proxy_reads_as_it_always_did_and_a_jump_host_is_reached_as_the_host_is():
    plain = SSHTarget(host="h1", user="deploy", keys=("k",))
    assert "proxy" not in plain.to_dict() and "proxy_command" not in plain.to_dict()  # no diff for old stacks
    assert plain.jump() is None
    jumped = SSHTarget(host="10.0.0.5", user="deploy", keys=("k",), known_hosts="kh", proxy="ops@bastion:2200")
    assert SSHTarget.from_dict(jumped.to_dict()) == jumped
    assert jumped.jump() == SSHTarget(host="bastion", port=2200, user="ops", keys=("k",), known_hosts="kh")
    assert SSHTarget(host="h", proxy="bastion").jump() == SSHTarget(host="bastion", user="root")


def test_a_proxy_command_gets_the_host_port_and_user(mocker):
    command = mocker.patch("paramiko.ProxyCommand")
    mocker.patch("paramiko.SSHClient.connect")
    client = ssh.connect(SSHTarget(host="10.0.0.5", port=2222, user="app", proxy_command="ssh -W %h:%p %r@bastion"))
    command.assert_called_once_with("ssh -W 10.0.0.5:2222 app@bastion")
    client.close()


def test_a_jump_host_that_cannot_reach_the_server_is_named_in_one_line(mocker):
    via = mocker.MagicMock()
    via.get_transport.return_value.open_channel.side_effect = paramiko.ChannelException(2, "Connect failed")
    connect = ssh.connect
    mocker.patch.object(ssh, "connect", side_effect=[via])  # the jump host's connection
    with pytest.raises(HostUnreachable) as err:
        connect(SSHTarget(host="10.0.0.5", proxy="bastion"))
    assert "jump host bastion cannot reach SSH port 22" in str(err.value)
    via.close.assert_called_once()


def test_keys_only_offers_only_the_given_keys(mocker):
    connect = mocker.patch("paramiko.SSHClient.connect")
    mocker.patch("socket.create_connection")
    ssh.connect(SSHTarget(host="h", keys=("id",), keys_only=True)).close()
    assert (connect.call_args.kwargs["allow_agent"], connect.call_args.kwargs["look_for_keys"]) == (False, False)
    ssh.connect(SSHTarget(host="h", keys=("id",))).close()
    assert (connect.call_args.kwargs["allow_agent"], connect.call_args.kwargs["look_for_keys"]) == (True, False)


def test_an_ssh_config_file_fills_in_what_the_stack_leaves_open(tmp_path):
    conf = tmp_path / "ssh_config"
    conf.write_text("Host web1\n  HostName 10.0.0.5\n  User ignored\n  Port 2200\n  IdentityFile ~/.ssh/work\n"
                    "  ProxyJump ops@bastion\n  IdentitiesOnly yes\n  UserKnownHostsFile ~/.ssh/work_hosts\n")
    t = ssh.with_config(SSHTarget(host="web1", user="deploy"), (str(conf),))
    home = str(Path.home())
    assert t == SSHTarget(host="web1", user="deploy", address="10.0.0.5", keys=(f"{home}/.ssh/work",),
                          proxy="ops@bastion", keys_only=True, known_hosts=f"{home}/.ssh/work_hosts")
    # what the stack sets wins; another host, or no file, changes nothing
    own = SSHTarget(host="web1", keys=("id",), proxy_command="nc %h %p", known_hosts="kh")
    assert ssh.with_config(own, (str(conf),)) == SSHTarget(host="web1", keys=("id",), proxy_command="nc %h %p",
                                                          known_hosts="kh", address="10.0.0.5", keys_only=True)
    assert ssh.with_config(SSHTarget(host="db1"), (str(conf),)) == SSHTarget(host="db1")
    assert ssh.with_config(SSHTarget(host="web1"), (str(tmp_path / "none"),)) == SSHTarget(host="web1")
    conf.write_text("Host web1\n  Match\n")
    with pytest.raises(ConfigError, match=r"^ssh.config: .* cannot be read as an OpenSSH config file"):
        ssh.with_config(SSHTarget(host="web1"), (str(conf),))


def test_key_data_offers_each_key_held_as_a_secret_and_names_a_bad_one_by_its_place(mocker, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "a")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "b")], check=True)
    first, second = (tmp_path / "a").read_text(), (tmp_path / "b").read_text()
    settings = SSH(user="deploy", key_data=("DEPLOY_KEY", "OLD_KEY"), keys_only=True)
    t = ssh.target_of(settings, "h", secrets={"DEPLOY_KEY": first, "OLD_KEY": second})
    assert t.key_data == (first, second) and SSHTarget.from_dict(t.to_dict()) == t
    assert "key_data" not in SSHTarget(host="h").to_dict()  # no diff for stacks without it
    assert t.jump() is None and dataclasses.replace(t, proxy="bastion").jump().key_data == (first, second)
    # the first key is refused, the second logs in: one connection per key, as paramiko offers one of its own
    connect = mocker.patch("paramiko.SSHClient.connect",
                           side_effect=[paramiko.AuthenticationException("no"), None])
    mocker.patch("socket.create_connection")
    ssh.connect(t).close()
    offered = [c.kwargs["pkey"] for c in connect.call_args_list]
    assert [k.get_name() for k in offered] == ["ssh-ed25519", "ssh-rsa"]
    assert (connect.call_args.kwargs["allow_agent"], connect.call_args.kwargs["look_for_keys"]) == (False, False)
    connect.side_effect = paramiko.AuthenticationException("no")
    with pytest.raises(AuthenticationFailed, match="SSH login as deploy was refused"):
        ssh.connect(t)
    with pytest.raises(AuthenticationFailed) as err:
        ssh.connect(SSHTarget(host="h", key_data=(first, "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n")))
    assert "ssh.key_data[1] is not a private key in PEM or OpenSSH form" in str(err.value)
    assert "c2VjcmV0" not in str(err.value)


def test_a_docker_call_on_a_connection_closed_since_is_a_broken_connection_not_a_bug(mocker):
    """A Docker client taken while its SSH connection was up, called after that connection broke and was closed:
    docker-py would open a connection of its own to host None (a TypeError); it is the broken connection it is."""
    import requests

    from components import dockerapi
    closed = mocker.Mock()
    closed.get_transport.return_value = None
    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        dockerapi._DockerOverSSH(closed).get_connection("http+docker://ssh/v1.41/containers/json")
    found = dockerapi.translate(SSHTarget(host="h1"), "listing containers", raised.value)
    assert found.broken and str(found.error).startswith("host h1: the connection broke while listing containers")


@pytest.mark.parametrize("said, then", [
    ("driver failed programming external connectivity on endpoint web_pending_1 (e1): failed to bind host port "
     "0.0.0.0:9105/tcp: address already in use",
     "; port 9105 is taken on the host by something else: free it, or publish on another port"),
    ("Bind for 0.0.0.0:8080 failed: port is already allocated",
     "; port 8080 is taken on the host by something else: free it, or publish on another port"),
    ('failed to resolve reference "docker.io/library/busybox:nosuchtag": docker.io/library/busybox:nosuchtag: not '
     'found', "; check the image's name and tag, and that the registry has it"),
    ("No such container: c1", ""),
])
def test_the_daemons_refusals_users_meet_most_say_what_to_do(mocker, said, then):
    """A port something else on the host holds (not a container: the check finds those first), an image that is not
    there: the daemon's words, and what to do."""
    import docker.errors

    from components import dockerapi
    exc = docker.errors.APIError("500 Server Error", response=mocker.Mock(status_code=500), explanation=said)
    found = dockerapi.translate(SSHTarget(host="h1"), "creating container web", exc)
    assert str(found.error) == f"host h1: creating container web failed: {said}{then}"


def test_a_connection_opened_ahead_is_the_one_its_user_gets_and_so_is_its_error(mocker):
    """An image's ship hosts are connected to while it builds: the first user of each gets that connection, or the
    error opening it met, without connecting a second time."""
    opened = []

    class Fake:
        alive = True

        def __init__(self, target):
            if target.host == "down":
                raise HostUnreachable("down", "cannot connect to SSH port 22: timed out")
            opened.append(target.host)

    def own(target):  # the host lock's connection
        if target.host == "down":
            raise HostUnreachable("down", "cannot connect to SSH port 22: timed out")
        return mocker.create_autospec(paramiko.SSHClient, instance=True)

    mocker.patch("components.dockerapi.Connection", Fake)
    mocker.patch("components.hosts.connect", side_effect=own)
    mocker.patch.dict(hosts._connections, clear=True)
    mocker.patch.dict(hosts._own_idle, clear=True)
    up, down = SSHTarget(host="up"), SSHTarget(host="down")
    open_ahead([up, down])
    assert hosts.connection(up) is hosts.connection(up)
    with pytest.raises(HostUnreachable, match="down"):
        hosts.connection(down)
    assert opened == ["up"]
    open_ahead([up])  # open already: nothing to do
    assert opened == ["up"] and not hosts._ahead
    # the host lock's own connection, opened ahead on a thread of its own: the first holder waits for it rather
    # than opening another
    mocker.patch("components.hosts._active", return_value=True)
    with hosts.own_connection(up):
        pass
    assert [c.args[0].host for c in hosts.connect.call_args_list].count("up") == 1
    assert not hosts._own_ahead
    # one that failed fails the holder that waited for it; a holder after that connects itself
    failed: Future = Future()
    failed.set_exception(HostUnreachable("down", "cannot connect to SSH port 22: timed out"))
    mocker.patch.dict(hosts._own_ahead, {down: failed})
    with pytest.raises(HostUnreachable, match="down"):
        with hosts.own_connection(down):
            pass


def test_the_docker_apis_channels_are_asked_for_again_when_sshd_refuses_one(mocker):
    """A Docker API channel sshd refuses for the moment is a busy connection, as a command's is: asked for again,
    never taken for a broken one (which would drop every other call on the host)."""
    from components.dockerapi import Sessions
    mocker.patch("components.hosts.time.sleep")
    ssh = mocker.create_autospec(paramiko.SSHClient, instance=True)
    chan = mocker.create_autospec(paramiko.Channel, instance=True)
    ssh.get_transport.return_value.open_session.side_effect = [paramiko.ChannelException(1, "open failed"), chan]
    sessions = Sessions(ssh)
    assert sessions.get_transport().open_session() is chan


@pytest.mark.parametrize("status, says, what", [
    (127, "sh: 1: docker: not found", "Docker is not installed there (or not on the PATH of a non-interactive SSH "
                                      "session): install Docker Engine"),
    (1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     "the Docker daemon does not run there: start it (`sudo systemctl enable --now docker`)"),
    (1, "failed to open the raw stream connection: dial unix /var/run/docker.sock: connect: connection refused",
     "the Docker daemon does not run there: start it (`sudo systemctl enable --now docker`)"),
    (1, "something else", "check that Docker runs there and that this user may use it"),
])
def test_a_docker_api_that_does_not_answer_over_ssh_is_told_in_the_hosts_words(mocker, status, says, what):
    """What `docker system dial-stdio` (the Docker API's channel) says on the host, and what to do about it."""
    from components import dockerapi
    mocker.patch("components.hosts.open_session")
    mocker.patch("components.hosts.output", return_value=(status, f"\n{says}"))
    error = dockerapi._no_docker(mocker.Mock(), T)
    assert str(error) == (f"host h1: the Docker daemon cannot be reached over SSH: `docker system dial-stdio` says: "
                          f"{says}; {what}, then run `pulumi up` again")
    hosts.output.return_value = (0, "HTTP/1.0 200 OK\r\n\r\nOK")  # it answers after all: the failure was another
    assert dockerapi._no_docker(mocker.Mock(), T) is None


def test_a_known_hosts_file_is_read_once_until_it_changes(mocker, tmp_path):
    """Every connection looks its host up in known_hosts: the file is parsed once, and again only once it changed
    (accept-new appended a host, or the user edited it)."""
    pub = "AAAAC3NzaC1lZDI1NTE5AAAAIMOAPU+4IH1/3oaOojpbS7nITiltcOBwvNx23L/DeV99"
    known = tmp_path / "known_hosts"
    known.write_text(f"{paramiko.HostKeys.hash_host('[10.0.0.5]:2222')} ssh-ed25519 {pub}\n")
    load = mocker.spy(paramiko.HostKeys, "load")
    assert [*ssh.known_keys(str(known), "[10.0.0.5]:2222")] == ["ssh-ed25519"]
    assert [*ssh.known_keys(str(known), "[10.0.0.5]:2222")] == ["ssh-ed25519"]
    assert ssh.known_keys(str(known), "10.0.0.5") == {}  # port 22 is another name
    assert load.call_count == 1
    with known.open("a") as fh:
        fh.write(f"10.0.0.6 ssh-ed25519 {pub}\n")
    assert [*ssh.known_keys(str(known), "10.0.0.6")] == ["ssh-ed25519"]
    assert load.call_count == 2


def test_a_connection_reset_during_the_handshake_reads_as_one_sentence(mocker):
    """paramiko's "Error reading SSH protocol banner" runs straight into its cause; the line separates them."""
    mocker.patch("paramiko.SSHClient.connect", side_effect=paramiko.SSHException(
        "Error reading SSH protocol banner[Errno 104] Connection reset by peer"))
    mocker.patch("socket.create_connection")
    with pytest.raises(HostUnreachable) as err:
        ssh.connect(SSHTarget(host="h", port=2222))
    assert str(err.value) == ("host h:2222: SSH failed: Error reading SSH protocol banner: [Errno 104] Connection "
                              "reset by peer: check that sshd runs there and the network")
