"""The one place that talks to hosts: SSH (paramiko) carrying the Docker API (docker-py).

Connections are opened inside provider methods, never stored in a provider, and cached per process keyed by the
SSH target, so one `pulumi up` opens one SSH connection per host however many resources live there. Every
paramiko and docker error is translated here into the `components.errors` tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import docker
import docker.errors
import paramiko
from docker.transport import SSHHTTPAdapter

from .errors import AuthenticationFailed, DockerError, HostKeyRejected, HostUnreachable

T = TypeVar("T")

DOCKER_API_VERSION = "1.41"  # Docker Engine 20.10 and newer
CONNECT_TIMEOUT_S = 15
API_TIMEOUT_S = 600  # builds and pushes stream for a while
MAX_CHANNELS = 6  # concurrent Docker API connections per host, under sshd's default MaxSessions of 10


@dataclass(frozen=True)
class SSHTarget:
    """Plain data: what it takes to reach one host. Safe to pickle into provider state."""
    host: str
    port: int = 22
    user: str = "root"
    keys: tuple[str, ...] = ()
    known_hosts: str | None = None
    host_key_policy: str = "strict"  # or "accept-new"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SSHTarget":
        return cls(host=data["host"], port=int(data.get("port", 22)), user=data.get("user", "root"),
                   keys=tuple(data.get("keys") or ()), known_hosts=data.get("known_hosts"),
                   host_key_policy=data.get("host_key_policy", "strict"))

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "keys": list(self.keys),
                "known_hosts": self.known_hosts, "host_key_policy": self.host_key_policy}

    def __str__(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's `StrictHostKeyChecking=accept-new`: remember unknown hosts, still refuse changed keys (paramiko
    raises BadHostKeyException for those before a policy is consulted)."""

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _Adapter(SSHHTTPAdapter):
    """docker-py's SSH transport (channels running `docker system dial-stdio`), with the SSH client configured
    from an SSHTarget instead of ~/.ssh/config alone."""

    def __init__(self, target: SSHTarget):
        self._target = target
        super().__init__(f"ssh://{target.user}@{target.host}:{target.port}", timeout=API_TIMEOUT_S,
                         pool_connections=1, max_pool_size=MAX_CHANNELS)

    def get_connection(self, *args, **kwargs):
        # Each HTTP connection is one SSH session channel; sshd allows 10 per connection (MaxSessions). docker-py's
        # pool opens a new one whenever all are busy and never bounds them; a blocking pool waits instead.
        pool = super().get_connection(*args, **kwargs)
        pool.block = True
        return pool

    def _create_paramiko_client(self, base_url):
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        t = self._target
        client = paramiko.SSHClient()
        known = os.path.expanduser(t.known_hosts or "~/.ssh/known_hosts")
        if os.path.exists(known):
            client.load_host_keys(known)
        if t.host_key_policy == "accept-new":
            client.set_missing_host_key_policy(_AcceptNewPolicy(known))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.ssh_client = client
        self.ssh_params = {
            "hostname": t.host, "port": t.port, "username": t.user, "timeout": CONNECT_TIMEOUT_S,
            "banner_timeout": CONNECT_TIMEOUT_S, "auth_timeout": CONNECT_TIMEOUT_S,
            "key_filename": [os.path.expanduser(k) for k in t.keys] or None,
            "look_for_keys": not t.keys, "allow_agent": True,
        }

    def _connect(self):
        t = self._target
        known = t.known_hosts or "~/.ssh/known_hosts"
        try:
            self.ssh_client.connect(**self.ssh_params)
        except paramiko.BadHostKeyException:
            raise HostKeyRejected(str(t), f"its SSH host key does not match the one in {known}. If the host was "
                                          f"rebuilt, remove its old line from {known} and add the new key; "
                                          f"otherwise someone may be intercepting the connection") from None
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(str(t), f"SSH login as {t.user} was refused ({exc}): check ssh.user and "
                                               f"ssh.keys") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyRejected(str(t), f"its SSH host key is not in {known}: add it (ssh-keyscan, checked "
                                              f"out of band) or set ssh.host_key_policy to accept-new") from None
            raise HostUnreachable(str(t), f"SSH failed: {exc}") from None
        except (OSError, socket.timeout) as exc:
            raise HostUnreachable(str(t), f"cannot connect to SSH port {t.port}: {exc.strerror or exc}: check "
                                          f"the address, ssh.port and the firewall") from None


class _Client(docker.APIClient):
    def __init__(self, target: SSHTarget):
        # Start from a Unix socket client that is never used, then route every request over our adapter.
        super().__init__(base_url="unix:///nonexistent.sock", version=DOCKER_API_VERSION, timeout=API_TIMEOUT_S)
        self._custom_adapter = _Adapter(target)
        self.mount("http+docker://ssh", self._custom_adapter)
        self.base_url = "http+docker://ssh"


