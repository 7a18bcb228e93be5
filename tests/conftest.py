"""Fixtures shared by the integration and e2e tiers: the bench (session scope) and real Pulumi projects.

No tier skips: when the bench or the CLI cannot start, the fixture fails and says what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import docker
import pytest
import yaml  # PyYAML comes with the Pulumi SDK

from tests.bench import Bench, BenchError, BenchInfo
from tests.faults import FaultProxy

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PASSPHRASE = "shipyard-local"


@pytest.fixture(scope="session")
def bench_ctl() -> Bench:
    # The hosts run the current Docker Engine; SHIPYARD_BENCH_DOCKERD=debian: Debian's 20.10 (tests/bench.py)
    # Six hosts for the tests at large, and a seventh that tests/e2e/test_new_server.py makes a new server again
    b = Bench(os.environ.get("SHIPYARD_BENCH_PROFILE", "test"), hosts=7,
              dockerd=os.environ.get("SHIPYARD_BENCH_DOCKERD", "current"))
    b.down(purge=True)  # every session starts from empty daemons, registry and keys
    try:
        info = b.up()
    except BenchError as exc:
        b.down()
        pytest.fail(f"the bench did not start: {exc}", pytrace=False)
    # The deploying side has a Docker login of its own, as an operator's machine does: every pulumi, shipyard and
    # kamal run of the session sees it (pulumi_env gives each project a copy), and none of it may reach a host.
    kept = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = info.operator_docker_config
    yield b
    if kept is None:
        os.environ.pop("DOCKER_CONFIG", None)
    else:
        os.environ["DOCKER_CONFIG"] = kept
    b.down()


@pytest.fixture(scope="session")
def bench(bench_ctl: Bench) -> BenchInfo:
    return bench_ctl.info()


@pytest.fixture
def fault_proxy(bench: BenchInfo) -> FaultProxy:
    """The bench's fault proxy (toxiproxy) between the deployer and each host's sshd, every host's proxy restored
    (no toxics, enabled) before and after the test."""
    faults = FaultProxy(bench.fault_proxy)
    faults.restore()
    yield faults
    faults.restore()


def host_docker(host) -> docker.APIClient:
    """The host's daemon through its local socket: how tests look at a host independently of the product."""
    return docker.APIClient(base_url=f"unix://{host.docker_socket}", version="auto")


# A job worker's (or an accessory's) command that stops as soon as it is asked (SIGTERM), as a real worker or database
# does: a bare `sleep` as PID 1 ignores SIGTERM and would wait out the whole stop timeout at every rollout and destroy.
WORKER = "trap 'exit 0' TERM; sleep 3600 & wait"


def at_once(calls: list[Callable[[], Any]], deadline_s: float) -> list:
    """Each call in a thread of its own, all started together; what each returned, or the exception it raised, in
    order. A call that has not returned by the deadline fails the test (its daemon thread is left behind, never
    joined)."""
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the caller's to check, with the others
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for th in threads:
        th.start()
    end = time.monotonic() + deadline_s
    for th in threads:
        th.join(max(end - time.monotonic(), 0))
    assert not [th for th in threads if th.is_alive()], f"calls still waiting after {deadline_s}s"
    return results

def pulled(client: docker.APIClient, ref: str) -> str:
    """`ref` pulled onto a bench host (they start with no image, as new servers do; Docker Hub's images come from
    the bench's stand-in), with no login; returns it."""
    for chunk in client.pull(ref, stream=True, decode=True, auth_config={}):
        assert "error" not in chunk, chunk
    return ref


@contextlib.contextmanager
def requests_during(ask: Callable[[], str], *, most: int = 3000, seconds: float = 120,
                    pause: float = 0.01) -> Iterator[list[tuple[float, str | None]]]:
    """Asks `ask()` (a request to a bench host) again and again in a thread while the block runs - bounded: at
    most `most` requests or `seconds` - and yields what it saw: (time, answer) in order, None for a request that
    failed. The list is complete once the block has ended."""
    seen: list[tuple[float, str | None]] = []
    stop = threading.Event()

    def loop() -> None:
        end = time.monotonic() + seconds
        while not stop.is_set() and len(seen) < most and time.monotonic() < end:
            try:
                answer = ask()
            except OSError:
                answer = None
            seen.append((time.monotonic(), answer))
            time.sleep(pause)
    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def show_after(request, title: str, lines: list[str]) -> None:
    """Prints what a module measured (`lines`), under `title`, in every run - not only with -s."""
    if lines:
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print(f"\n{title}:\n  " + "\n  ".join(lines))


