"""Runs a sample of the e2e tests one by one, each in a pytest of its own (its own bench, nothing run before it):
proof that any single test passes alone, as `pytest -k <name>` would run it. `python -m tests.alone [N]`."""

from __future__ import annotations

import os
import random
import subprocess
import sys

SHARED = ("tests/e2e/test_deploy.py", "tests/e2e/test_rollout.py", "tests/e2e/test_accessories.py")


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 2
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *SHARED],
                            capture_output=True, text=True, check=True).stdout.split()
    tests = [t for t in listed if "::" in t]
    seed = int(os.environ.get("SHIPYARD_TEST_SEED") or random.SystemRandom().randrange(1, 1_000_000))
    sample = random.Random(seed).sample(tests, min(count, len(tests)))
    failed = []
    for test in sample:
        print(f"== alone: {test}", flush=True)
        if subprocess.run([sys.executable, "-m", "pytest", "-q", test]).returncode != 0:
            failed.append(test)
    print(f"alone (seed {seed}): {len(sample) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
