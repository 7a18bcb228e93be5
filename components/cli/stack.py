"""A stack as the `shipyard` command sees it, through Pulumi's Automation API: its config (validated by
`components.config`), its outputs, its history, and `up` with a wait for the stack's lock.

Every Pulumi command names the stack (`--stack`) instead of selecting it, so `shipyard logs -s production` never
changes which stack a later bare `pulumi up` acts on. Automation-API errors become `StackError`s here.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from pulumi import automation as auto

from .. import kamal, plan
from ..config import Deploy, stack_keys
from ..errors import ConfigError, StackError, StackLocked
from ..hosts import SSHTarget
from ..ssh import target_of
from ..naming import COMMAND_ENV, PROJECT
from ..resources import DYNAMIC_TYPE, type_token
from ..providers.rollout import entries as rollout_entries

NAMESPACE = f"{PROJECT}:"
LOCK_RETRY_S = 2.0
LOCK_HOLDER = re.compile(r"created by (?P<who>\S+) \(pid (?P<pid>\d+)\) at (?P<at>\S+)")
# Taking a stack's lock, the Pulumi CLI's self-managed backend lists the stack's locks and then reads each one (to
# name its holder): a lock released in between fails the command with the backend's "not found" for a key it had
# just listed (seen with `postgres://`: "could not list bucket: blob (code=NotFound)", or "key not found: sql: no
# rows in result set"). The holder has just finished: the command is tried again.
LOCK_RELEASED = re.compile(r"could not list bucket: blob \(code=NotFound\)|key not found: sql: no rows in result set")
LOCK_RACE_TRIES = 3


# -- pure parts -------------------------------------------------------------------------------------------------------

def lock_holder(stderr: str) -> str | None:
    """Who holds a stack's lock, from the Pulumi CLI's "the stack is currently locked" error: `root@ci-3 (pid 812,
    since 2024-05-01T12:00:00Z)`."""
    m = LOCK_HOLDER.search(stderr)
    return f"{m['who']} (pid {m['pid']}, since {m['at']})" if m else None


# what says only that something failed elsewhere: the engine's summary, and the program's own stop once the engine
# has cancelled the run (listed before the resource's own error when the program stopped first)
GENERIC = re.compile(r"^(update|preview|destroy|refresh) failed$|^an error occurred|^resource monitor has terminated",
                     re.I)

SEVERAL = re.compile(r"^\d+ errors occurred:$")

# a provider's check refused an input: the engine quotes the whole value before the reason, or the plugin names a
# map or list input at the start of the reason (`plugin.server.check_failure`)
CHECK_FAILURE = re.compile(r"^\S+ resource '(?P<name>[^']+)'(: property (?P<prop>\S+) value .* has a problem: | has a "
                           r"problem: (?P<named>[a-z_.]+): )(?P<why>.+)$")


def command_error_line(output: str) -> str:
    """The one line of a failed Pulumi command worth showing (its output and errors together): the first
    `error:` line that says more than "update failed", without the prefix; a refused input as its reason."""
    # the Automation API's text heads the CLI's streams with `stdout:` and `stderr:`
    lines = [ln.strip().removeprefix("stdout:").removeprefix("stderr:").strip() for ln in output.splitlines()]
    lines = [ln for ln in lines if ln]
    errors = []
    for ln, after in zip(lines, [*lines[1:], ""]):
        if ln.startswith("error:"):
            e = ln.removeprefix("error:").strip()
            # "N errors occurred:" lists them on the next lines as `1) ...`: the first one says what failed
            errors.append(f"{e} {after}".strip() if SEVERAL.match(e) else e)
    specific = [e for e in errors if not GENERIC.search(e)]
    line = (specific or errors or lines[-1:] or ["the Pulumi CLI failed"])[0]
    m = CHECK_FAILURE.match(line)
    return f"{m['why']} (resource {m['name']}, {m['prop'] or m['named']})" if m else line


def _text(exc: auto.CommandError) -> str:
    """A failed command's output and errors (the Automation API keeps them only in the exception's text)."""
    return str(exc)


def find_project(start: Path) -> Path:
    """The nearest directory at or above `start` with a Pulumi.yaml: where the project lives."""
    for d in (start, *start.parents):
        if (d / "Pulumi.yaml").exists() or (d / "Pulumi.yml").exists():
            return d
    raise ConfigError("", f"no Pulumi.yaml in {start} or above: run shipyard inside the project")


def performer(app_dir: Path) -> str:
    """Who is deploying, for the audit trail: git's user.name in the app's directory (what Kamal records, run
    there) or the login name, at this machine."""
    name = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        name = subprocess.run(["git", "-C", str(app_dir), "config", "user.name"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = str(os.getuid())
    return f"{name}@{socket.gethostname()}"


# -- the stack --------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def pulumi_errors(stack: str, doing: str) -> Iterator[None]:
    """Automation-API errors as one-line `StackError`s."""
    try:
        yield
    except auto.ConcurrentUpdateError as exc:
        holder = lock_holder(_text(exc)) or "another process"
        raise StackLocked(stack, f"{doing} is not possible now: {holder} is updating this stack. Wait for it, or "
                                 f"pass --lock-wait SECONDS; if that process is gone, `pulumi cancel --stack "
                                 f"{stack}` releases its lock") from None
    except auto.StackNotFoundError:
        raise StackError(stack, "no such stack in this project's backend: see `pulumi stack ls`") from None
    except auto.CommandError as exc:
        raise StackError(stack, f"{doing} failed: {command_error_line(_text(exc))}") from None
    except FileNotFoundError as exc:
        raise StackError(stack, f"{doing} failed: {exc}") from None


class _NamedStack(auto.Stack):
    """An existing stack, addressed by name on every command instead of `pulumi stack select`."""

    def __init__(self, name: str, workspace: auto.LocalWorkspace):  # noqa: super().__init__ would select it
        self.name = name
        self.workspace = workspace
        self._mode = "named"


def workspace(project_dir: Path) -> auto.LocalWorkspace:
    with pulumi_errors("-", "opening the project"):
        return auto.LocalWorkspace(work_dir=str(project_dir))


def selected_stack(ws: auto.LocalWorkspace) -> str:
    """The selected stack's name (`pulumi stack --show-name`: asks for that stack alone, not the whole list)."""
    try:
        result = ws.pulumi_command.run(["stack", "--show-name", "--non-interactive"], ws.work_dir,
                                       {**(ws.env_vars or {})})
    except auto.CommandError:
        raise ConfigError("--stack", "no stack is selected: pass -s/--stack NAME or run `pulumi stack select`") \
            from None
    return result.stdout.strip()


