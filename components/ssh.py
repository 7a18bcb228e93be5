"""Reaching a host over SSH: where and as whom (`SSHTarget`, plain data safe to pickle into provider state), the
host-key policy (strict, or OpenSSH's accept-new), and connecting with every failure translated into one line
that names the host and says what to check.

paramiko is imported when a connection is opened (or an SSH config file is read), not with this module: the program
and a preview or no-op `up` never connect, and importing it costs about a tenth of a second."""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import AuthenticationFailed, ConfigError, HostKeyRejected, HostUnreachable

if TYPE_CHECKING:
    import paramiko

CONNECT_TIMEOUT_S = 15
KEEPALIVE_S = 15  # a connection asks the host for an answer this often (OpenSSH's ServerAliveInterval)...
ANSWER_S = 45  # ...and is closed when none came in this long (its ServerAliveCountMax of 3): a host gone silent


@dataclass(frozen=True)
class SSHTarget:
    """Plain data: what it takes to reach one host. Safe to pickle into provider state."""
    host: str
    port: int = 22
    user: str = "root"
    keys: tuple[str, ...] = ()
    known_hosts: str | None = None
    host_key_policy: str = "strict"  # or "accept-new"
    proxy: str | None = None  # a jump host, [user@]host[:port] (user default: root, as Kamal's)
    proxy_command: str | None = None  # a command whose stdin/stdout is the connection (%h %p %r)
    keys_only: bool = False  # only `keys` and `key_data`, not the SSH agent's
    address: str | None = None  # where `host` is, where an SSH config file names another HostName for it
    key_data: tuple[str, ...] = ()  # private keys themselves (PEM or OpenSSH), tried before `keys`; a secret

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SSHTarget":
        return cls(host=data["host"], port=int(data.get("port", 22)), user=data.get("user", "root"),
                   keys=tuple(data.get("keys") or ()), known_hosts=data.get("known_hosts"),
                   host_key_policy=data.get("host_key_policy", "strict"), proxy=data.get("proxy"),
                   proxy_command=data.get("proxy_command"), keys_only=bool(data.get("keys_only")),
                   address=data.get("address"), key_data=tuple(data.get("key_data") or ()))

    def to_dict(self) -> dict[str, Any]:
        """Plain data; proxy, keys_only, address and key_data only where set, so targets without them read as they
        always did."""
        return {"host": self.host, "port": self.port, "user": self.user, "keys": list(self.keys),
                "known_hosts": self.known_hosts, "host_key_policy": self.host_key_policy,
                **({"proxy": self.proxy} if self.proxy else {}),
                **({"proxy_command": self.proxy_command} if self.proxy_command else {}),
                **({"keys_only": True} if self.keys_only else {}),
                **({"address": self.address} if self.address else {}),
                **({"key_data": list(self.key_data)} if self.key_data else {})}

    def jump(self) -> "SSHTarget | None":
        """The jump host, reached as this host is (keys, known_hosts, policy) with its own user and port."""
        if not self.proxy:
            return None
        user, _, rest = self.proxy.rpartition("@")
        host, _, port = rest.partition(":")
        return SSHTarget(host=host, port=int(port or 22), user=user or "root", keys=self.keys,
                         known_hosts=self.known_hosts, host_key_policy=self.host_key_policy, keys_only=self.keys_only,
                         key_data=self.key_data)

    def __str__(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


class _AcceptNewPolicy:
    """OpenSSH's `StrictHostKeyChecking=accept-new`: remember unknown hosts, still refuse changed keys (paramiko
    raises BadHostKeyException for those before a policy is consulted). A paramiko missing-host-key policy: the one
    method paramiko calls."""

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


DEFAULT_CONFIG_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")  # OpenSSH's, which Kamal reads by default


def target_of(settings: Any, host: str, *, port: int | None = None, user: str | None = None,
              base: Path | None = None, secrets: Mapping[str, str] | None = None) -> SSHTarget:
    """How `host` is reached with a stack's `ssh` settings (`configtypes.SSH`): `port`/`user` where the host has
    its own (a build host's login), relative paths against `base` where given, `key_data` (secret names) as the
    keys `secrets` hold. With `config` (true: OpenSSH's files; or the files named), what those files say of the
    host fills in what the stack leaves open - as Kamal
    (Net::SSH) reads them: the host's HostName, IdentityFile (unless `keys`), ProxyJump or ProxyCommand (unless a
    proxy), IdentitiesOnly and UserKnownHostsFile (unless `known_hosts`). User and Port stay the stack's, as in
    Kamal, which always passes both."""
    def path(p: str) -> str:
        p = os.path.expanduser(p)
        return p if base is None or os.path.isabs(p) else str(base / p)
    t = SSHTarget(host=host, port=port or settings.port, user=user or settings.user,
                  keys=tuple(path(k) for k in settings.keys) if base else tuple(settings.keys),
                  known_hosts=(path(settings.known_hosts) if base else settings.known_hosts)
                  if settings.known_hosts else None,
                  host_key_policy=settings.host_key_policy, proxy=settings.proxy,
                  proxy_command=settings.proxy_command, keys_only=settings.keys_only,
                  key_data=tuple((secrets or {})[name] for name in settings.key_data))
    files = DEFAULT_CONFIG_FILES if settings.config is True else settings.config or ()
    return with_config(t, tuple(path(f) if base else os.path.expanduser(f) for f in files))


def with_config(t: SSHTarget, files: tuple[str, ...]) -> SSHTarget:
    """`t` with what OpenSSH config `files` (those that exist) say of its host (see `target_of`)."""
    present = [f for f in (os.path.expanduser(f) for f in files) if os.path.isfile(f)]
    if not present:
        return t  # nothing to read: paramiko is not even imported
    import paramiko
    conf = paramiko.SSHConfig()
    for f in present:
        try:
            with open(f) as fh:
                conf.parse(fh)
        except (OSError, paramiko.ConfigParseError) as exc:
            raise ConfigError("ssh.config", f"{f} cannot be read as an OpenSSH config file ({exc}): fix it, or set "
                                            f"ssh.config to the files to read (false: none)") from None
    found = conf.lookup(t.host)
    changes: dict[str, Any] = {}
    if found.get("hostname") and found["hostname"] != t.host:
        changes["address"] = found["hostname"]
    if not t.keys and found.get("identityfile"):
        changes["keys"] = tuple(found["identityfile"])
    if not (t.proxy or t.proxy_command):
        if str(found.get("proxyjump", "none")).lower() != "none":
            changes["proxy"] = found["proxyjump"].split(",")[0]
        elif str(found.get("proxycommand", "none")).lower() != "none":
            changes["proxy_command"] = found["proxycommand"]
    if not t.keys_only and str(found.get("identitiesonly", "")).lower() == "yes":
        changes["keys_only"] = True
    if t.known_hosts is None and found.get("userknownhostsfile"):
        changes["known_hosts"] = os.path.expanduser(found["userknownhostsfile"].split()[0])
    return dataclasses.replace(t, **changes) if changes else t


def _socket(t: SSHTarget) -> tuple[Any, paramiko.SSHClient | None]:
    """The stream to `t`'s sshd, and the jump host's connection it runs through, if any: a TCP connection, a
    channel through the jump host (`proxy`), or a command's stdin/stdout (`proxy_command`)."""
    import paramiko
    where = t.address or t.host
    if t.proxy_command:
        command = t.proxy_command.replace("%h", where).replace("%p", str(t.port)).replace("%r", t.user)
        return paramiko.ProxyCommand(command), None
    jump = t.jump()
    if jump is not None:
        via = connect(jump)
        try:
            transport = via.get_transport()
            assert transport is not None
            return transport.open_channel("direct-tcpip", (where, t.port), ("127.0.0.1", 0),
                                          timeout=CONNECT_TIMEOUT_S), via
        except paramiko.ChannelException as exc:
            via.close()
            raise HostUnreachable(str(t), f"jump host {t.proxy} cannot reach SSH port {t.port} ({exc}): check "
                                          f"the address and ssh.port as seen from {jump.host}") from None
        except BaseException:
            via.close()
            raise
    sock = socket.create_connection((where, t.port), timeout=CONNECT_TIMEOUT_S)
    # Docker API requests go as a header then a body: without this, Nagle's algorithm holds the body until the
    # host's delayed ACK of the header (about 40 ms per request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, None


@functools.cache
def _client_class() -> type:
    import paramiko

    class Client(paramiko.SSHClient):
        """A connection that closes the jump host's connection it runs through with its own."""
        via: paramiko.SSHClient | None = None

        def close(self) -> None:
            super().close()
            if self.via is not None:
                self.via.close()
    return Client


def _private_keys(t: SSHTarget) -> list[paramiko.PKey]:
    """`t.key_data` as paramiko's keys. One it cannot read fails in one line naming its place, never its text."""
    import paramiko
    out = []
    for i, data in enumerate(t.key_data):
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                out.append(kind.from_private_key(io.StringIO(data)))
                break
            except paramiko.PasswordRequiredException:
                raise AuthenticationFailed(str(t), f"ssh.key_data[{i}] is a private key with a passphrase: give it "
                                                   f"without one (as Kamal needs it), or as a file in ssh.keys "
                                                   f"with the SSH agent holding it") from None
            except (paramiko.SSHException, ValueError, TypeError, IndexError):
                continue
        else:
            raise AuthenticationFailed(str(t), f"ssh.key_data[{i}] is not a private key in PEM or OpenSSH form "
                                               f"(RSA, ECDSA or Ed25519): check the secret it names") from None
    return out


_known: dict[str, tuple[tuple[int, int, int], Any, dict[str, dict[str, Any]]]] = {}  # path: stamp, keys, found
_known_lock = threading.Lock()


def known_keys(path: str, name: str) -> dict[str, paramiko.PKey]:
    """The host keys a known_hosts file holds for `name` (as paramiko looks a server up: `host`, or `[host]:port`
    off port 22), by key type. The file is read again only when it changed: a user's own file of a few hundred
    hashed lines costs tens of milliseconds to read and search, which every connection paid."""
    import paramiko
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _known_lock:
        cached = _known.get(path)
        if cached is None or cached[0] != stamp:
            cached = _known[path] = (stamp, paramiko.HostKeys(path), {})
        _, keys, found = cached
        if name not in found:
            found[name] = dict(keys.lookup(name) or {})
        return found[name]


def connect(t: SSHTarget) -> paramiko.SSHClient:
    import paramiko
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    ssh = _client_class()()
    known = os.path.expanduser(t.known_hosts or "~/.ssh/known_hosts")
    where = t.address or t.host
    if os.path.exists(known):
        name = where if t.port == 22 else f"[{where}]:{t.port}"
        for kind, key in known_keys(known, name).items():
            ssh.get_host_keys().add(name, kind, key)
    ssh.set_missing_host_key_policy(_AcceptNewPolicy(known) if t.host_key_policy == "accept-new"
                                    else paramiko.RejectPolicy())
    shown = t.known_hosts or "~/.ssh/known_hosts"
    pkeys: list[paramiko.PKey | None] = [*_private_keys(t)] or [None]
    # a key file that is not there is passed over (as OpenSSH and Kamal do), and named if the login then fails
    files = [os.path.expanduser(k) for k in t.keys]
    missing = [k for k, f in zip(t.keys, files) if not os.path.isfile(f)]
    absent = f"; not on this machine: {', '.join(missing)} (ssh.keys)" if missing else ""
    try:
        for n, pkey in enumerate(pkeys):  # paramiko offers one key of its own: each of several is one attempt
            sock, ssh.via = _socket(t)
            try:
                ssh.connect(hostname=where, port=t.port, username=t.user, timeout=CONNECT_TIMEOUT_S,
                            sock=sock, banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S, pkey=pkey,
                            key_filename=[f for f in files if os.path.isfile(f)] or None,
                            look_for_keys=not (t.keys or t.key_data or t.keys_only), allow_agent=not t.keys_only)
                break
            except BaseException as exc:
                ssh.close()
                sock.close()
                if not isinstance(exc, paramiko.AuthenticationException) or n == len(pkeys) - 1:
                    raise
    except paramiko.BadHostKeyException:
        raise HostKeyRejected(str(t), f"its SSH host key does not match the one in {shown}. If the host was "
                                      f"rebuilt, remove its old line from {shown} and add the new key; otherwise "
                                      f"someone may be intercepting the connection") from None
    except paramiko.AuthenticationException as exc:
        keys = "ssh.keys and ssh.key_data" if t.key_data else "ssh.keys"
        raise AuthenticationFailed(str(t), f"SSH login as {t.user} was refused ({exc}): check ssh.user and "
                                           f"{keys}{absent}") from None
    except paramiko.SSHException as exc:
        if "No authentication methods available" in str(exc):  # no key to offer, no agent
            raise AuthenticationFailed(str(t), f"no SSH key to log in as {t.user} with{absent}: set ssh.keys (or "
                                               f"ssh.key_data), or load a key into the SSH agent") from None
        if "not found in known_hosts" in str(exc):
            raise HostKeyRejected(str(t), f"its SSH host key is not in {shown}: add it (ssh-keyscan, checked out "
                                          f"of band) or set ssh.host_key_policy to accept-new") from None
        said = str(exc).replace("protocol banner[", "protocol banner: [")  # paramiko's words run into the cause's
        raise HostUnreachable(str(t), f"SSH failed: {said}: check that sshd runs there and the network") from None
    except (OSError, EOFError) as exc:
        raise HostUnreachable(str(t), f"cannot connect to SSH port {t.port}: "
                                      f"{getattr(exc, 'strerror', None) or exc or 'connection closed'}: check the "
                                      f"address, ssh.port and the firewall") from None
    transport = ssh.get_transport()
    if transport is not None:
        threading.Thread(target=_watch, args=(transport,), name=f"ssh-alive-{t}", daemon=True).start()
    return ssh


def _watch(transport: "paramiko.Transport") -> None:
    """While the connection is open: every KEEPALIVE_S a request the host must answer (OpenSSH answers
    `keepalive@openssh.com` with a refusal, which is an answer); none within ANSWER_S closes the connection, so
    what waits on it - a Docker API call, a command - fails at once as a broken connection, naming the host, rather
    than when its own timeout ends (ten minutes for an API call). A host that drops every packet, or a network that
    does, is found this way; TCP alone may wait for hours."""
    while transport.is_active():
        time.sleep(KEEPALIVE_S)
        answered = threading.Event()

        def ask() -> None:
            try:  # paramiko waits for the answer with no timeout of its own: waited for here, with one
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001 - the connection broke: what uses it says so
                pass
            finally:
                answered.set()
        threading.Thread(target=ask, name="ssh-alive-ask", daemon=True).start()
        if not answered.wait(ANSWER_S):
            transport.close()
            return
