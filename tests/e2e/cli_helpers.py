"""Driving the `shipyard` command as a user does: a subprocess in the project directory, with the project's Pulumi
environment. Shared by the CLI and team-state tests."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import VENV_BIN

# An app whose health check path appears UP_DELAY seconds after start (a deploy that takes a while), and that logs
# one line when it boots.
START_SH = """#!/bin/sh
mkdir -p /www
printf 'service=%s destination=%s version=%s role=%s\\n' \\
  "$SHIPYARD_SERVICE" "$SHIPYARD_DESTINATION" "$SHIPYARD_VERSION" "$SHIPYARD_ROLE" > /www/index.html
echo "booted destination=$SHIPYARD_DESTINATION version=$SHIPYARD_VERSION"
httpd -f -p 80 -h /www &
trap 'kill $!; exit 0' TERM INT
sleep "${UP_DELAY:-0}"
echo ok > /www/up
wait
"""


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def shipyard_argv(*args: str) -> list[str]:
    return [str(VENV_BIN / "python"), "-m", "components.cli", *args]


def shipyard(proj_dir: Path, env: dict[str, str], *args: str, check: bool = True, timeout: float = 600) -> Run:
    proc = subprocess.run(shipyard_argv(*args), cwd=proj_dir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"`shipyard {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return run