@dataclass
class StackContext:
    """One stack of the project: what every subcommand starts from."""
    name: str
    project_dir: Path
    ws: auto.LocalWorkspace
    stack: auto.Stack = field(init=False)

    def __post_init__(self):
        self.stack = _NamedStack(self.name, self.ws)

    def refresh(self) -> None:
        """Forget what was read (after an update changed config or outputs)."""
        for name in ("all_config", "cfg", "outputs"):
            self.__dict__.pop(name, None)

    def set_version(self, version: str | None) -> None:
        """Pin `shipyard:version` (None: remove the pin, the builder context's git commit decides again)."""
        with pulumi_errors(self.name, "setting shipyard:version"):
            if version is None:
                self.stack.remove_config(f"{NAMESPACE}version")
            else:
                self.stack.set_config(f"{NAMESPACE}version", auto.ConfigValue(value=version))
        self.refresh()

    @cached_property
    def all_config(self) -> dict[str, auto.ConfigValue]:
        with pulumi_errors(self.name, "reading the config"):
            return self.ws.get_all_config(self.name)

    @cached_property
    def cfg(self) -> Deploy:
        try:
            # as the program reads it: a stack that names a Kamal config (`shipyard:kamal`) gets that config - only
            # to read what is deployed, so a secret the deploy needs (and this checkout may lack) is left unread
            return kamal.load_stack(stack_keys(self.all_config), stack=self.name, project_dir=self.project_dir,
                                    secrets_needed=False)
        except ConfigError as exc:
            raise StackError(self.name, f"config {exc}") from None

    @cached_property
    def outputs(self) -> dict[str, Any]:
        with pulumi_errors(self.name, "reading the outputs"):
            out = {k: v.value for k, v in self.stack.outputs().items()}
        if out and not out.get("service"):  # every stack of this program exports it, an app of accessories too
            raise StackError(self.name, "its outputs are not this project's program's (no `service` output): the "
                                        "shipyard command works on the stacks of this project; a program of your own "
                                        "shows its Destination's outputs with `pulumi stack output`")
        if not out:
            raise StackError(self.name, "nothing is deployed: run `shipyard deploy` first")
        return out

    @property
    def owner(self) -> str:
        """The ownership label's value on every object this stack made (exported by the program)."""
        owner = self.outputs.get("owner")
        if not owner:
            raise StackError(self.name, "its outputs predate this command (no `owner` output): run `shipyard "
                                        "deploy` once")
        return owner

    @property
    def app_dir(self) -> Path:
        """The app's directory: its build context (for a Kamal app, the directory its config belongs to)."""
        return self.project_dir / self.cfg.builder.context

    def target(self, host: str) -> SSHTarget:
        """How to reach `host`: the stack's `shipyard:ssh`, paths relative to the project (as in `pulumi up`)."""
        return target_of(self.cfg.ssh, host, base=self.project_dir, secrets=self.cfg.secrets)

    def hosts(self) -> tuple[str, ...]:
        """Every host of the destination: its roles' and its accessories'."""
        cfg = self.cfg
        acc = tuple(h for a in cfg.accessories.values() for h in a.all_hosts())
        return tuple(dict.fromkeys(cfg.all_hosts() + acc))

    def label_filters(self, **more: str) -> list[str]:
        """Docker label filters for this stack's own objects of its service and destination."""
        from .. import naming
        return [f"{naming.OWNER_LABEL}={self.owner}", f"{naming.SERVICE}={self.cfg.service}",
                f"{naming.DESTINATION}={self.cfg.destination}", *(f"{k}={v}" for k, v in more.items())]

    def history(self) -> list[auto.UpdateSummary]:
        with pulumi_errors(self.name, "reading the history"):
            return self.stack.history(show_secrets=False)

    def pending(self) -> list[str]:
        """What an interrupted run left in the state (a Ctrl-C twice, a killed deployer): its pending operations,
        as `<kind> <resource name>`."""
        with pulumi_errors(self.name, "reading the state"):
            state = self.stack.export_stack().deployment or {}
        return [f"{(op.get('type') or '?')} {(op.get('resource') or {}).get('urn', '?').rsplit('::', 1)[-1]}"
                for op in state.get("pending_operations") or []]

    @contextlib.contextmanager
    def _told(self, command: str) -> Iterator[None]:
        """The program of the run in this block is told what it runs for (`naming.COMMAND_ENV`; its hooks say it as
        `KAMAL_COMMAND`); unset, it is a deploy."""
        if command == "deploy":
            yield
            return
        env = self.stack.workspace.env_vars
        env[COMMAND_ENV] = command
        try:
            yield
        finally:
            env.pop(COMMAND_ENV, None)

    def leftovers(self) -> list[tuple[str, str, str]]:
        """(host, container ID, name) of this stack's containers still under a pending name: an interrupted
        create's, never ready, known to no state - found on every host of the destination that answers."""
        from .. import hosts, naming
        from ..errors import HostError
        try:
            filters = {"label": self.label_filters()}
        except StackError:
            return []  # nothing deployed yet, so nothing of this stack's to tell apart
        found = []
        for host in self.hosts():
            try:
                with hosts.docker_errors(self.target(host), "looking for what an interrupted run left"):
                    items = hosts.client(self.target(host)).containers(all=True, filters=filters)
            except HostError:
                continue  # the deploy reports an unreachable host
            found += [(host, i["Id"], i["Names"][0].lstrip("/")) for i in items
                      if naming.is_pending((i.get("Names") or ["/"])[0])]
        return found

    def remove(self, containers: list[tuple[str, str, str]]) -> list[str]:
        """Remove these containers (`leftovers`); returns what was removed, as `removed <name>`."""
        from .. import hosts
        from ..errors import HostError
        from ..providers.container import remove_container
        done = []
        for host, cid, name in containers:
            try:
                with hosts.docker_errors(self.target(host), f"removing {name}"):
                    remove_container(hosts.client(self.target(host)), cid)
                done.append(f"removed {name}")
            except HostError:
                pass  # gone already, or the host is unreachable: the next create of its role removes it
        return done

    def stop_strays(self) -> list[str]:
        """Workers an interrupted rollout had started (its `rollout-start` ran, its `rollout-retire` did not) run
        next to the ones the last whole rollout left: stopped again, with the role's drain time, wherever the
        recorded one still runs. Returns what was stopped, as `stopped <name>`."""
        from .. import hosts
        from ..errors import HostError
        with pulumi_errors(self.name, "reading the state"):
            resources = (self.stack.export_stack().deployment or {}).get("resources") or []
        try:
            owned = self.label_filters()
        except StackError:
            return []  # nothing deployed yet
        rollout = (type_token("Rollout"), DYNAMIC_TYPE.format("Rollout"))  # (an interrupted run of an earlier release)
        entries = [e for r in resources if r.get("type") in rollout
                   and (r.get("inputs") or {}).get("step") == "retire"
                   for e in rollout_entries(r["inputs"]) if not e.get("proxied")]
        done = []
        for e in entries:
            host = e["target"]["host"]
            try:
                with hosts.docker_errors(self.target(host), "stopping what an interrupted run started"):
                    c = hosts.client(self.target(host))
                    running = c.containers(filters={"label": [*owned, f"role={e['role']}"]})
                    if not any(i["Id"] == e["container_id"] for i in running):
                        continue  # the recorded one no longer runs: the next rollout decides
                    for i in running:
                        if i["Id"] != e["container_id"]:
                            c.stop(i["Id"], timeout=int(e.get("stop_timeout") or 10))
                            done.append(f"stopped {i['Names'][0].lstrip('/')}")
            except HostError:
                continue  # the deploy reports an unreachable host
        return done

    def up(self, *, message: str, lock_wait: float = 0, on_output: Callable[[str], None] | None = None,
           on_wait: Callable[[str], None] | None = None,
           on_heal: Callable[[list[str]], None] | None = None, command: str = "deploy") -> auto.UpResult:
        """`pulumi up` through the Automation API. When another process holds the stack's lock, retry until
        `lock_wait` seconds have passed (0: fail at once, naming the holder).

        What an interrupted run left pending (a Ctrl-C twice, a killed deployer) is cleared first, with every
        resource read back from its host (`pulumi refresh --clear-pending-creates`), and reported to `on_heal`.
        Safe here: a create that never finished left its container under a pending name - removed here, as no
        state knows it - and one that did left it under its final name, which the next create of that role takes
        over. While another process updates the stack, its operations in flight show as pending too: once its
        lock stopped the refresh, they are that process's, so this one waits for the lock and updates without a
        refresh (had it been interrupted, the next deploy clears what it left). A lock released just as this one
        read it (`LOCK_RELEASED`) is tried again at once, a few times or until `lock_wait` has passed."""
        deadline = time.monotonic() + lock_wait
        told = contended = False
        raced = 0
        while True:
            try:
                found = [] if contended else self.pending()
                if found:
                    left = self.leftovers()  # listed before the refresh: nothing a later run creates
                    self.stack.refresh(clear_pending_creates=True, color="never", suppress_progress=True,
                                       on_output=on_output)
                    done = self.remove(left) + self.stop_strays()
                    if on_heal:
                        on_heal(found + done)
                with self._told(command):
                    return self.stack.up(message=message, on_output=on_output, color="never",
                                         suppress_progress=True,
                                         parallel=plan.engine_parallel(len(self.hosts()), os.cpu_count() or 1))
            except auto.ConcurrentUpdateError as exc:
                contended = True
                if time.monotonic() + LOCK_RETRY_S > deadline:
                    if lock_wait <= 0:
                        with pulumi_errors(self.name, "deploying"):
                            raise exc
                    raise StackLocked(self.name, f"waited {lock_wait:g}s, and "
                                                 f"{lock_holder(_text(exc)) or 'another process'} still updates "
                                                 f"this stack: try again later, or with a longer --lock-wait") \
                        from None
                if on_wait and not told:
                    on_wait(lock_holder(_text(exc)) or "another process")
                    told = True
                time.sleep(LOCK_RETRY_S)
            except auto.CommandError as exc:
                if LOCK_RELEASED.search(_text(exc)) and (raced < LOCK_RACE_TRIES
                                                          or time.monotonic() + LOCK_RETRY_S <= deadline):
                    raced += 1
                    contended = True  # what showed as pending was the finished holder's
                    time.sleep(LOCK_RETRY_S / 10)
                    continue
                raise StackError(self.name, f"deploy failed: {command_error_line(_text(exc))}") from None


def open_stack(name: str | None, cwd: Path | None = None) -> StackContext:
    project_dir = find_project((cwd or Path.cwd()).resolve())
    ws = workspace(project_dir)
    # a stack that does not exist is reported by the first command that names it (StackNotFoundError)
    name = name or selected_stack(ws)
    return StackContext(name=name, project_dir=project_dir, ws=ws)

