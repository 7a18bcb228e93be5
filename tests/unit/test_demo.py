"""`make demo` and `make demo-down` on a checkout whose stack files a user has written over (the README has them
write their stacks over the demo's), or whose stacks a user deployed from such files before `git checkout` put the
demo's back: neither deploys nor destroys those stacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A git checkout with the demo's script and stack files, and a `pulumi` that records that it ran, answers
    `stack output service` for the stacks named in $RUNNING_STACK with $RUNNING_SERVICE, and lists the stacks named
    in $STACKS (default: staging and production) as existing; and a `python` whose `tests.bench in-use` answers
    $IN_USE."""
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
    with (bin_dir / "python").open("a") as f:  # what runs on the bench besides the demo: $IN_USE
        f.write('[ "$3" = "in-use" ] && [ -n "$IN_USE" ] && printf "%b\\n" "$IN_USE"\nexit 0\n')
    with (bin_dir / "pulumi").open("a") as f:
        f.write('[ "$1 $2 $3" = "stack output service" ] && case " $RUNNING_STACK " in *" $5 "*) '
                'echo "$RUNNING_SERVICE";; esac\n'
                '[ "$1 $2 $3" = "stack ls --json" ] && for s in ${STACKS-staging production}; do '
                'echo "{\\"name\\": \\"$s\\"}"; done\n'
                '[ "$1 $2" = "stack select" ] && case " ${STACKS-staging production} " in *" $3 "*) ;; '
                '*) exit 1;; esac\n'
                'exit 0\n')
    return tmp_path, calls


def demo(root: Path, *mode: str, **env: str) -> subprocess.CompletedProcess:
    """`scripts/demo.sh` in the checkout, with its fake `pulumi` and `python` first on PATH and `env` set."""
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "scripts/demo.sh", *mode], cwd=root, env=env, capture_output=True, text=True)


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
    done = demo(root, *mode)
    assert done.returncode == 1
    assert done.stderr.startswith(says) and len(done.stderr.splitlines()) == 1
    assert ("`git checkout stacks/Pulumi.production.yaml` brings the demo's back (keep a copy of yours first: it "
            "holds your config and secrets)") in done.stderr
    assert only_asked(calls)  # nothing deployed or destroyed, the bench not started


def test_both_stack_files_written_over_are_named(checkout):
    root, calls = checkout
    for stack in ("staging", "production"):
        path = root / "stacks" / f"Pulumi.{stack}.yaml"
        path.write_text(path.read_text().replace("service: hello", "service: myapp"))
    done = demo(root)
    assert done.returncode == 1
    assert done.stderr == ("make demo: stacks/Pulumi.production.yaml and stacks/Pulumi.staging.yaml are no longer "
                           "the demo's (changed since the checkout), so their stacks are yours: nothing was deployed. "
                           "`git checkout stacks/` brings the demo's back (keep a copy of yours first: it holds your "
                           "config and secrets).\n")
    assert only_asked(calls)


@pytest.mark.parametrize("mode, what", [((), "deployed"), (("down",), "destroyed")])
def test_a_stack_of_another_service_is_left_alone_after_its_file_is_checked_out_again(checkout, mode, what):
    """The user deployed their own app as `staging` from a file of theirs, then `git checkout stacks/`: the file is
    the demo's again, the stack is not."""
    root, calls = checkout
    done = demo(root, *mode, RUNNING_STACK="staging", RUNNING_SERVICE="myapp")
    assert done.returncode == 1
    assert done.stderr == (f"make demo{'-down' if mode else ''}: stack staging runs service myapp, not the demo's "
                           f"hello, so it is yours: nothing was {what}. When you are done with it, `pulumi destroy "
                           f"--stack staging` and `pulumi stack rm --preserve-config staging` remove it (and keep its "
                           f"file)"
                           f"{'; `.venv/bin/python -m tests.bench down` stops the bench alone' if mode else ''}.\n")
    assert only_asked(calls)


def test_both_stacks_of_another_service_are_named(checkout):
    root, calls = checkout
    done = demo(root, RUNNING_STACK="staging production", RUNNING_SERVICE="myapp")
    assert done.returncode == 1
    assert done.stderr == ("make demo: stack staging runs service myapp, not the demo's hello, and stack production "
                           "runs service myapp, not the demo's hello, so they are yours: nothing was deployed. When "
                           "you are done with them, `pulumi destroy --stack STACK` and `pulumi stack rm "
                           "--preserve-config STACK` remove each (and keep its file).\n")
    assert only_asked(calls)


def test_a_stack_of_another_service_deployed_from_a_file_still_there_is_destroyed_before_any_checkout(checkout):
    """The user's `staging` runs their app from their file: `git checkout` would lose their config and secrets and
    still not free the stack - so the refusal says how to remove the stack (keeping its file), not to check out."""
    root, calls = checkout
    stack = root / "stacks" / "Pulumi.staging.yaml"
    stack.write_text(stack.read_text().replace("service: hello", "service: myapp"))
    done = demo(root, RUNNING_STACK="staging", RUNNING_SERVICE="myapp")
    assert done.returncode == 1 and "git checkout" not in done.stderr
    assert done.stderr.startswith("make demo: stack staging runs service myapp, not the demo's hello, so it is yours")
    assert only_asked(calls)


def only_asked(calls: Path) -> bool:
    """Whether the demo only asked which service each stack runs and which stacks exist (no deploy, destroy or
    bench)."""
    return all(line.startswith(("pulumi stack output service", "pulumi stack ls")) for line in
               calls.read_text().splitlines())


def test_demo_down_stops_the_bench_once_the_stack_of_a_file_written_over_is_gone(checkout):
    """The user wrote their stack over the demo's production file, then destroyed and removed that stack: nothing of
    theirs is left on the bench, so demo-down destroys the demo's staging and stops the bench (their file stays)."""
    root, calls = checkout
    stack = root / "stacks" / "Pulumi.production.yaml"
    stack.write_text(stack.read_text().replace("service: hello", "service: myapp"))
    done = demo(root, "down", STACKS="staging")
    assert done.returncode == 0, done.stderr
    said = calls.read_text().splitlines()
    assert "pulumi destroy --yes --skip-preview --stack staging" in said
    assert not [c for c in said if c.startswith(("pulumi destroy", "pulumi stack rm")) and "production" in c]
    assert said[-1] == "python -m tests.bench down"
    assert "service: myapp" in stack.read_text()


@pytest.mark.parametrize("running", ["", "hello"])
def test_the_demos_own_stacks_go_ahead(checkout, running):
    root, calls = checkout
    done = demo(root, "down", RUNNING_STACK="staging", RUNNING_SERVICE=running)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines()[-1] == "python -m tests.bench down"


def test_demo_down_leaves_the_bench_up_while_something_else_runs_there(checkout):
    """A program of the user's deployed on the demo's bench (as the README shows): demo-down destroys the demo's
    stacks and says, in one line, what still runs where; the bench stays up."""
    root, calls = checkout
    done = demo(root, "down", IN_USE="stack myprog/staging: host1\ncontainer db: host1, host2")
    assert done.returncode == 1
    assert done.stderr.strip() == ("make demo-down: the bench's hosts still run stack myprog/staging: host1; container "
                                   "db: host1, host2 - the bench stays up. Destroy that first (`pulumi destroy` of "
                                   "its stack), or `.venv/bin/python -m tests.bench down` stops the bench and all "
                                   "that runs on it."), done.stderr
    said = calls.read_text().splitlines()
    assert "pulumi destroy --yes --skip-preview --stack staging" in said
    assert "python -m tests.bench down" not in said
