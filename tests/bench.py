"""The test bench: Docker hosts reachable only over SSH, and a registry they share.

Each host is a network namespace of its own with a veth pair into the root namespace, and a mount namespace of its
own in which the host's home (/root, the SSH user's) and /tmp are directories of that host only: a file written over
SSH to host 1 is not on host 2. In it run the host's own `dockerd` (own data-root, exec-root, socket, pidfile), which
so sees the same files as SSH sessions (bind mounts of uploaded files), and its own `sshd` (own host key, key auth
only) whose sessions get `DOCKER_HOST` pointing at that host's daemon, so `docker system dial-stdio` - what
docker-py's SSH transport runs - reaches it. A `docker-registry` listens on an address of the root namespace that
every host routes to, and every daemon trusts it. Base images that tests build FROM are seeded into each daemon and
into the registry. A toxiproxy server (the fault proxy, `tests.faults`) on that address has one proxy per host to
its sshd, through which tests add latency or cut connections.

Used by the pytest fixtures (session scope) and by `python -m tests.bench up|down|info|in-use` (for `make demo`).
Nothing here is product code: the product reaches these hosts exactly as it reaches real ones, by SSH address.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REGISTRY_PORT = 5000
AUTH_REGISTRY_PORT = 5001  # a second registry that wants a password (htpasswd)
AUTH_REGISTRY_USER = "deployer"
OPERATOR_USER = "operator"  # the operator's own login for the registry that wants a password: never a stack's
HUB_PORT = 5002  # the Docker Hub stand-in, every daemon's registry mirror
SSH_USER = "deploy"  # how tests reach the hosts: a user in the `docker` group, not root
HOST_COUNT = 2
FAULT_PROXY_API_PORT = 8474  # toxiproxy's HTTP API, on the bench's root address
FAULT_PROXY_PORT = 2222  # host i's sshd through the fault proxy: <net>.0.<100+i>:2222, an address of its own
REPO = Path(__file__).resolve().parent.parent
# Two benches can run side by side: `demo` (for `make demo`, left running) and `test` (started and purged by the
# test session). Each has its own namespaces, addresses, registry and state. Keys, known_hosts, configs, logs and
# data live in the repository's .bench/<name>/ (ignored by git), so stack configs can name the key as
# `.bench/demo/id_ed25519`; sockets and exec-roots live under a short path (Unix sockets max 107 bytes).
# `test2` is a second test bench, for a second checkout testing on the same machine; `bench` is the benchmark's
# (`make benchmark`), started with as many hosts as it measures.
PROFILES = {"demo": ("sb", "10.213"), "test": ("st", "10.214"), "test2": ("su", "10.216"),
            "bench": ("sk", "10.215")}
# What test Dockerfiles build FROM and accessories run; all are the same busybox root filesystem.
BASE_IMAGES = ("busybox:latest", "busybox:1")
# Kamal's proxy, under the name users pull from Docker Hub, made from the kamal-proxy binary `make setup` builds.
PROXY_IMAGE = "basecamp/kamal-proxy:v0.9.2"
# What the Docker Hub stand-in serves, by the names a pull asks a mirror for.
HUB_IMAGES = {f"library/{ref}": ref for ref in BASE_IMAGES} | {PROXY_IMAGE: PROXY_IMAGE}
PROXY_DOCKERFILE = """FROM busybox:latest
COPY kamal-proxy /usr/local/bin/kamal-proxy
RUN echo 'kamal-proxy:x:1000:1000::/home/kamal-proxy:/bin/sh' >> /etc/passwd \\
    && echo 'kamal-proxy:x:1000:' >> /etc/group && mkdir -p /home/kamal-proxy/.config/kamal-proxy \\
    && chown -R kamal-proxy:kamal-proxy /home/kamal-proxy
