"""The Docker API over a host's one owned SSH connection, and what its libraries' errors mean.

Imported by `components.hosts` when the first connection is opened or the first error is translated, never before:
docker-py, requests and paramiko take about a quarter of a second to import, which the program, a preview and a
no-op `up` never need.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass

import docker
import docker.errors
import paramiko
import requests
import requests.exceptions
import urllib3.exceptions
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.transport.basehttpadapter import BaseHTTPAdapter
from docker.transport.sshconn import SSHConnectionPool

from .errors import DockerError, HostError, HostUnreachable
from .ssh import CONNECT_TIMEOUT_S, SSHTarget, connect

API_TIMEOUT_S = 600  # builds and pushes stream for a while
MAX_CHANNELS = 6  # concurrent Docker API connections per host, under sshd's default MaxSessions of 10
MAX_SESSIONS = 10  # sshd's default MaxSessions: session channels (exec, subsystem) open at once per connection
SESSIONS = MAX_SESSIONS - MAX_CHANNELS  # what commands and SFTP may hold at once beside the Docker API


class Sessions:
    """What docker-py's pool opens its channels on: it asks `get_transport()` once, then `open_session()` for each
    HTTP connection. A session sshd refuses for the moment (it frees one only once a channel's close has gone both
    ways) is asked for again, as a command's is (`hosts.open_session`), rather than taken for a broken connection,
    which every other call on the host would lose with it."""

    def __init__(self, ssh: paramiko.SSHClient):
        self.ssh = ssh

    def get_transport(self) -> Sessions:
        return self

    def open_session(self) -> paramiko.Channel:
        from .hosts import open_session
        return open_session(self.ssh, CONNECT_TIMEOUT_S)


class _DockerOverSSH(BaseHTTPAdapter):
    """The Docker API over our SSH connection: each HTTP connection is one session channel running `docker system
    dial-stdio` (what `docker -H ssh://` does). sshd allows 10 sessions per connection (MaxSessions), so the pool
    is bounded and blocks when every channel is busy instead of opening more."""

    def __init__(self, ssh: paramiko.SSHClient):
        super().__init__()
        self.ssh = ssh
        self.pool: SSHConnectionPool | None = None
        self.pool_lock = threading.Lock()

    def get_connection(self, url, proxies=None):
        transport = self.ssh.get_transport()
        if transport is None or not transport.is_active():  # closed since (it broke): docker-py would try a new
            raise requests.exceptions.ConnectionError("the SSH connection is closed")  # one of its own, host None
        with self.pool_lock:
            if self.pool is None:
                self.pool = SSHConnectionPool(ssh_client=Sessions(self.ssh), timeout=API_TIMEOUT_S,
                                              maxsize=MAX_CHANNELS)
                self.pool.block = True
            return self.pool

    def close(self):
        """Drop the pool without closing it: its channels go with the SSH connection, which is closed next, and a
        request waiting for a free channel wakes when one in flight hands its channel back (failing, as the
        connection is gone). A closed pool takes none back: that request would wait for ever."""
        super().close()
        with self.pool_lock:
            self.pool = None


def _api_version(server: str) -> str:
    """The newest API version both this client library and the daemon speak (Docker 20.10 speaks 1.41; Engine 29
    refuses anything below 1.44)."""
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))
    return min(server, DEFAULT_DOCKER_API_VERSION, key=key)


class Connection:
    """One host's SSH connection, owned here: docker-py, SFTP, probes and commands all use it. `sessions` counts
    the session channels commands and SFTP may hold at once (`SESSIONS`), so together with the Docker API's they
    stay within sshd's default MaxSessions."""

    session_count = SESSIONS

    def __init__(self, target: SSHTarget):
        self.target = target
        self.sessions = threading.BoundedSemaphore(self.session_count)
        self.ssh = connect(target)
        adapter = _DockerOverSSH(self.ssh)
        try:
            server = self._server_api_version(adapter)
        except BaseException:  # no daemon to talk to: the login goes too, or every later try would add one
            self.ssh.close()
            raise
        self.docker = self._api_client(adapter, _api_version(server))

    def _server_api_version(self, adapter: _DockerOverSSH) -> str:
        """The daemon's API version. When its channel ends with no answer while SSH is up, the host says why
        (`_no_docker`): a new server without Docker running, or a user who may not use it."""
        from .hosts import docker_errors
        try:
            with docker_errors(self.target, "asking the Docker daemon for its API version"):
                return self._api_client(adapter, MINIMUM_DOCKER_API_VERSION).version(api_version=False)["ApiVersion"]
        except HostUnreachable:
            why = _no_docker(self.ssh, self.target) if self.alive else None
            if why is None:
                raise
            raise why from None

    @staticmethod
    def _api_client(adapter: _DockerOverSSH, version: str) -> docker.APIClient:
        # Start from a Unix socket client that is never used, then route every request over our adapter.
        c = docker.APIClient(base_url="unix:///nonexistent.sock", version=version, timeout=API_TIMEOUT_S)
        # nothing of the deploying machine's environment applies to a request over SSH: no HTTP proxy, no .netrc;
        # looking for them on every request was a tenth of the plugin's CPU
        c.trust_env = False
        c.mount("http+docker://ssh", adapter)
        c.base_url = "http+docker://ssh"
        return c

    @property
    def alive(self) -> bool:
        transport = self.ssh.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.docker.close()
        with contextlib.suppress(Exception):
            self.ssh.close()


