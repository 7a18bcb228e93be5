"""`make demo` and `make demo-down` on a checkout whose stack files a user has written over (the README has them
write their stacks over the demo's): neither deploys nor destroys those stacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A git checkout with the demo's script and stack files, and a `pulumi` that only records that it ran."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "demo"], cwd=tmp_path, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("pulumi", "python"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\n")
        (bin_dir / tool).chmod(0o755)
    return tmp_path, calls


@pytest.mark.parametrize("mode, says", [((), "make demo: stacks/Pulumi.production.yaml is no longer the demo's "
                                              "(changed since the checkout), so its stack is yours: nothing was "
                                              "deployed."),
                                        (("down",), "make demo-down: stacks/Pulumi.production.yaml is no longer the "
                                                    "demo's (changed since the checkout), so its stack is yours: "
                                                    "nothing was destroyed.")])
def test_a_stack_file_written_over_is_left_alone_in_one_line(checkout, mode, says):
    root, calls = checkout
    stack = root / "stacks" / "Pulumi.production.yaml"
    stack.write_text(stack.read_text().replace("service: hello", "service: myapp"))
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "scripts/demo.sh", *mode], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith(says) and len(done.stderr.splitlines()) == 1
    assert "`git checkout stacks/Pulumi.production.yaml` brings the demo's back" in done.stderr
    assert not calls.exists()  # neither pulumi nor the bench ran


def test_the_demos_own_stack_files_go_ahead(checkout):
    root, calls = checkout
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "scripts/demo.sh", "down"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines()[-1] == "python -m tests.bench down"