_clients: dict[SSHTarget, docker.APIClient] = {}
_lock = threading.Lock()


def client(target: SSHTarget) -> docker.APIClient:
    """The Docker API client for `target`, opened once per process."""
    with _lock:
        c = _clients.get(target)
        if c is not None and c._custom_adapter.ssh_client.get_transport() is not None \
                and c._custom_adapter.ssh_client.get_transport().is_active():
            return c
        c = _Client(target)
        _clients[target] = c
        return c


def close_all() -> None:
    with _lock:
        for c in _clients.values():
            with contextlib.suppress(Exception):
                c.close()
        _clients.clear()


@contextlib.contextmanager
def docker_errors(target: SSHTarget, doing: str) -> Iterator[None]:
    """Translate docker/paramiko errors raised while `doing` something on `target`."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerError(str(target), f"{doing} failed: {exc.explanation or exc}") from None
    except docker.errors.DockerException as exc:
        raise DockerError(str(target), f"{doing} failed: {exc}") from None
    except paramiko.SSHException as exc:
        raise HostUnreachable(str(target), f"the SSH connection broke while {doing}: {exc}") from None
    except (ConnectionError, socket.timeout) as exc:
        raise HostUnreachable(str(target), f"the connection broke while {doing}: {exc}") from None


def or_none(call: Callable[..., T], *args: Any) -> T | None:
    """The result of a Docker lookup (inspect_image, inspect_container, ...), or None if there is no such object."""
    try:
        return call(*args)
    except docker.errors.NotFound:
        return None


def http_probe(target: SSHTarget, address: str, port: int, path: str, timeout: float) -> tuple[int | None, str]:
    """GET http://address:port/path as seen from the host itself, through an SSH `direct-tcpip` channel (the way
    `ssh -L` forwards), so it reaches container addresses on the host's Docker networks whatever the app image
    contains. Returns (status or None, a one-line description of the answer or the failure)."""
    transport = client(target)._custom_adapter.ssh_client.get_transport()
    try:
        chan = transport.open_channel("direct-tcpip", (address, int(port)), ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError) as exc:
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
    except (socket.timeout, OSError) as exc:
        return None, f"no answer from {address}:{port}{path} within {timeout:g}s ({exc or 'timeout'})"
    finally:
        chan.close()
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return int(parts[1]), f"{status_line} from {address}:{port}{path}"
    return None, f"not an HTTP answer from {address}:{port}{path}: {status_line[:80]!r}"


def exec_in(target: SSHTarget, container: str, argv: list[str]) -> tuple[int, str]:
    """Run argv in a running container on the host; returns (exit code, combined output)."""
    c = client(target)
    with docker_errors(target, f"running `{' '.join(argv[:2])}` in {container}"):
        exec_id = c.exec_create(container, argv, stdout=True, stderr=True)["Id"]
        output = c.exec_start(exec_id).decode(errors="replace")
        code = c.exec_inspect(exec_id)["ExitCode"]
    return int(code if code is not None else -1), output.strip()


@contextlib.contextmanager
def _sftp(target: SSHTarget, doing: str) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on the host's cached SSH connection, closed afterwards; errors translated."""
    with docker_errors(target, doing):
        sftp = client(target)._custom_adapter.ssh_client.open_sftp()
        try:
            yield sftp
        finally:
            sftp.close()


def home(target: SSHTarget) -> str:
    """The SSH user's home directory on the host: where relative state paths live."""
    with _sftp(target, "finding the home directory") as sftp:
        return sftp.normalize(".")


def _makedirs(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    parts = [p for p in path.split("/") if p]
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = f"{current}{part}" if current in ("", "/") else f"{current}/{part}"
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current, mode)


def write_file(target: SSHTarget, path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file on the host (parent directories 0700), readable per `mode` only: created with the mode before
    any byte is written, so a secret is never readable by others, not even for a moment."""
    with _sftp(target, f"writing {path}") as sftp:
        _makedirs(sftp, path.rsplit("/", 1)[0], 0o700)
        tmp = f"{path}.tmp"
        with sftp.open(tmp, "wb") as fh:
            fh.chmod(mode)
            fh.write(data)
        sftp.posix_rename(tmp, path)


def make_dir(target: SSHTarget, path: str, mode: int = 0o755) -> None:
    with _sftp(target, f"creating {path}") as sftp:
        _makedirs(sftp, path, mode)


def remove_file(target: SSHTarget, path: str) -> None:
    with _sftp(target, f"removing {path}") as sftp:
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass


def file_mode(target: SSHTarget, path: str) -> int | None:
    with _sftp(target, f"inspecting {path}") as sftp:
        try:
            return sftp.stat(path).st_mode & 0o777
        except FileNotFoundError:
            return None
