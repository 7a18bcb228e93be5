"""`make faults`: a randomized fault run. Two destinations (staging, production) of one app share one host of the
bench profile `bench`: a web role behind kamal-proxy, a job worker, sometimes a second worker, and a `db`
accessory. RUNS deploys follow one another, each a random change on top of its destination's last successful
config - a new version, an env value, a secret, the accessory's command, the second worker added or removed - and
most with a random fault:

  health   the new web container never answers its health path
  exits    the new job worker exits at once
  port     the accessory is to publish a port kamal-proxy holds
  sigint1  `pulumi up` gets Ctrl-C once, at a random moment
  sigint2  `pulumi up` gets Ctrl-C twice, and stops at once
  cut      the deployer's SSH connections to the host are cut for 2 s, at a random moment

The others go through `shipyard deploy`. A request loop asks both destinations throughout. After a failure other
than an interrupt, each destination must still serve what it served before that deploy through the proxy (its last
successful version, or an interrupted run's that got past its routes), and its worker run that version alone.
After an interrupted run (which may have started workers of its version) that holds for a failed deploy of a new
version, whose new worker's create stops them first; a failed deploy of another change may leave them until the
next rollout. The run ends with one deploy of each destination's last
successful config; then each must serve that version, with no pending operation in its state and no container that
neither its state nor retention accounts for. Prints the figures; exits 1 when any of these fails. Not a test: it
takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.bench import Bench, BenchInfo  # noqa: E402
from tests.conftest import WORKER, Project, host_docker, make_project, pulumi_env, ssh_config  # noqa: E402
from tests.e2e.cli_helpers import shipyard_argv  # noqa: E402
from tests.faults import FaultProxy  # noqa: E402

DESTINATIONS = ("staging", "production")
CHANGES = ("version", "env", "secret", "accessory", "role")
FAULTS = ("none", "health", "exits", "port", "sigint1", "sigint2", "cut")
RETAIN = 2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def config(info: BenchInfo, dest: str, knobs: dict[str, Any], fault: str) -> dict[str, Any]:
    host = info.hosts[0]
    servers: dict[str, Any] = {"web": {"hosts": [host.proxied_address]},
                               "jobs": {"hosts": [host.proxied_address],
                                        "cmd": "echo broken; exit 3" if fault == "exits" else WORKER}}
    if knobs["cron"]:
        servers["cron"] = {"hosts": [host.proxied_address], "cmd": WORKER}
    db: dict[str, Any] = {"image": "busybox:latest", "host": host.proxied_address,
                          "cmd": f"echo db {knobs['acc']}; trap 'exit 0' TERM; sleep 3600 & wait",
                          "volumes": ["data:/data"]}
    if fault == "port":
        db["port"] = "80:80"
    return {"service": "chaos", "image": "acme/chaos", "version": f"v{knobs['version']}",
            "builder": {"context": "app"}, "registry": {"server": info.registry}, "servers": servers,
            "proxy": {"hosts": [f"{dest}.chaos.test"], "deploy_timeout": 6, "drain_timeout": 1,
                      "healthcheck": {"interval": 0.3, "timeout": 2,
                                      "path": "/never" if fault == "health" else "/up"}},
            "env": {"clear": {"MODE": str(knobs["env"])}, "secret": ["GREETING"]},
            "accessories": {"db": db}, "readiness_delay": 1, "retain_containers": RETAIN,
            "ssh": {**ssh_config(info), "port": host.proxied_port}}


class Loop:
    """Asks both destinations again and again (bounded: `most` requests or `seconds`), counting failures."""

    def __init__(self, info: BenchInfo, most: int = 200_000, seconds: float = 3600):
        self.info, self.most, self.seconds = info, most, seconds
        self.asked: Counter = Counter()
        self.failed: Counter = Counter()
        self.last_failure: dict[str, str] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(d,), daemon=True) for d in DESTINATIONS]

    def answer(self, dest: str) -> str:
        req = urllib.request.Request(f"http://{self.info.hosts[0].address}/", headers={"Host": f"{dest}.chaos.test"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()

    def _run(self, dest: str) -> None:
        end = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.asked[dest] < self.most and time.monotonic() < end:
            try:
                ok = f"destination={dest}" in self.answer(dest)
                why = "wrong answer"
            except OSError as exc:
                ok, why = False, str(exc)
            self.asked[dest] += 1
            if not ok:
                self.failed[dest] += 1
                self.last_failure[dest] = why
            time.sleep(0.05)

    def __enter__(self) -> "Loop":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def interrupted_up(proj: Project, dest: str, times: int, rng: random.Random) -> int:
    argv = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", dest]
    up = subprocess.Popen(argv, cwd=proj.dir, env=proj.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        up.wait(timeout=rng.uniform(0.5, 6))
    except subprocess.TimeoutExpired:
        up.send_signal(signal.SIGINT)
        if times == 2:
            time.sleep(0.3)
            up.send_signal(signal.SIGINT)
    up.communicate(timeout=300)
    proj.run("cancel", "--yes", stack=dest, check=False)  # a second Ctrl-C can leave the stack's lock behind
    return up.returncode


def deploy(proj: Project, dest: str, info: BenchInfo, fault: str, rng: random.Random) -> tuple[int, str]:
    proc = subprocess.Popen(shipyard_argv("deploy", "-s", dest), cwd=proj.dir, env=proj.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if fault == "cut":
        faults = FaultProxy(info.fault_proxy)
        try:
            proc.wait(timeout=rng.uniform(0.5, 6))
        except subprocess.TimeoutExpired:
            faults.cut(info.hosts[0].name)
            time.sleep(2)
        faults.restore()
    out, err = proc.communicate(timeout=600)
    return proc.returncode, (err.strip().splitlines() or [""])[-1]


def versions_running(info: BenchInfo, dest: str) -> dict[str, set[str]]:
    """role -> the versions of its running containers."""
    out: dict[str, set[str]] = {}
    for c in host_docker(info.hosts[0]).containers(filters={"label": ["service=chaos", f"destination={dest}"]}):
        labels = c["Labels"]
        if not labels.get("role", "").startswith("accessory."):
            out.setdefault(labels["role"], set()).add(labels.get("version", "?"))
    return out


def unaccounted(proj: Project, info: BenchInfo, dest: str) -> list[str]:
    """This destination's containers that neither its state (the stack's outputs) nor retention accounts for."""
    outputs = json.loads(proj.run("stack", "output", "--json", stack=dest).out)
    known = {c["id"] for roles in outputs["containers"].values() for c in roles.values()}
    known |= {a["id"] for hosts in outputs["accessories"].values() for a in hosts.values()}
    stray, stopped = [], Counter()
    for c in host_docker(info.hosts[0]).containers(all=True, filters={"label": ["service=chaos",
                                                                               f"destination={dest}"]}):
        name = c["Names"][0].lstrip("/")
        if "_pending_" in name or (c["State"] == "running" and c["Id"] not in known):
            stray.append(f"{name} ({c['State']})")
        elif c["Id"] not in known:
            stopped[c["Labels"].get("role")] += 1
    stray += [f"{n - RETAIN} stopped {role} beyond retention" for role, n in stopped.items() if n > RETAIN]
    return stray


def pending_operations(proj: Project, dest: str) -> int:
    state = json.loads(proj.run("stack", "export", stack=dest).out)
    return len(state["deployment"].get("pending_operations") or [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make faults", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None, help="repeat a run's choices (printed at the start)")
    ap.add_argument("--keep-bench", action="store_true", help="leave the bench running afterwards")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    rng = random.Random(seed)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log(f"make faults: {args.runs} deploys, seed {seed}")
    bench = Bench("bench", hosts=1)
    work = Path(tempfile.mkdtemp(prefix="shipyard-faults-"))
    problems: list[str] = []
    outcomes: Counter = Counter()
    t0 = time.monotonic()
    try:
        info = bench.up()
        FaultProxy(info.fault_proxy).restore()
        (work / "state").mkdir()
        proj = Project(make_project(work), pulumi_env(work / "state"))
        good = {d: {"version": 1, "env": 1, "secret": f"{d}-1", "acc": 1, "cron": False} for d in DESTINATIONS}
        for d in DESTINATIONS:
            proj.init(d, config(info, d, good[d], "none"), secrets={"shipyard:secrets.GREETING": good[d]["secret"]})
            proj.up(d)
        interrupted = {d: False for d in DESTINATIONS}
        with Loop(info) as loop:
            for i in range(1, args.runs + 1):
                dest = rng.choice(DESTINATIONS)
                change = rng.choice(CHANGES)
                fault = rng.choice(FAULTS)
                knobs = dict(good[dest])
                if change == "version":
                    knobs["version"] = max(g["version"] for g in good.values()) + i
                elif change == "env":
                    knobs["env"] += 1
                elif change == "secret":
                    knobs["secret"] = f"{dest}-{i}"
                elif change == "accessory":
                    knobs["acc"] += 1
                else:
                    knobs["cron"] = not knobs["cron"]
                proj.set_config(dest, config(info, dest, knobs, fault))
                proj.set_secrets(dest, {"shipyard:secrets.GREETING": knobs["secret"]})
                served_before = re.search(r"version=(v\d+)", loop.answer(dest))
                started = time.monotonic()
                if fault in ("sigint1", "sigint2"):
                    code, said = interrupted_up(proj, dest, int(fault[-1]), rng), "interrupted"
                else:
                    code, said = deploy(proj, dest, info, fault, rng)
                ok = code == 0
                # an interrupted run may have started workers of its version: the next new worker's create stops
                # them (a new version makes one), the next successful rollout retires them
                was_interrupted = interrupted[dest]
                interrupted[dest] = (interrupted[dest] or fault in ("sigint1", "sigint2", "cut")) and not ok
                outcomes[(fault, "ok" if ok else "failed")] += 1
                log(f"{i:3d} {dest:10s} {change:9s} {fault:8s} {'ok' if ok else 'failed'} "
                    f"({time.monotonic() - started:.0f} s){'' if ok else ': ' + said[:160]}")
                if ok:
                    if fault in ("health", "exits", "port"):
                        problems.append(f"run {i}: the fault {fault} did not fail the deploy")
                    good[dest] = knobs
                else:
                    if fault == "none":
                        problems.append(f"run {i}: a deploy with no fault failed: {said}")
                    if fault in ("none", "health", "exits", "port") and (not was_interrupted or change == "version"):
                        # the route still serves what it served before, and the worker runs it alone (after an
                        # interrupt that got past the routes, that is the interrupted run's version)
                        want = served_before[1] if served_before else f"v{good[dest]['version']}"
                        served = loop.answer(dest)
                        jobs = versions_running(info, dest).get("jobs")
                        if f"version={want}" not in served or jobs != {want}:
                            problems.append(f"run {i}: after a failed deploy {dest} serves {served.strip()!r} and "
                                            f"its worker runs {jobs}, not {want}")
        # the closing deploy of each destination's last successful config, then the accounts
        for d in DESTINATIONS:
            proj.set_config(d, config(info, d, good[d], "none"))
            proj.set_secrets(d, {"shipyard:secrets.GREETING": good[d]["secret"]})
            code, said = deploy(proj, d, info, "none", rng)
            if code != 0:
                problems.append(f"the closing deploy of {d} failed: {said}")
            served = loop.answer(d)
            if f"version=v{good[d]['version']}" not in served:
                problems.append(f"{d} serves {served.strip()!r}, not v{good[d]['version']}")
            pending = pending_operations(proj, d)
            stray = unaccounted(proj, info, d)
            if pending:
                problems.append(f"{d}: {pending} pending operations")
            if stray:
                problems.append(f"{d}: unaccounted containers {stray}")
        print(f"\nmake faults (seed {seed}): {args.runs} deploys in {(time.monotonic() - t0) / 60:.0f} min")
        for fault in FAULTS:
            print(f"  {fault:8s} {outcomes[(fault, 'ok')]:3d} ok, {outcomes[(fault, 'failed')]:3d} failed")
        for d in DESTINATIONS:
            print(f"  requests to {d}: {loop.asked[d]}, failed {loop.failed[d]}"
                  f"{' (last: ' + loop.last_failure[d] + ')' if d in loop.last_failure else ''}")
            if loop.failed[d]:
                problems.append(f"{loop.failed[d]} requests to {d} failed")
        for d in DESTINATIONS:
            print(f"  {d}: serves v{good[d]['version']}, its last successful version; pending operations "
                  f"{pending_operations(proj, d)}; unaccounted containers {len(unaccounted(proj, info, d))}")
        for p in problems:
            print(f"  PROBLEM: {p}")
        for d in DESTINATIONS:
            proj.run("destroy", "--yes", stack=d, check=False)
    finally:
        with contextlib.suppress(Exception):
            FaultProxy(bench.info().fault_proxy).restore()
        if not args.keep_bench:
            bench.down()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