# what the host says when its Docker API cannot be reached (`docker system dial-stdio`), and what to do about it
_NOT_RUNNING = "the Docker daemon does not run there: start it (`sudo systemctl enable --now docker`)"
_NO_DOCKER = (("permission denied", "user {user} may not use Docker there: add it to the docker group (`sudo usermod "
                                    "-aG docker {user}`, then log in again) or deploy as root"),
              ("no such file or directory", _NOT_RUNNING),  # its socket is gone
              ("connection refused", _NOT_RUNNING),
              ("cannot connect to the docker daemon", _NOT_RUNNING),
              ("not found", "Docker is not installed there (or not on the PATH of a non-interactive SSH session): "
                            "install Docker Engine"))


def _no_docker(ssh: paramiko.SSHClient, t: SSHTarget) -> DockerError | None:
    """Why the Docker API's channel ended with no answer while SSH is up: it runs `docker system dial-stdio` (as
    `docker -H ssh://` does), so that command, asked for the daemon's ping on its own, says why in its words. One
    line with what to do; None when it answers after all (the failure was something else)."""
    from .hosts import open_session, output
    ping = """sh -c 'printf "GET /_ping HTTP/1.0\\r\\n\\r\\n" | docker system dial-stdio'"""  # whatever the login shell
    try:
        chan = open_session(ssh, CONNECT_TIMEOUT_S)
        try:
            status, out = output(chan, ping, CONNECT_TIMEOUT_S)
        finally:
            chan.close()
    except Exception:  # noqa: BLE001 - no better answer than the failure itself
        return None
    if status == 0:
        return None
    said = (out.splitlines() or [f"exit status {status}"])[-1][:300]
    what = next((w.format(user=t.user) for words, w in _NO_DOCKER if words in said.lower()),
                "check that Docker runs there and that this user may use it")
    return DockerError(str(t), f"the Docker daemon cannot be reached over SSH: `docker system dial-stdio` says: "
                               f"{said}; {what}, then run `pulumi up` again")


def saved_image(c: docker.APIClient, image: str) -> requests.Response:
    """`docker save` of one image: the daemon's response, to read (`iter_content`) and then close, read to its end or
    not. docker-py's `get_image` keeps its response in a generator, which gives its API channel back only once
    closed or collected: one whose receiving host failed was still referenced by that failure (its traceback) until
    every copy of the image had ended, and six such left none for the copies still waiting for one."""
    r = c.get(f"{c.base_url}/v{c.api_version}/images/{urllib.parse.quote(image, safe='/:')}/get", stream=True,
              timeout=API_TIMEOUT_S)
    try:
        r.raise_for_status()
    except requests.exceptions.HTTPError as e:
        with contextlib.closing(r):
            docker.errors.create_api_error_from_http_exception(e)  # raises docker-py's own error for it
    return r


_BROKEN = (paramiko.SSHException, EOFError, ConnectionError, socket.timeout, TimeoutError,
           requests.exceptions.ConnectionError, requests.exceptions.Timeout,
           requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError)


@dataclass(frozen=True)
class Translated:
    error: HostError
    broken: bool  # the connection is gone: drop it


def translate(target: SSHTarget, doing: str, exc: Exception) -> Translated | None:
    """What an error raised while `doing` something on `target` means, in the project's error tree; None for an
    error that is not about the host (a bug: it keeps its traceback)."""
    if isinstance(exc, docker.errors.APIError):
        said = str(exc.explanation or exc)
        return Translated(DockerError(str(target), f"{doing} failed: {said}{_what_to_do(said)}"), False)
    if isinstance(exc, docker.errors.DockerException):
        return Translated(DockerError(str(target), f"{doing} failed: {exc}"), False)
    if isinstance(exc, paramiko.ChannelException):  # sshd refused a channel: the connection itself is fine
        return Translated(HostError(str(target), f"{doing} failed: sshd refused another SSH session "
                                                 f"({_short(exc)}): it allows MaxSessions per connection (10 by "
                                                 f"default); nothing after that point was done: run fewer deploys "
                                                 f"against this host at once, or raise MaxSessions in its "
                                                 f"sshd_config"), False)
    if isinstance(exc, _BROKEN):
        return Translated(HostUnreachable(str(target), f"the connection broke while {doing} "
                                                       f"({type(exc).__name__}: {_short(exc)}); nothing after that "
                                                       f"point was done: run `pulumi up` again when the host is "
                                                       f"reachable"), True)
    if isinstance(exc, PermissionError):
        return Translated(HostError(str(target), f"{doing} failed: permission denied ({_short(exc)}): check that "
                                                 f"ssh.user may do this on the host"), False)
    if isinstance(exc, OSError):
        return Translated(HostError(str(target), f"{doing} failed: {_short(exc)}"), False)
    return None


def _what_to_do(said: str) -> str:
    """What to do about the daemon's refusals a user meets most, which it says in its own words only."""
    low = said.lower()
    if "address already in use" in low or "port is already allocated" in low:
        m = re.search(r"(?:\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]*\]):(\d+)", said)  # the address it was to bind
        port = f"port {m[1]}" if m else "the port"
        return f"; {port} is taken on the host by something else: free it, or publish on another port"
    if ("not found" in low or "manifest unknown" in low) and ("pull" in low or "reference" in low
                                                              or "manifest" in low):
        return "; check the image's name and tag, and that the registry has it"
    return ""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
