"""The host lock: what destinations (and services) share on a host - the kamal-proxy container, its config volume,
the `kamal` network - is changed only under a lock that lives on the host itself, so two stacks deploying from two
machines at the same moment take turns.

It is `flock` on a file in the SSH user's state directory, held by a command over an SSH channel for as long as the
channel is open: it dies with the connection, so a killed deployer cannot leave it stale. Exclusive holders change
the proxy's existence (create, upgrade, remove); shared holders route through it (`kamal-proxy deploy`/`remove`),
so one destination's health wait never holds up another's. Each holder leaves a note (stack, process, machine,
time) that a waiter names when its deadline passes.

Each held lock has an SSH connection of its own (`hosts.own_connection`), never the one the Docker API and commands
share: a broken connection there, and the reconnect after it, cannot drop a lock. If the lock's own connection
dies (or `shipyard lock release` ends it), the lock is gone and the holder must not go on as if it had it: the
holder asks the process holding it on the host (`HeldLock.check`, one round trip on the lock's connection) before
each change the lock guards, and once more when the block ends, so work done after the loss fails with `LockLost`
instead of passing as done under the lock. Checking before a change, not watching all along, keeps it one round
trip each; a loss in the middle of a change is still reported, by the check that ends the block."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import time
from typing import Iterator

from . import hosts, naming
from .errors import HostError, LockLost
from .hosts import SSHTarget, docker_errors, run

LOCK_DIR = f"{naming.STATE_DIR}/locks"
HOLDERS = f"{LOCK_DIR}/holders"
# The locks a host has: `host` for what destinations share there (kamal-proxy: exclusive to start or replace it,
# shared to route); `images` for the daemon's image store (shared while building - a build reuses other images'
# layers as its cache -, exclusive while removing images and the build parents that go with them).
LOCKS = ("host", "images")
CHECK_TIMEOUT_S = 10  # how long the holding process on the host may take to answer `HeldLock.check`


class LockTimeout(HostError):
    pass


def _note(stack: str, doing: str, shared: bool, lock: str) -> str:
    return json.dumps({"stack": stack, "doing": doing, "mode": "shared" if shared else "exclusive", "lock": lock,
                       "pid": os.getpid(), "machine": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, sort_keys=True)


def _script(shared: bool, timeout: float, note: str, lock: str) -> str:
    """Waits up to `timeout` for the lock, writes the holder's note, says `locked`, then holds the lock until its
    standard input closes (the channel, or the whole connection, goes away), answering `held` to each line it
    reads meanwhile."""
    mode = "-s" if shared else "-x"
    inner = (f"mkdir -p {HOLDERS} && printf '%s\\n' {shlex.quote(note)} > {HOLDERS}/$$ && echo locked && "
             f"while read -r line; do echo held; done; rm -f {HOLDERS}/$$")
    return (f"cd && mkdir -p {LOCK_DIR} && chmod 700 {naming.STATE_DIR} && "
            f"exec flock {mode} -o -w {int(max(timeout, 1))} {LOCK_DIR}/{lock}.lock sh -c {shlex.quote(inner)}")


class HeldLock:
    """One of the host's locks, held by this process over a connection of its own."""

    def __init__(self, t: SSHTarget, chan, what: str, doing: str):
        self.target, self.chan, self.what, self.doing = t, chan, what, doing

    def check(self, before: str | None = None) -> None:
        """Raises LockLost unless the process holding the lock on the host still answers on its channel. Call it
        before each change the lock guards (`before`: that change, for the message)."""
        if not self.holds():
            step = f" before {before}" if before else ""
            raise LockLost(str(self.target), f"the {self.what} taken for {self.doing} was lost{step} (its SSH "
                                              f"connection broke, or `shipyard lock release` ended it); nothing "
                                              f"after that point was done: run `pulumi up` again")

    def holds(self) -> bool:
        """Whether the process holding the lock on the host still answers on the lock's channel."""
        import paramiko  # loaded already: the lock's connection is open
        chan = self.chan
        if chan.closed or chan.exit_status_ready():
            return False
        try:
            chan.settimeout(CHECK_TIMEOUT_S)
            chan.sendall(b"?\n")
            answer = b""
            while not answer.endswith(b"held\n"):
                chunk = chan.recv(64)
                if not chunk:
                    return False
                answer += chunk
            return True
        except (OSError, EOFError, paramiko.SSHException):
            return False


