"""`shipyard:index:Hook`: one of Kamal's hooks, an executable the user keeps in the hooks directory (`.kamal/hooks`),
run on the deploying machine at its place in the deploy, with Kamal's `KAMAL_*` variables:

- `pre-connect` and `pre-build` before anything else (the image waits for them), `pre-deploy` once the image is
  built and before anything on a host changes, `post-deploy` once every batch has rolled out;
- `pre-app-boot` / `post-app-boot` around each boot batch (`KAMAL_HOSTS`: the batch's hosts);
- `pre-proxy-reboot` / `post-proxy-reboot` around a change of the hosts' kamal-proxy.

A hook runs when what it stands before or after changes (its `trigger`, or the hook file itself): a deploy that
changes nothing runs none. A hook that fails (non-zero exit) fails its step: what depends on it - for a pre-hook,
everything after it - does not happen, so a failing `pre-deploy` leaves every host as it was."""

from __future__ import annotations

import datetime
import getpass
import os
import subprocess
import time
from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from .. import text
from ..errors import HookFailed

STARTED = time.time()  # this provider process starts with the deploy: KAMAL_RUNTIME counts from here
TIMEOUT_S = 3600


def performer(cwd: str) -> str:
    """Kamal's performer: git's user.email where the hook runs, else the login name."""
    try:
        email = subprocess.run(["git", "config", "user.email"], cwd=cwd, capture_output=True, text=True).stdout
    except OSError:
        email = ""
    return email.strip() or getpass.getuser()


def hook_env(props: dict[str, Any]) -> dict[str, str]:
    """The hook's environment: the deploying machine's, Kamal's KAMAL_* details, and (for the hooks Kamal gives
    them to) the secrets."""
    details = {"RECORDED_AT": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "PERFORMER": performer(props["workdir"]), **props["details"]}
    if props["hook"] == "post-deploy":
        details["RUNTIME"] = str(round(time.time() - STARTED))
    return {**os.environ, **{f"KAMAL_{k}": str(v) for k, v in details.items()}, **(props.get("secrets") or {})}


class HookProvider(ResourceProvider):
    serialize_as_secret_always = False
    compared = ("trigger", "file_hash")  # what its diff looks at: a preview names nothing else

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._run(props)
        return CreateResult(id_=f"{props['destination']}-{props['hook']}", outs=props)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._run(news)
        return UpdateResult(outs=news)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """It runs again when what it stands by changes, or the hook itself does; never for how it is told."""
        changed = [k for k in ("trigger", "file_hash") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)  # a hook leaves nothing behind to read

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        pass

    @staticmethod
    def _run(props: dict[str, Any]) -> None:
        hook, path = props["hook"], props["path"]
        try:
            proc = subprocess.run([path], cwd=props["workdir"], env=hook_env(props), capture_output=True,
                                  timeout=TIMEOUT_S)
        except OSError as exc:
            raise HookFailed(hook, f"{path} could not run ({exc.strerror or exc}): make it executable "
                                   f"(chmod +x), or remove it") from None
        except subprocess.TimeoutExpired:
            raise HookFailed(hook, f"{path} ran for over {TIMEOUT_S // 60} minutes and was stopped") from None
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            secrets = list((props.get("secrets") or {}).values())
            said = " / ".join(text.tail(out, 3, secrets).splitlines())
            after = "nothing after it was done" if hook.startswith("pre-") else "what it followed is done"
            raise HookFailed(hook, f"{path} exited {proc.returncode}{': ' + said if said else ''}; {after}")