def http_get(url: str, host_header: str | None = None, timeout: float = 5) -> str:
    import urllib.request
    req = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read().decode()


def wait_http(url: str, expect: str, deadline_s: float = 20) -> str:
    import time
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        try:
            last = http_get(url)
            if expect in last:
                return last
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {expect!r} within {deadline_s}s; last answer: {last!r}")


class DaemonLog:
    """Counts the API calls a bench daemon logged (the bench runs dockerd with debug logging). Engine 20.10 logs
    `msg="Calling POST /v1.41/..."`; current engines `msg="handling POST request" ... request-url=/v1.44/...`."""
    MUTATING = re.compile(r'msg="Calling (POST|PUT|DELETE) (\S+)"'
                          r'|msg="handling (POST|PUT|DELETE) request".*? module=api request-url="?([^"\s]+)')

    def __init__(self, bench_root: str, host_index: int):
        self.path = Path(bench_root) / f"host{host_index}" / "dockerd.log"
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def mutating_calls(self) -> list[str]:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode(errors="replace")
        return [f"{m[1] or m[3]} {m[2] or m[4]}" for m in self.MUTATING.finditer(text)]


def pulumi_env(state_dir: Path) -> dict[str, str]:
    if not (VENV_BIN / "pulumi").exists():
        pytest.fail("no Pulumi CLI in .venv/bin: run `make setup`", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "PULUMI_BACKEND_URL": f"file://{state_dir}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_PYTHON_CMD": str(VENV_BIN / "python"),
        "PULUMI_HOME": str(state_dir.parent / "pulumi-home"),
        "NO_COLOR": "1",
    })
    if env.get("DOCKER_CONFIG"):  # the operator's login (see bench_ctl), a copy per project: nothing run may change
        # the session's
        copy = state_dir.parent / "docker-config"
        shutil.copytree(env["DOCKER_CONFIG"], copy, dirs_exist_ok=True)
        env["DOCKER_CONFIG"] = str(copy)
    return env


@dataclass
class Result:
    code: int
    out: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class Project:
    """A real Pulumi project on disk, driven through the real CLI. It remembers which config each stack last
    deployed, so a test can bring a shared deployment to the state it starts from (`converge`) whatever ran before
    it: tests that share a deployment run alone and in any order."""
    dir: Path
    env: dict[str, str]
    history: list[str] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # last written, per stack
    applied: dict[str, Any] = field(default_factory=dict)  # (config, secrets) last deployed, per stack

    def run(self, *args: str, stack: str | None = None, check: bool = True, timeout: float = 600) -> Result:
        argv = ["pulumi", *args, "--non-interactive"]
        if stack:
            argv += ["--stack", stack]
        if stack and (args[:1] == ("destroy",) or args[:3] == ("config", "set", "--secret")):
            self.applied.pop(stack, None)  # what runs is no longer what the stack last deployed
        proc = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        self.history.append(f"$ {' '.join(argv)}\n{out}")
        if check and proc.returncode != 0:
            raise AssertionError(f"`{' '.join(argv)}` exited {proc.returncode}:\n{out}")
        return Result(proc.returncode, out)

    def init(self, stack: str, config: dict[str, Any], secrets: dict[str, str] | None = None) -> None:
        self.run("stack", "init", stack)
        self.set_config(stack, config)
        self.set_secrets(stack, secrets)

    def set_secrets(self, stack: str, secrets: dict[str, str] | None) -> None:
        for path, value in (secrets or {}).items():
            self.run("config", "set", "--secret", "--path", path, value, stack=stack)

    def set_config(self, stack: str, config: dict[str, Any]) -> None:
        self.configs[stack] = config
        write_config(self.dir, stack, config)

    def up(self, stack: str, *extra: str, check: bool = True) -> Result:
        result = self.run("up", "--yes", "--skip-preview", *extra, stack=stack, check=check)
        if result.ok:
            self.applied[stack] = (self.configs.get(stack), self.applied.get(stack, (None, None))[1])
        else:
            self.applied.pop(stack, None)
        return result

    def converge(self, stack: str, config: dict[str, Any], secrets: dict[str, str] | None = None) -> None:
        """Deploy `config` (and `secrets`) unless the stack already runs exactly that."""
        if self.applied.get(stack) == (config, secrets):
            return
        self.set_secrets(stack, secrets)
        self.set_config(stack, config)
        self.up(stack)
        self.applied[stack] = (config, secrets)

    def dirty(self, stack: str) -> None:
        """Something changed what runs outside the stack's config (a container stopped by hand...)."""
        self.applied.pop(stack, None)

    def outputs(self, stack: str) -> dict[str, Any]:
        return json.loads(self.run("stack", "output", "--json", stack=stack).out)