EXPOSE 80 443
USER kamal-proxy:kamal-proxy
CMD ["kamal-proxy", "run"]
"""
# Bench(dockerd="current") runs the hosts on the current Docker Engine that `make setup` builds (dockerd-current)
# instead of Debian's 20.10, with the floor of API versions that Engine 29.0-29.2 set by default (29.3 lowered it
# to 1.40 again): clients that pin an older version are refused, as on those hosts.
CURRENT_DOCKERD_MIN_API = "1.44"
REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "dockerd", "docker", "sshd", "ssh-keygen", "docker-registry", "busybox",
                  "htpasswd", "kamal-proxy", "toxiproxy-server", "useradd")
# Run in a new mount namespace (inside the host's network namespace) by the process that holds it: gives the host
# its own /root, /tmp and SSH_USER's home (bind mounts of its directories), then sleeps until the bench stops it.
# The bench's own directory is opened first and, if it lies under one of those, mounted back at its path, so the
# host's daemons still find their data and config there. Arguments: bench dir, the host's /root, its /tmp, the
# user's home there, the user's home path, the ready file, the host's resolv.conf.
# The host's resolver answers at once, as a server's does: in the host's network namespace the machine's own resolver
# is out of reach, so every lookup waited out its timeout - a pull of a tag that does not exist failed after the
# daemon's 60 s of lookups of Docker Hub's name, where a server gets Docker Hub's "not found" in a second. Now it is
# refused at once (no resolver listens on the host's loopback) and the pull fails with the mirror's "not found".
HOST_RESOLV_CONF = "nameserver 127.0.0.1\n"
HOST_FS_SCRIPT = """set -eu
if [ -e /etc/resolv.conf ]; then mount --bind "$7" /etc/resolv.conf; fi
exec 3<"$1" 4<"$2" 5<"$3" 6<"$4"
mount -c --bind /proc/self/fd/5 /tmp
mount -c --bind /proc/self/fd/4 /root
mount -c --bind /proc/self/fd/6 "$5"
for covered in /tmp /root "$5"; do
  case "$1/" in "$covered"/*) mkdir -p "$1"; mount -c --bind /proc/self/fd/3 "$1";; esac
done
exec 3<&- 4<&- 5<&- 6<&-
: > "$6"
exec sleep infinity
"""
USER_HOME = f"/home/{SSH_USER}"
PRIVATE_TOPS = {"/root": "root", "/tmp": "tmp", USER_HOME: "home"}  # a host's own directories: fs_dir/<name>


def _which(tool: str) -> str | None:
    """A tool on PATH, in /usr/sbin, or in the project's .venv/bin (where `make setup` links what it builds)."""
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", str(REPO / ".venv/bin")]))


class BenchError(RuntimeError):
    """The bench could not start; the message says what is missing."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int
    user: str
    docker_socket: str
    host_key_pub: str
    proxied_address: str  # the same sshd through the fault proxy (tests.faults); known_hosts has it as [addr]:port
    proxied_port: int
    fs_dir: str  # the directory on this machine that holds the host's own directories (PRIVATE_TOPS)

    def local_path(self, path: str) -> Path:
        """Where the host's file `path` (under /root, /tmp or the SSH user's home) is on this machine: what a test
        reads to check a host's disk without going through the product."""
        for top, name in PRIVATE_TOPS.items():
            if path == top or path.startswith(f"{top}/"):
                return Path(self.fs_dir) / name / path[len(top) + 1:]
        raise ValueError(f"{path}: only {', '.join(PRIVATE_TOPS)} are a bench host's own")


@dataclass(frozen=True)
class BenchInfo:
    root: str
    identity_file: str
    known_hosts: str
    registry: str  # host:port, plain HTTP, trusted by every bench daemon
    auth_registry: str  # the same, but it wants a login: auth_registry_user and auth_registry_password
    auth_registry_user: str
    auth_registry_password: str
    hub: str  # host:port of the Docker Hub stand-in (every daemon's registry mirror)
    operator_docker_config: str  # a DOCKER_CONFIG directory: the deploying side's own login
    operator_password: str  # the operator's own, for auth_registry (as OPERATOR_USER)
    fault_proxy: str  # host:port of toxiproxy's HTTP API
    hosts: tuple[Host, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "BenchInfo":
        data = json.loads(text)
        data["hosts"] = tuple(Host(**h) for h in data["hosts"])
        return cls(**data)


def _run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _wait(what: str, probe, deadline_s: float, log: Path | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.2)
    tail = ""
    if log and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise BenchError(f"{what} did not come up within {deadline_s:.0f}s{tail}")


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def _stop_pidfile(pidfile: Path, deadline_s: float = 20) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pidfile.unlink(missing_ok=True)
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (started by this process): reap it
                break
        except ChildProcessError:
            pass
        if _exited(pid):
            break
        time.sleep(0.1)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    pidfile.unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """Process `pid` is gone, or has exited and waits to be reaped: by init, for a bench another process started
    (`tests.bench up`), which here reaps in its own time - seconds, for each process `down` stops."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _spawn(argv: list[str], log: Path, pidfile: Path | None = None, netns: str | None = None,
           host_of: int | None = None, env: dict[str, str] | None = None) -> int:
    if netns:
        # nsenter --net (not `ip netns exec`): keeps /sys, and with it the cgroups dockerd needs.
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    elif host_of:
        # into the network and mount namespaces of a host (held by process `host_of`)
        argv = ["nsenter", f"--target={host_of}", "--net", "--mount", *argv]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    if pidfile is not None and not pidfile.exists():
        pidfile.write_text(str(proc.pid))
    return proc.pid


class Bench:
    def __init__(self, profile: str = "demo", hosts: int = HOST_COUNT, dockerd: str = "current"):
        self.profile, (self.name, self.net) = profile, PROFILES[profile]
        self.dockerd = dockerd  # "debian" or "current"
        self.root = REPO / ".bench" / profile
        self.run = Path("/run/shipyard-bench") / profile
        self.count = hosts
        self.registry = f"{self.net}.0.1:{REGISTRY_PORT}"
        self.hub = f"{self.net}.0.1:{HUB_PORT}"

    # -- layout -------------------------------------------------------------------------------------------------
    def _hdir(self, i: int) -> Path:
        return self.root / f"host{i}"

    def _rdir(self, i: int) -> Path:
        return self.run / f"host{i}"

    def _netns(self, i: int) -> str:
        return f"{self.name}-h{i}"

    def _addr(self, i: int) -> str:
        return f"{self.net}.{i}.2"

    def _proxied_port(self, i: int) -> int:
        return FAULT_PROXY_PORT

    def _proxied_address(self, i: int) -> str:
        """Each host has an address of its own through the fault proxy (one SSH port for all, as on real fleets)."""
        return f"{self.net}.0.{100 + i}"

    def _root_addresses(self) -> list[str]:
        return [f"{self.net}.0.1"] + [self._proxied_address(i) for i in range(1, self.count + 1)]

    def _fault_proxy_api(self) -> str:
        return f"{self.net}.0.1:{FAULT_PROXY_API_PORT}"

    def fault_proxies(self) -> list[dict[str, object]]:
        """toxiproxy's proxies: one per host, named after it, from the bench's root address to the host's sshd."""
        return [{"name": f"host{i}", "listen": f"{self._proxied_address(i)}:{self._proxied_port(i)}",
                 "upstream": f"{self._addr(i)}:22", "enabled": True} for i in range(1, self.count + 1)]

    def info(self) -> BenchInfo:
        if not all((self._rdir(i) / "sshd.pid").exists() for i in range(1, self.count + 1)):
            raise BenchError(f"the {self.profile} bench is not up: start it with `.venv/bin/python -m tests.bench up "
                             f"--profile {self.profile}`")
        hosts = []
        for i in range(1, self.count + 1):
            d = self._hdir(i)
            hosts.append(Host(name=f"host{i}", address=self._addr(i), port=22, user=SSH_USER,
                              docker_socket=str(self._rdir(i) / "docker.sock"),
                              host_key_pub=(d / "ssh_host_ed25519_key.pub").read_text().strip(),
                              proxied_address=self._proxied_address(i), proxied_port=self._proxied_port(i),
                              fs_dir=str(d / "fs")))
        return BenchInfo(root=str(self.root), identity_file=str(self.root / "id_ed25519"),
                         known_hosts=str(self.root / "known_hosts"), registry=self.registry,
                         auth_registry=f"{self.net}.0.1:{AUTH_REGISTRY_PORT}", auth_registry_user=AUTH_REGISTRY_USER,
                         auth_registry_password=(self.root / "registry-auth" / "password").read_text(),
                         hub=self.hub, operator_docker_config=str(self.root / "operator-docker"),
                         operator_password=(self.root / "registry-auth" / "operator-password").read_text(),
                         fault_proxy=self._fault_proxy_api(), hosts=tuple(hosts))

    # -- start ----------------------------------------------------------------------------------------------------
    def check_tools(self) -> None:
        missing = [t for t in REQUIRED_TOOLS if not _which(t)]
        if missing:
            raise BenchError(f"the bench needs {', '.join(missing)}: run `make setup` (as root)")
        if os.geteuid() != 0:
            raise BenchError("the bench makes network namespaces and starts dockerd: run it as root")

    def up(self) -> BenchInfo:
        self.check_tools()
        self.root.mkdir(parents=True, exist_ok=True)
        self._client_key()
        self._ssh_user()
        self._registry()
        for i in range(1, self.count + 1):
            self._network(i)
            self._host_fs(i)
            self._dockerd(i)
            self._sshd(i)
        self._known_hosts()
        self._fault_proxy()
        self._seed_hub()
        self._operator_login()
        info = self.info()
        (self.root / "bench.json").write_text(info.to_json())
        return info

    def _client_key(self) -> None:
        key = self.root / "id_ed25519"
        if not key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-deployer", "-f", str(key))

    def _ssh_user(self) -> None:
        """SSH_USER on this machine (the hosts share its accounts): in the `docker` group, able to log in with a key
        (`*`: no password, not locked - sshd without PAM refuses a locked account)."""
        if _run("id", "-u", SSH_USER, check=False).returncode != 0:
            _run(_which("useradd"), "--no-create-home", "--home-dir", USER_HOME, "--shell", "/bin/sh", "--groups",
                 "docker", "--password", "*", SSH_USER)
        Path(USER_HOME).mkdir(mode=0o755, exist_ok=True)  # where each host mounts its own

    def _registry(self) -> None:
        # The registries' address sits on the root namespace's loopback: local to this machine, and reachable
        # from every host namespace through its veth and default route.
        have = _run("ip", "-o", "addr", "show", "dev", "lo").stdout
        for address in self._root_addresses():
            if f" {address}/32 " not in have:
                _run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        self._serve_registry("registry", REGISTRY_PORT, auth=None)
        self._serve_registry("registry-auth", AUTH_REGISTRY_PORT, auth=self._htpasswd())
        self._serve_registry("hub", HUB_PORT, auth=None)

    def _htpasswd(self) -> Path:
        """The stacks' user and the operator's own, each with a password of its own."""
        d = self.root / "registry-auth"
        d.mkdir(exist_ok=True)
        users = {AUTH_REGISTRY_USER: d / "password", OPERATOR_USER: d / "operator-password"}
        if not all(p.exists() for p in users.values()) or not (d / "htpasswd").exists():
            lines = []
            for user, password in users.items():
                # bcrypt, the only hash the registry's htpasswd auth accepts, made by Apache's htpasswd
                # (apache2-utils): Python's `crypt` is gone since 3.13 and the standard library has no other
                # bcrypt. The password goes through stdin, never argv.
                secret = os.urandom(12).hex()
                lines.append(_run(_which("htpasswd"), "-niB", user, input=secret).stdout.strip())
                password.write_text(secret)
            (d / "htpasswd").write_text("\n".join(lines) + "\n")
        return d / "htpasswd"

    def _operator_login(self) -> None:
        """The deploying side's own Docker login (a DOCKER_CONFIG directory): valid for the registry that wants a
        password, as OPERATOR_USER, and for the others and Docker Hub too, as an operator's config would be."""
        d = self.root / "operator-docker"
        d.mkdir(exist_ok=True)
        secret = (self.root / "registry-auth" / "operator-password").read_text()
        token = base64.b64encode(f"{OPERATOR_USER}:{secret}".encode()).decode()
        servers = (f"{self.net}.0.1:{AUTH_REGISTRY_PORT}", self.registry, self.hub, "https://index.docker.io/v1/")
        (d / "config.json").write_text(json.dumps({"auths": {s: {"auth": token} for s in servers}}, indent=2))

    def _serve_registry(self, name: str, port: int, auth: Path | None) -> None:
        d = self.root / name
        d.mkdir(exist_ok=True)
        pidfile = d / "pid"
        if _alive(pidfile):
            return
        (d / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.net}.0.1:{port}\n"
            + (f"auth:\n  htpasswd:\n    realm: bench\n    path: {auth}\n" if auth else "")
        )
        pidfile.unlink(missing_ok=True)
        _spawn(["docker-registry", "serve", str(d / "config.yml")], d / "log", pidfile)
        _wait(name, lambda: _run("bash", "-c", f"exec 3<>/dev/tcp/{self.net}.0.1/{port}",
                                 check=False).returncode == 0, 20, d / "log")

    def _network(self, i: int) -> None:
        ns, outer, inner = self._netns(i), f"{self.name}-h{i}o", f"{self.name}-h{i}i"
        if _run("ip", "netns", "exec", ns, "true", check=False).returncode == 0:
            return
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", ns)
        _run("ip", "addr", "add", f"{self.net}.{i}.1/24", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        for cmd in (["ip", "addr", "add", f"{self._addr(i)}/24", "dev", inner], ["ip", "link", "set", inner, "up"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", f"{self.net}.{i}.1"]):
            _run("ip", "netns", "exec", ns, *cmd)

    def _host_fs(self, i: int) -> None:
        """Start the process that holds host i's mount namespace (own /root and /tmp), unless it runs."""
        r = self._rdir(i)
        r.mkdir(parents=True, exist_ok=True)
        pidfile, ready = r / "fs.pid", r / "fs.ready"
        if _alive(pidfile) and ready.exists():
            return
        # daemons of this host that run outside such a namespace (an older bench) start again inside the new one
        _stop_pidfile(r / "sshd.pid")
        _stop_pidfile(r / "docker.pid", deadline_s=40)
        _stop_pidfile(pidfile)
        ready.unlink(missing_ok=True)
        fs = self._hdir(i) / "fs"
        for name, mode in (("root", 0o700), ("tmp", 0o1777), ("home", 0o755)):
            (fs / name).mkdir(parents=True, exist_ok=True)
            (fs / name).chmod(mode)
        shutil.chown(fs / "home", SSH_USER, SSH_USER)
        resolv = self.root / "resolv.conf"
        resolv.write_text(HOST_RESOLV_CONF)
        _spawn(["unshare", "--mount", "--propagation", "private", "bash", "-c", HOST_FS_SCRIPT, "bench-host-fs",
                str(self.root), str(fs / "root"), str(fs / "tmp"), str(fs / "home"), USER_HOME, str(ready),
                str(resolv)],
               self._hdir(i) / "fs.log", pidfile, netns=self._netns(i))
        _wait(f"the filesystem of host{i}", ready.exists, 10, self._hdir(i) / "fs.log")

    def _host_pid(self, i: int) -> int:
        return int((self._rdir(i) / "fs.pid").read_text().strip())

    def _cli_api_env(self) -> str:
        """On the current engine, the `docker` command of SSH sessions (Kamal's, `shipyard exec -i`) is Debian's 20.10
        CLI told to speak the engine's lowest API version, as a host's own current CLI would."""
        return f" DOCKER_API_VERSION={CURRENT_DOCKERD_MIN_API}" if self.dockerd == "current" else ""

    def _docker(self, i: int, *args: str, **kw) -> subprocess.CompletedProcess:
        if self.dockerd == "current":  # Debian's CLI says 1.41 unless told; what the bench does with it works at 1.44
            kw["env"] = {**kw.get("env", os.environ), "DOCKER_API_VERSION": CURRENT_DOCKERD_MIN_API}
        return _run("docker", "-H", f"unix://{self._rdir(i) / 'docker.sock'}", *args, **kw)

    def _dockerd(self, i: int) -> None:
        d, r = self._hdir(i), self._rdir(i)
        d.mkdir(parents=True, exist_ok=True)
        r.mkdir(parents=True, exist_ok=True)
        pidfile = r / "docker.pid"
        if not _alive(pidfile):
            pidfile.unlink(missing_ok=True)
            # debug: the daemon logs every API call, which tests count to prove a no-op deploy mutates nothing
            # Docker Hub's images come from the bench's stand-in, the way a mirror serves them
            registries = [self.registry, f"{self.net}.0.1:{AUTH_REGISTRY_PORT}", self.hub]
            (d / "daemon.json").write_text(json.dumps({"insecure-registries": registries,
                                                       "registry-mirrors": [f"http://{self.hub}"], "debug": True}))
            _spawn([*self._dockerd_command(), "--config-file", str(d / "daemon.json"), "--data-root", str(d / "data"),
                    "--exec-root", str(r / "exec"), "-H", f"unix://{r / 'docker.sock'}", "--pidfile", str(pidfile)],
                   d / "dockerd.log", host_of=self._host_pid(i))
        _wait(f"dockerd of host{i}", lambda: self._docker(i, "version", check=False).returncode == 0, 60,
              d / "dockerd.log")

    def _dockerd_command(self) -> list[str]:
        if self.dockerd == "debian":
            return ["dockerd"]
        exe = _which("dockerd-current")
        if not exe:
            raise BenchError("the bench's current Docker Engine (dockerd-current) is missing: run `make setup`")
        # The daemon runs in the host's mount namespace, where /root and /tmp are the host's own: a copy under the
        # bench's directory (which every host sees) instead of the build cache.
        bindir = self.root / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for name, source in (("dockerd", Path(exe).resolve()), ("docker-proxy", Path(exe).resolve().parent /
                                                                  "docker-proxy")):
            if not (bindir / name).exists() or (bindir / name).stat().st_size != source.stat().st_size:
                shutil.copy2(source, bindir / f"{name}.tmp")
                (bindir / f"{name}.tmp").rename(bindir / name)
        # Its own docker-proxy (Debian's predates the flags it passes); Debian's runc 1.1 predates the private time
        # namespace the engine gives containers since 29.5, so that one feature is off.
        return ["env", f"DOCKER_MIN_API_VERSION={CURRENT_DOCKERD_MIN_API}", str(bindir / "dockerd"),
                "--userland-proxy-path", str(bindir / "docker-proxy"), "--feature", "time-namespaces=false"]

    def _sshd(self, i: int) -> None:
        d = self._hdir(i)
        key = d / "ssh_host_ed25519_key"
        if not key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"host{i}", "-f", str(key))
        pidfile = self._rdir(i) / "sshd.pid"
        if _alive(pidfile):
            return
        pidfile.unlink(missing_ok=True)
        auth = d / "authorized_keys"
        shutil.copy(self.root / "id_ed25519.pub", auth)
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd insists on
        (d / "sshd_config").write_text(
            f"ListenAddress {self._addr(i)}\nPort 22\nHostKey {key}\nPidFile {pidfile}\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
            f"SetEnv DOCKER_HOST=unix://{self._rdir(i) / 'docker.sock'}{self._cli_api_env()}\nLogLevel ERROR\n"
        )
        _spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], d / "sshd.log",
               host_of=self._host_pid(i))
        _wait(f"sshd of host{i}", lambda: _run("bash", "-c", f"exec 3<>/dev/tcp/{self._addr(i)}/22",
                                               check=False).returncode == 0, 20, d / "sshd.log")

    def _known_hosts(self) -> None:
        lines = []
        for i in range(1, self.count + 1):
            key = " ".join((self._hdir(i) / "ssh_host_ed25519_key.pub").read_text().split()[:2])
            lines.append(f"{self._addr(i)} {key}")
            # the same key through the fault proxy, in OpenSSH's form for a port other than 22
            lines.append(f"[{self._proxied_address(i)}]:{self._proxied_port(i)} {key}")
        (self.root / "known_hosts").write_text("\n".join(lines) + "\n")

    def _fault_proxy(self) -> None:
        """The toxiproxy server (API and proxies on the bench's root address only) and one proxy per host."""
        from tests.faults import FaultProxy, FaultProxyError
        d = self.root / "toxiproxy"
        d.mkdir(exist_ok=True)
        pidfile, config = d / "pid", d / "proxies.json"
        config.write_text(json.dumps(self.fault_proxies(), indent=2))
        api = FaultProxy(self._fault_proxy_api(), timeout=2)

        def answers() -> bool:
            try:
                api.version()
                return True
            except FaultProxyError:
                return False
        if not _alive(pidfile):
            pidfile.unlink(missing_ok=True)
            _spawn([_which("toxiproxy-server"), "-host", f"{self.net}.0.1", "-port", str(FAULT_PROXY_API_PORT),
                    "-config", str(config)], d / "log", pidfile, env={**os.environ, "LOG_LEVEL": "warn"})
        _wait("toxiproxy", answers, 20, d / "log")
        api.populate(self.fault_proxies())  # a running server keeps its proxies; this adds any that are missing

    def _busybox_rootfs(self) -> Path:
        tar = self.root / "busybox-rootfs.tar"
        if tar.exists():
            return tar
        busybox = shutil.which("busybox")
        applets = _run(busybox, "--list").stdout.split()
        tmp = tar.with_suffix(".tmp")
        with tarfile.open(tmp, "w") as tf:
            def add_dir(name: str, mode: int = 0o755) -> None:
                ti = tarfile.TarInfo(name)
                ti.type, ti.mode = tarfile.DIRTYPE, mode
                tf.addfile(ti)
            for name in ("bin", "etc", "root", "var", "var/www", "www"):
                add_dir(name)
            add_dir("tmp", 0o1777)
            tf.add(busybox, "bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    ti = tarfile.TarInfo(f"bin/{applet}")
                    ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
                    tf.addfile(ti)
            for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
                               ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):
                data = text.encode()
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        tmp.rename(tar)
        return tar

    def _seed_hub(self) -> None:
        """Fill the Docker Hub stand-in (and the registry that wants a password, with busybox) through host 1's
        daemon, then empty that daemon's image store again: every host starts with none."""
        if all(self._has_manifest(self.hub, name) for name in HUB_IMAGES):
            return
        self._docker(1, "import", "-c", 'CMD ["sh"]', str(self._busybox_rootfs()), BASE_IMAGES[0])
        for extra in BASE_IMAGES[1:]:
            self._docker(1, "tag", BASE_IMAGES[0], extra)
        ctx = self.root / "proxy-image"
        ctx.mkdir(exist_ok=True)
        (ctx / "Dockerfile").write_text(PROXY_DOCKERFILE)
        shutil.copy(_which("kamal-proxy"), ctx / "kamal-proxy")
        self._docker(1, "build", "-q", "-t", PROXY_IMAGE, str(ctx), env={**os.environ, "DOCKER_BUILDKIT": "0"})
        login = self.root / "seed-docker-config"  # the bench's own login, never the operator's
        login.mkdir(exist_ok=True)
        auth_registry = f"{self.net}.0.1:{AUTH_REGISTRY_PORT}"
        self._docker(1, "--config", str(login), "login", "-u", AUTH_REGISTRY_USER, "--password-stdin", auth_registry,
                     input=(self.root / "registry-auth" / "password").read_text())
        pushed = {f"{self.hub}/{name}": ref for name, ref in HUB_IMAGES.items()}
        pushed[f"{auth_registry}/library/{BASE_IMAGES[0]}"] = BASE_IMAGES[0]
        for remote, ref in pushed.items():
            self._docker(1, "tag", ref, remote)
            self._docker(1, "--config", str(login), "push", remote)
        self._docker(1, "rmi", *pushed, *HUB_IMAGES.values())
        self._docker(1, "image", "prune", "-a", "-f")
        shutil.rmtree(login)

    @staticmethod
    def _has_manifest(registry: str, name: str) -> bool:
        import urllib.error
        import urllib.request
        repo, _, tag = name.rpartition(":")
        req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        try:
            with urllib.request.urlopen(req, timeout=5):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def restart_docker(self, i: int) -> None:
        """Restart host i's daemon (as a host reboot or a Docker upgrade would); containers come back per their
        restart policy. Starts a stopped one (`stop_docker`)."""
        self.stop_docker(i)
        self._host_fs(i)
        self._dockerd(i)

    def stop_docker(self, i: int) -> None:
        """Stop host i's daemon, as a server with Docker installed and not running has it; sshd runs on."""
        _stop_pidfile(self._rdir(i) / "docker.pid", deadline_s=40)

    # -- stop -----------------------------------------------------------------------------------------------------
    def _started(self) -> int:
        """How many hosts the bench has now: at least this one's count, more where an earlier `up` asked for more
        (`make benchmark` brings up 16; `down` without `--hosts` must take them all down)."""
        found = [int(m.group(1)) for line in _run("ip", "netns", "list", check=False).stdout.splitlines()
                 if (m := re.fullmatch(rf"{re.escape(self.name)}-h(\d+)", line.split(" ", 1)[0]))]
        found += [int(d.name[4:]) for d in (self.run.iterdir() if self.run.is_dir() else ())
                  if d.name.startswith("host") and d.name[4:].isdigit()]
        return max([self.count, *found])

    def in_use(self) -> dict[str, list[str]]:
        """What runs on the bench's hosts besides kamal-proxy, by the stack that owns it (`shipyard.stack`) or else
        the container's name: the hosts each runs on. Nothing for a bench that is not up."""
        import docker  # only here: `up` and `down` need no Docker client

        found: dict[str, list[str]] = {}
        for i in range(1, self._started() + 1):
            sock = self._rdir(i) / "docker.sock"
            if not sock.exists():
                continue
            client = docker.APIClient(base_url=f"unix://{sock}", version="auto", timeout=10)
            try:
                running = client.containers()
            except docker.errors.DockerException:
                continue  # a daemon that does not answer runs nothing anyone could lose
            finally:
                client.close()
            for c in running:
                name = c["Names"][0].lstrip("/")
                if name != "kamal-proxy":
                    owner = (c.get("Labels") or {}).get("shipyard.stack")
                    found.setdefault(f"stack {owner}" if owner else f"container {name}", []).append(f"host{i}")
        return {k: sorted(set(v)) for k, v in sorted(found.items())}

    def down(self, purge: bool = False) -> None:
        self.count = self._started()
        _stop_pidfile(self.root / "toxiproxy" / "pid")
        for i in range(1, self.count + 1):
            r = self._rdir(i)
            _stop_pidfile(r / "sshd.pid")
            _stop_pidfile(r / "docker.pid", deadline_s=40)  # dockerd stops its containers as it exits
            _stop_pidfile(r / "fs.pid")  # the host's mount namespace goes with the last process in it
            # whatever still runs in the host's namespace (SSH sessions, container shims) goes with it
            for pid in _run("ip", "netns", "pids", self._netns(i), check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            _run("ip", "netns", "del", self._netns(i), check=False)
            _run("ip", "link", "del", f"{self.name}-h{i}o", check=False)
        for registry in ("registry", "registry-auth", "hub"):
            _stop_pidfile(self.root / registry / "pid")
        for address in self._root_addresses():
            _run("ip", "addr", "del", f"{address}/32", "dev", "lo", check=False)
        # any process still running from the bench's directories (container shims) goes too
        for where in (self.root, self.run):
            _run("pkill", "-f", f"{where}/", check=False)
        for i in range(1, self.count + 1):
            _run("umount", "-R", str(self._rdir(i) / "exec"), check=False)
        shutil.rmtree(self.run, ignore_errors=True)
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("up", "down", "purge", "info", "in-use"))
    ap.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    ap.add_argument("--hosts", type=int, default=HOST_COUNT, help="how many hosts (at most 99)")
    args = ap.parse_args(argv)
    bench = Bench(args.profile, hosts=args.hosts)
    try:
        if args.action == "up":
            print(bench.up().to_json())
        elif args.action == "info":
            print(bench.info().to_json())
        elif args.action == "in-use":  # one line each: `stack <project>/<stack>: host1, host2`
            for what, where in bench.in_use().items():
                print(f"{what}: {', '.join(where)}")
        else:
            bench.down(purge=args.action == "purge")
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
