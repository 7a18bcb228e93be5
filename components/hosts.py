"""The one place that talks to hosts: one owned SSH connection per host (paramiko) that the Docker API (docker-py),
SFTP, HTTP probes and host commands all ride on - and, apart from it, a connection of its own for each host lock
while it is held (`own_connection`).

Connections are opened inside provider methods, never stored in a provider, and cached per process keyed by the
SSH target, so one `pulumi up` opens one SSH connection per host however many resources live there. Connecting to
one host never waits for another. sshd allows 10 sessions per connection (MaxSessions): the Docker API takes at
most `MAX_CHANNELS` of them, commands and SFTP the rest (`SESSIONS`), waiting for a free one rather than being
refused; a refusal anyway (a host with a lower MaxSessions) is retried, and never taken for a broken connection.
Every paramiko, docker, requests/urllib3, SFTP and socket error is translated here into the `components.errors`
tree.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from .errors import DockerError, HostError, HostUnreachable, LockLost
from .ssh import CONNECT_TIMEOUT_S, SSHTarget, connect

if TYPE_CHECKING:
    import docker
    import paramiko

    from .dockerapi import Connection

T = TypeVar("T")

DAEMON_ERROR = "Error response from daemon:"  # how the docker CLI reports what the daemon refused

_connections: dict[SSHTarget, Connection] = {}
_locks: dict[SSHTarget, threading.Lock] = {}
_registry_lock = threading.Lock()
_own_idle: dict[SSHTarget, list[paramiko.SSHClient]] = {}  # own connections no holder uses now, for the next one
_own_busy: set[paramiko.SSHClient] = set()
_ahead: dict[SSHTarget, Future] = {}  # connections being opened ahead of their first use (`open_ahead`)
_own_ahead: dict[SSHTarget, Future] = {}  # own connections being opened ahead, for the next holder
SFTP_WAIT_S = 60
OWN_IDLE_MAX = 4  # idle own connections kept per host
SESSION_RETRY_S = (0.05, 1.0)  # first and longest pause before asking sshd again for a session it refused


def connection(target: SSHTarget) -> Connection:
    """The connection to `target`, opened once per process (and again if it broke). Only callers for the same
    host wait for each other while it connects."""
    with _registry_lock:
        lock = _locks.setdefault(target, threading.Lock())
        ahead = _ahead.pop(target, None)
    if ahead is not None:
        ahead.result()  # opened ahead: its first user meets what opening it met, rather than waiting for a second try
    return _open(target, lock)


def open_ahead(targets: list[SSHTarget]) -> None:
    """Start opening the connections to `targets` now, on threads of their own, for steps that need them only after
    a long first part (the hosts an image ships to, while it builds): each host's shared connection, whose first
    use waits for it and gets any error opening it met, and one of its own for the host lock a deploy takes there
    (`own_connection`), kept idle for it."""
    for target in targets:
        with _registry_lock:
            lock = _locks.setdefault(target, threading.Lock())
            future: Future | None = None
            if target not in _ahead and not (target in _connections and _connections[target].alive):
                future = _ahead[target] = Future()
            own = None
            if not _own_idle.get(target) and target not in _own_ahead:
                own = _own_ahead[target] = Future()
        if future is not None:
            _settle(future, _open, target, lock)
        if own is not None:
            _settle(own, _connect_idle, target)


def reached() -> list[SSHTarget]:
    """The hosts this process has connected to, or is connecting to ahead of their first use."""
    with _registry_lock:
        return list({**_connections, **_ahead})


def ahead(fn: Callable[..., T], *args: Any) -> Future:
    """`fn(*args)` begun now on a thread of its own; its result (or error) for whoever asks it later."""
    future: Future = Future()
    _settle(future, fn, *args)
    return future


def _settle(future: Future, fn: Callable[..., Any], *args: Any) -> None:
    """`fn(*args)` on a thread of its own, its result or error handed to `future` (for whoever waits for it)."""
    def run() -> None:
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the waiter
            future.set_exception(exc)
    threading.Thread(target=run, daemon=True).start()


def _connect_idle(target: SSHTarget) -> None:
    """An own connection to `target` opened ahead, kept idle for the next holder (`own_connection`)."""
    try:
        ssh = connect(target)
    except Exception:
        with _registry_lock:
            _own_ahead.pop(target, None)  # a later holder connects itself
        raise
    with _registry_lock:
        _own_ahead.pop(target, None)
        _own_idle.setdefault(target, []).append(ssh)


def _open(target: SSHTarget, lock: threading.Lock) -> Connection:
    with lock:
        conn = _connections.get(target)
        if conn is not None and conn.alive:
            return conn
        if conn is not None:
            conn.close()
        from .dockerapi import Connection
        conn = Connection(target)
        _connections[target] = conn
        return conn


def client(target: SSHTarget) -> docker.APIClient:
    """The Docker API client for `target`."""
    return connection(target).docker


def close_all() -> None:
    """Close every connection of this process: the shared ones and every own one, held or idle (their holders
    find their locks gone)."""
    with _registry_lock:
        conns: list[Any] = list(_connections.values())
        _connections.clear()
        _ahead.clear()
        _own_ahead.clear()
        conns += [ssh for idle in _own_idle.values() for ssh in idle] + list(_own_busy)
        _own_idle.clear()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


def _idle(target: SSHTarget) -> paramiko.SSHClient | None:
    """An idle own connection to `target` that still works, taken for a holder."""
    with _registry_lock:
        idle = _own_idle.get(target) or []
        while idle:
            candidate = idle.pop()
            if _active(candidate):
                return candidate
            candidate.close()
    return None


def _active(ssh: paramiko.SSHClient) -> bool:
    transport = ssh.get_transport()
    return transport is not None and transport.is_active()


@contextlib.contextmanager
def own_connection(target: SSHTarget) -> Iterator[paramiko.SSHClient]:
    """An SSH connection to `target` of the caller's own while the block runs (a host lock's channel lives on one):
    never shared with the Docker API, commands or another holder, so no error or reconnect elsewhere closes it.
    Afterwards it is kept for the next holder (connecting costs several round trips) unless it broke, or the block
    ended with the connection in doubt."""
    ssh = _idle(target)
    if ssh is None:
        with _registry_lock:
            ahead = _own_ahead.get(target)
        if ahead is not None:  # one is being opened ahead: waited for (and its error met) rather than opened twice
            ahead.result()
            ssh = _idle(target)
    if ssh is None:
        ssh = connect(target)
    with _registry_lock:
        _own_busy.add(ssh)
    keep = False
    try:
        yield ssh
        keep = True
    except (HostUnreachable, LockLost):
        raise
    except BaseException:
        keep = True
        raise
    finally:
        with _registry_lock:
            if ssh not in _own_busy:  # close_all() closed it meanwhile
                keep = False
            _own_busy.discard(ssh)
            idle = _own_idle.setdefault(target, [])
            keep = keep and _active(ssh) and len(idle) < OWN_IDLE_MAX
            if keep:
                idle.append(ssh)
        if not keep:
            ssh.close()


def open_session(ssh: paramiko.SSHClient, timeout: float) -> paramiko.Channel:
    """A new session channel on `ssh`. sshd refusing it (paramiko's ChannelException: MaxSessions reached) means
    the connection is busy, not broken: ask again, with growing pauses, until `timeout` has passed. paramiko keeps
    one refusal at a time per connection, so of two channels refused at once one may get the other's exception and
    this one a bare "Unable to open channel." - a refusal too while the connection is up."""
    import paramiko
    deadline = time.monotonic() + timeout
    pause = SESSION_RETRY_S[0]
    while True:
        transport = ssh.get_transport()
        if transport is None:
            raise paramiko.SSHException("SSH session not active")
        try:
            return transport.open_session(timeout=max(deadline - time.monotonic(), 1))
        except paramiko.SSHException as exc:
            refused = isinstance(exc, paramiko.ChannelException) or (
                str(exc) == "Unable to open channel." and transport.is_active())
            if not refused or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, SESSION_RETRY_S[1])


@contextlib.contextmanager
def _session(target: SSHTarget, timeout: float) -> Iterator[paramiko.Channel]:
    """A session channel on the host's shared connection while the block runs, within the connection's share of
    sshd's sessions (waiting up to `timeout` for one to be free), closed afterwards. Errors are the caller's to
    translate."""
    conn = connection(target)
    if not conn.sessions.acquire(timeout=timeout):
        raise HostError(str(target), f"no SSH session came free within {timeout:g}s: this process already runs "
                                     f"{conn.session_count} commands on the host at once; run fewer deploys against "
                                     f"it at the same time")
    try:
        chan = open_session(conn.ssh, timeout)
        try:
            yield chan
        finally:
            chan.close()
    finally:
        conn.sessions.release()


def _forget(target: SSHTarget) -> None:
    """Drop the host's connection if it is broken, so the next call reconnects. One that is still up stays: the
    failure was one channel's (a command that timed out, a Docker API stream the daemon ended), or a late one of a
    connection already replaced - closing it would fail every other call on the host with it."""
    with _registry_lock:
        conn = _connections.get(target)
        if conn is None or conn.alive:
            return
        del _connections[target]
    conn.close()


@contextlib.contextmanager
def docker_errors(target: SSHTarget, doing: str, *, shared: bool = True) -> Iterator[None]:
    """Translate every error raised while `doing` something on `target` into the project's error tree; a broken
    shared connection is dropped, so the next call reconnects (`shared=False`: the error is about a connection of
    the caller's own, which it closes itself)."""
    try:
        yield
    except HostError:
        raise
    except Exception as exc:
        from .dockerapi import translate
        error = translate(target, doing, exc)
        if error is None:
            raise
        if error.broken and shared:
            _forget(target)
        raise error.error from None


def or_none(call: Callable[..., T], *args: Any) -> T | None:
    """The result of a Docker lookup (inspect_image, inspect_container, ...), or None if there is no such object."""
    import docker.errors
    try:
        return call(*args)
    except docker.errors.NotFound:
        return None


def http_probe(target: SSHTarget, address: str, port: int, path: str, timeout: float) -> tuple[int | None, str]:
    """GET http://address:port/path as seen from the host itself, through an SSH `direct-tcpip` channel (the way
    `ssh -L` forwards), so it reaches container addresses on the host's Docker networks whatever the app image
    contains. Returns (status or None, a one-line description of the answer or the failure)."""
    import paramiko
    with docker_errors(target, f"probing {address}:{port}{path}"):
        transport = connection(target).ssh.get_transport()
    if transport is None:
        return None, "the SSH connection is closed"
    try:
        chan = transport.open_channel("direct-tcpip", (address, int(port)), ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return None, f"cannot connect to {address}:{port}: {exc}"
    try:
        chan.settimeout(timeout)
        chan.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: shipyard-healthcheck\r\n\r\n".encode())
        data = b""
        while len(data) < 4096:
            chunk = chan.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, OSError, EOFError) as exc:
        return None, f"no answer from {address}:{port}{path} within {timeout:g}s ({exc or 'timeout'})"
    finally:
        chan.close()
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return int(parts[1]), f"{status_line} from {address}:{port}{path}"
    return None, f"not an HTTP answer from {address}:{port}{path}: {status_line[:80]!r}"


def exec_in(target: SSHTarget, container: str, argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run argv in a running container on the host; returns (exit code, combined output). It is `docker exec` on
    the host over one SSH exec channel: about 3 round trips, where the Docker API's create, start (which uses up
    its connection) and inspect take 6. A container that is missing or not running is a DockerError, in the
    daemon's words."""
    doing = f"running `{' '.join(argv[:2])}` in {container}"
    code, out = run(target, ["docker", "exec", container, *argv], doing=doing, timeout=timeout)
    if code != 0 and out.startswith(DAEMON_ERROR):
        raise DockerError(str(target), f"{doing} failed: {out[len(DAEMON_ERROR):].strip()}")
    return code, out


def run(target: SSHTarget, argv: list[str], *, doing: str, timeout: float = 60) -> tuple[int, str]:
    """Run a command on the host itself over an SSH exec channel; returns (exit status, combined output)."""
    command = " ".join(shlex.quote(a) for a in argv)
    with docker_errors(target, doing), _session(target, timeout) as chan:
        return output(chan, command, timeout)


def output(chan: paramiko.Channel, command: str, timeout: float) -> tuple[int, str]:
    """Run the shell command `command` on the new session channel `chan`; returns (exit status, combined output).
    Errors are the caller's to translate."""
    chan.settimeout(timeout)
    chan.set_combine_stderr(True)
    _exec(chan, command)
    out = b""
    while True:
        chunk = chan.recv(65536)
        if not chunk:
            break
        out += chunk
    status = chan.recv_exit_status()
    if status == -1 and not chan.get_transport().is_active():  # no exit status: the connection itself went
        raise EOFError("the SSH connection closed while the command ran")
    return status, out.decode(errors="replace").strip()


def _exec(chan: paramiko.Channel, command: str) -> None:
    """Start `command` on `chan` with no input: `/dev/null`, rather than an end-of-input sent after it. sshd closes a
    channel once its command exits, and drops the whole connection - every other command and Docker API call on it -
    on an end-of-input for a channel it closed, which paramiko sends outside its channel lock, so after its own reply
    to sshd's close when the two race."""
    chan.exec_command(f"{command} </dev/null")


@contextlib.contextmanager
def sftp(target: SSHTarget, doing: str) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on the host's connection, closed afterwards; errors translated."""
    import paramiko
    with docker_errors(target, doing), _session(target, SFTP_WAIT_S) as chan:
        chan.invoke_subsystem("sftp")
        session = paramiko.SFTPClient(chan)
        try:
            yield session
        finally:
            session.close()


def attach(target: SSHTarget, argv: list[str], *, doing: str, stdin_fd: int | None, stdout: Any, stderr: Any,
           pty: tuple[str, int, int] | None = None) -> int:
    """Run a command on the host over an SSH exec channel wired to local streams, until it exits; returns its exit
    status. With `pty` (term, columns, rows) the channel gets a pseudo-terminal (what `ssh -t` does), so
    `docker exec -it` / `docker run -it` on the host behave as at a local terminal; bytes typed on `stdin_fd` go to
    it as they arrive. Without one, stdout and stderr stay apart and stdin is not read."""
    import select
    command = " ".join(shlex.quote(a) for a in argv)
    with docker_errors(target, doing), _session(target, CONNECT_TIMEOUT_S) as chan:
        if pty is not None:
            chan.get_pty(term=pty[0], width=pty[1], height=pty[2])
        if pty is None or stdin_fd is None:
            _exec(chan, command)
            stdin_fd = None
        else:
            chan.exec_command(command)
        while True:
            readable = [chan] + ([stdin_fd] if stdin_fd is not None else [])
            ready, _, _ = select.select(readable, [], [], 0.5)
            if chan in ready or chan.recv_ready() or chan.recv_stderr_ready():
                while chan.recv_stderr_ready():
                    stderr.write(chan.recv_stderr(65536))
                    stderr.flush()
                if chan.recv_ready():
                    data = chan.recv(65536)
                    if data:
                        stdout.write(data)
                        stdout.flush()
            if stdin_fd is not None and stdin_fd in ready:
                data = os.read(stdin_fd, 4096)
                if data:
                    chan.sendall(data)
                else:
                    if not chan.exit_status_ready():  # (see `_exec`)
                        chan.shutdown_write()
                    stdin_fd = None
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                return chan.recv_exit_status()