@contextlib.contextmanager
def held(t: SSHTarget, *, stack: str, doing: str, timeout: float, shared: bool = False,
         lock: str = "host") -> Iterator[HeldLock]:
    """Hold one of the host's locks (`LOCKS`) while the block runs, on an SSH connection of its own. Raises
    LockTimeout naming the holders if it is not had within `timeout` seconds, and LockLost when the block ends if
    the lock was lost meanwhile (`HeldLock.check` says so before a change)."""
    assert lock in LOCKS, lock
    what = "host lock" if lock == "host" else f"host's {lock} lock"
    taking = f"taking the {what} for {doing}"
    with hosts.own_connection(t) as ssh:
        with docker_errors(t, taking, shared=False):
            chan = hosts.open_session(ssh, 30)
        try:
            with docker_errors(t, taking, shared=False):
                chan.settimeout(timeout + 30)
                chan.set_combine_stderr(True)
                chan.exec_command(_script(shared, timeout, _note(stack, doing, shared, lock), lock))
                answer = b""
                while not answer.endswith(b"locked\n"):
                    chunk = chan.recv(1024)
                    if not chunk:
                        break
                    answer += chunk
            if not answer.endswith(b"locked\n"):
                status = chan.recv_exit_status()
                chan.close()
                if status == 1 and not answer.strip():
                    raise LockTimeout(str(t), f"{doing} waited {timeout:g}s for the {what}, held by "
                                              f"{describe(holders(t, lock))}. If that deploy is still running, wait "
                                              f"or raise `lock_timeout`; if it is gone, its SSH session is too and "
                                              f"the lock frees itself, or run `shipyard lock release` for this host")
                raise HostError(str(t), f"cannot take the {what} for {doing}: "
                                        f"{answer.decode(errors='replace').strip() or f'exit status {status}'}: "
                                        f"the host needs `flock` (util-linux) and a writable home directory")
            holding = HeldLock(t, chan, what, doing)
            yield holding
            if not holding.holds():
                raise LockLost(str(t), f"the {what} taken for {doing} was lost while it ran (its SSH connection "
                                       f"broke, or `shipyard lock release` ended it): what was done meanwhile may "
                                       f"have crossed another deploy's change; run `pulumi up` again")
        finally:
            chan.close()


def holders(t: SSHTarget, lock: str | None = None) -> list[dict]:
    """The notes of the live holders of the host's locks, or of one of them (stale notes of holders that are gone
    are dropped)."""
    script = (f"cd && for f in {HOLDERS}/*; do [ -e \"$f\" ] || continue; "
              f"if kill -0 \"${{f##*/}}\" 2>/dev/null; then printf '%s %s\\n' \"${{f##*/}}\" \"$(cat \"$f\")\"; "
              f"else rm -f \"$f\"; fi; done")
    _, out = run(t, ["sh", "-c", script], doing="reading the host lock's holders")
    found = []
    for line in out.splitlines():
        pid, _, note = line.partition(" ")
        try:
            holder = {"lock": "host", **json.loads(note), "host_pid": int(pid)}
        except ValueError:
            continue
        if lock is None or holder["lock"] == lock:
            found.append(holder)
    return found


def describe(found: list[dict]) -> str:
    if not found:
        return "a holder that left no note"
    return "; ".join(f"stack {h.get('stack')} ({h.get('doing')}, {h.get('mode')}"
                     f"{'' if h.get('lock', 'host') == 'host' else ' ' + h['lock'] + ' lock'}, pid {h.get('pid')} "
                     f"on {h.get('machine')} since {h.get('since')})" for h in found)


def release(t: SSHTarget) -> list[dict]:
    """Ends every holder's session on the host (for a lock whose deployer is gone but whose SSH session lingers).
    Returns the holders it ended."""
    found = holders(t)
    for h in found:
        run(t, ["kill", str(h["host_pid"])], doing="releasing the host lock")
    return found
