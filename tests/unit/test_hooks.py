"""Kamal's hooks on the deploying machine (`providers.hook`): Kamal's variables, a failure as one line, when a hook
runs again."""

from __future__ import annotations

import pytest

from components.errors import HookFailed
from components.providers.hook import HookProvider


def props(tmp_path, script: str, **over):
    hook = tmp_path / "pre-deploy"
    hook.write_text(script)
    hook.chmod(0o755)
    return {"hook": "pre-deploy", "destination": "staging", "path": str(hook), "workdir": str(tmp_path),
            "file_hash": "sha256:1", "trigger": "t1", "secrets": {"DB_PASSWORD": "s3cret"},
            "details": {"SERVICE": "shop", "VERSION": "abc1234def56", "HOSTS": "10.0.0.1,10.0.0.2",
                        "COMMAND": "deploy"}, **over}


def test_a_hook_runs_in_its_workdir_with_kamals_variables_and_the_secrets(tmp_path):
    p = props(tmp_path, '#!/bin/sh\nenv | grep -E "^(KAMAL_|DB_PASSWORD)" | sort > seen\n')
    HookProvider().create(p)
    seen = dict(line.split("=", 1) for line in (tmp_path / "seen").read_text().splitlines())
    assert seen["KAMAL_SERVICE"] == "shop" and seen["KAMAL_HOSTS"] == "10.0.0.1,10.0.0.2"
    assert seen["KAMAL_COMMAND"] == "deploy" and seen["DB_PASSWORD"] == "s3cret"
    assert seen["KAMAL_RECORDED_AT"].endswith("Z") and seen["KAMAL_PERFORMER"]


def test_a_failing_hook_is_one_line_with_its_last_words_and_no_secret(tmp_path):
    p = props(tmp_path, "#!/bin/sh\necho 'connecting with s3cret'\necho 'migrations pending' >&2\nexit 3\n")
    with pytest.raises(HookFailed) as err:
        HookProvider().create(p)
    message = str(err.value)
    assert message.startswith("hook pre-deploy: ") and "\n" not in message and "s3cret" not in message
    assert message.endswith("pre-deploy exited 3: connecting with [secret] / migrations pending; nothing after it "
                            "was done")
    (tmp_path / "pre-deploy").chmod(0o644)
    with pytest.raises(HookFailed, match="could not run .*: make it executable"):
        HookProvider().create(props(tmp_path, "#!/bin/sh\n", path=str(tmp_path / "missing")))


def test_a_hook_runs_again_when_what_it_stands_by_changes_or_itself():
    old = {"trigger": "t1", "file_hash": "h1", "details": {"RECORDED_AT": "x"}}
    assert not HookProvider().diff("h", old, {**old, "details": {}}).changes
    assert HookProvider().diff("h", old, {**old, "trigger": "t2"}).changes
    assert HookProvider().diff("h", old, {**old, "file_hash": "h2"}).changes
