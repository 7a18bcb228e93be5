"""The destination plan, tested the way pyinfra tests operations: each file in plan_cases/ is one case - a stack's
config and version in, the plan out (what a reader checks: names, hosts, networks, volumes, proxies, boot order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components import config, plan

CASES = sorted((Path(__file__).parent / "plan_cases").glob("*.json"))


def summary(p: plan.DestinationPlan) -> dict:
    return {
        "image": {"tag": p.image.tag, "build_host": p.image.build_host, "hosts": list(p.image.hosts)},
        "network": p.network,
        "hosts": list(p.hosts),
        "volumes": {h: list(v) for h, v in p.volumes.items()},
        "proxies": p.proxies,
        "batches": [[{"resource": c.resource_name, "name": c.name, "network": c.network,
                      "route": c.proxy_service, "ports": [f"{x.host_port}:{x.container_port}" for x in c.ports],
                      "volumes": list(c.volumes), "cmd": list(c.cmd) if c.cmd else None} for c in batch]
                    for batch in p.batches],
        "accessories": [{"resource": a.resource_name, "name": a.name, "host": a.host, "volumes": list(a.volumes),
                         "state_dir": a.state_dir} for a in p.accessories],
        "urls": list(p.urls),
    }


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_plan_case(path: Path):
    case = json.loads(path.read_text())
    stack = case.get("stack", "staging")
    cfg = config.load(case["config"], stack=stack)
    got = summary(plan.destination_plan(cfg, f"shipyard/{stack}", case["version"]))
    assert got == case["expect"]


def test_every_case_is_a_plan_for_one_version_only():
    for path in CASES:
        case = json.loads(path.read_text())
        names = json.dumps(case["expect"]["batches"])
        assert case["version"] in names