def write_config(project_dir: Path, stack: str, config: dict[str, Any]) -> None:
    """Set the stack's plain `shipyard:*` keys in stacks/Pulumi.<stack>.yaml (replacing the plain ones it had),
    keeping the encryption salt and every secret the CLI stored."""
    path = project_dir / "stacks" / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    kept = {k: v for k, v in (data.get("config") or {}).items() if "secure" in json.dumps(v)}
    data["config"] = {**{f"shipyard:{k}": v for k, v in config.items()}, **kept}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_project(root: Path, app_files: dict[str, str] | None = None) -> Path:
    """A copy of this project (Pulumi.yaml, __main__.py, components/ linked) plus an example app in a git repo."""
    proj = root / "project"
    proj.mkdir(parents=True)
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(REPO / name, proj / name)
    (proj / "components").symlink_to(REPO / "components")
    (proj / ".venv").symlink_to(REPO / ".venv")
    (proj / "stacks").mkdir()
    app = proj / "app"
    shutil.copytree(REPO / "examples" / "hello", app)
    for rel, text in (app_files or {}).items():
        (app / rel).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(app)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return proj


def commit_app(proj: Path, rel: str, text: str) -> str:
    """Commit a change of the app's file `rel`; returns the new commit: the version a stack that pins none gets."""
    app = proj / "app"
    (app / rel).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(app)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "change"], check=True)
    return app_head(proj)


def app_head(proj: Path) -> str:
    """The app's commit (12 digits): the version a stack that pins none deploys."""
    return subprocess.run(["git", "-C", str(proj / "app"), "rev-parse", "--short=12", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = make_project(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    return Project(proj, pulumi_env(state))


def ssh_config(bench: BenchInfo) -> dict[str, Any]:
    """How a stack reaches the bench's hosts: as their non-root user in the `docker` group, with the bench's key."""
    return {"user": bench.hosts[0].user, "keys": [bench.identity_file], "known_hosts": bench.known_hosts}



# -- order ---------------------------------------------------------------------------------------------------------
# `make test` runs the tests of each module in a random order (SHIPYARD_TEST_SEED=random; a number repeats an order),
# which proves that no test depends on another having run first. Modules keep their order, so a module's shared
# deployment is made once.

def _seed() -> int | None:
    import random
    value = os.environ.get("SHIPYARD_TEST_SEED", "")
    if value == "random":
        value = str(random.SystemRandom().randrange(1, 1_000_000))
        os.environ["SHIPYARD_TEST_SEED"] = value  # the same seed for pytest-xdist-less reruns and the header
    return int(value) if value else None


def pytest_report_header(config) -> str | None:
    seed = _seed()
    return f"test order: shuffled within each module, SHIPYARD_TEST_SEED={seed}" if seed is not None else None


def pytest_collection_modifyitems(session, config, items) -> None:
    import random
    seed = _seed()
    if seed is None:
        return
    rng = random.Random(seed)
    by_module: dict[str, list] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], []).append(item)
    for tests in by_module.values():
        rng.shuffle(tests)
    items[:] = [t for tests in by_module.values() for t in tests]


def pytest_terminal_summary(terminalreporter) -> None:
    if os.environ.get("SHIPYARD_TEST_SEED"):
        terminalreporter.write_line(f"test order seed: SHIPYARD_TEST_SEED={os.environ['SHIPYARD_TEST_SEED']}")
