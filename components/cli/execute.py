"""`shipyard exec`: run a command in a new container from the destination's current image, with the running
container's environment (passed in a 0600 env file on the host, removed afterwards), the role's volumes and the
destination's network - Kamal's `app exec` - or, with `--reuse`, inside the running container. `-i` gives a real
terminal: an SSH channel with a pseudo-terminal running `docker run -it` / `docker exec -it` on the host, as Kamal
does; it needs one on stdin. A new container is removed afterwards, also when this command is stopped."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import termios
import tty
import uuid
from typing import Any, Iterator

from .. import hostfiles, hosts, naming, payloads
from ..hosts import docker_errors
from ..config import Deploy
from ..errors import ConfigError
from . import interrupts
from .stack import StackContext


def command_argv(words: list[str]) -> list[str]:
    """`exec 'bin/rails console'` (one string, split like a shell would) or `exec -- ls -l /` (words as given)."""
    words = words[1:] if words[:1] == ["--"] else words
    if not words:
        raise ConfigError("COMMAND", "give the command to run, e.g. `shipyard exec -- ls /` or "
                                     "`shipyard exec -i sh`")
    return shlex.split(words[0]) if len(words) == 1 else list(words)


def docker_argv(cfg: Deploy, role: str, image_id: str, container: str, command: list[str], *, reuse: bool,
                interactive: bool, env_file: str | None = None, name: str | None = None) -> list[str]:
    """The `docker` command run on the host (pure); `name`: the new container's."""
    tty_flags = ["-it"] if interactive else []
    if reuse:
        return ["docker", "exec", *tty_flags, container, *command]
    volumes = [a for b in payloads.volume_binds(cfg.servers[role].volumes, cfg.service, cfg.destination)
               for a in ("-v", b)]
    env = ["--env-file", env_file] if env_file else []
    return ["docker", "run", "--rm", *(["--name", name] if name else []), *tty_flags,
            "--network", naming.network_name(cfg.service, cfg.destination), *env, *volumes, image_id, *command]


def exec_name(cfg: Deploy, role: str) -> str:
    """A new exec container's name, as Kamal names its own: the role's prefix, `exec`, a random suffix."""
    return f"{cfg.service}-{role}-{cfg.destination}-exec-{uuid.uuid4().hex[:6]}"


def env_file_text(env: list[str]) -> bytes:
    """A container's `Config.Env` as a docker env file (values with a line break cannot be passed this way)."""
    return "".join(f"{e}\n" for e in env if "\n" not in e).encode()


def pick(outputs: dict[str, Any], cfg: Deploy, role: str | None, host: str | None) -> tuple[str, str, str]:
    """(role, host, current container name): `web` (or the first role) on the role's first host by default."""
    if not cfg.servers:
        raise ConfigError("--role", "this stack runs accessories only: no role to run a command in")
    role = role or ("web" if "web" in cfg.servers else next(iter(cfg.servers)))
    if role not in cfg.servers:
        raise ConfigError("--role", f"no role {role!r}: roles are {', '.join(cfg.servers)}")
    host = host or cfg.servers[role].hosts[0]
    current = (outputs.get("containers") or {}).get(host, {}).get(role)
    if current is None:
        raise ConfigError("--host", f"role {role} runs on {', '.join(cfg.servers[role].hosts)}, not on {host}")
    return role, host, current["name"]


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The local terminal in raw mode while the remote one is attached (keys such as Ctrl-C go to the remote
    program); restored afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def running_env(ctx: StackContext, target, container: str, reuse: bool) -> Iterator[str | None]:
    """The running container's environment (clear and secret values) in a 0600 file on the host while the new
    container starts; removed afterwards, whatever happens."""
    if reuse:
        yield None
        return
    with docker_errors(target, f"inspecting {container}"):
        env = hosts.client(target).inspect_container(container)["Config"].get("Env") or []
    path = f"{naming.destination_dir(ctx.cfg.service, ctx.cfg.destination)}/exec-{uuid.uuid4().hex[:12]}.env"
    hostfiles.write_file(target, path, env_file_text(env))
    try:
        yield path
    finally:
        hostfiles.remove_file(target, path)


@contextlib.contextmanager
def removed_after(target, name: str | None) -> Iterator[None]:
    """The new exec container is gone afterwards, however this ends: `--rm` removes it when its command exits,
    but not when this process is stopped (a timeout's SIGTERM) or the connection drops while it runs."""
    try:
        with interrupts.exiting_on(signal.SIGTERM):
            yield
    finally:
        if name is not None:
            with contextlib.suppress(Exception):  # best effort: what the command did is what the user must see
                hosts.client(target).remove_container(name, force=True)


def run(ctx: StackContext, args: argparse.Namespace) -> int:
    if args.interactive and not os.isatty(sys.stdin.fileno()):
        raise ConfigError("--interactive", "attaches a terminal, and stdin is not one: run it from a terminal, or "
                                           "without -i to run the command and see its output")
    role, host, container = pick(ctx.outputs, ctx.cfg, args.role, args.host)
    target = ctx.target(host)
    name = None if args.reuse else exec_name(ctx.cfg, role)
    with running_env(ctx, target, container, args.reuse) as env_file, removed_after(target, name):
        return _attach(ctx, args, role, container, target, env_file, name)


def _attach(ctx: StackContext, args: argparse.Namespace, role: str, container: str, target, env_file,
            name: str | None) -> int:
    argv = docker_argv(ctx.cfg, role, ctx.outputs["image_id"], container, command_argv(args.command),
                       reuse=args.reuse, interactive=args.interactive, env_file=env_file, name=name)
    doing = f"running `{' '.join(command_argv(args.command))[:60]}` for role {role} of {ctx.cfg.destination}"
    if not args.interactive:
        return hosts.attach(target, argv, doing=doing, stdin_fd=None, stdout=sys.stdout.buffer,
                            stderr=sys.stderr.buffer)
    fd = sys.stdin.fileno()
    size = os.get_terminal_size(fd) if os.isatty(fd) else os.terminal_size((80, 24))
    with raw_terminal(fd):
        return hosts.attach(target, argv, doing=doing, stdin_fd=fd, stdout=sys.stdout.buffer,
                            stderr=sys.stderr.buffer, pty=(os.environ.get("TERM", "xterm"), size.columns, size.lines))


def _options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--role", help="whose image, env and volumes; default: web (or the first role)")
    p.add_argument("--host", help="where; default: the role's first host")
    p.add_argument("--reuse", action="store_true", help="run inside the running container instead of a new one")
    p.add_argument("-i", "--interactive", action="store_true", help="attach a terminal (a shell, a console)")
    return p


class _Command(argparse.Action):
    """The command's words. Kamal's form - one quoted string, then this command's options (`exec 'bin/rails
    console' -i -s staging`) - takes those options as this command's when every word after the string is one of
    them; otherwise (`exec ls -l /`), or after `--`, every word is the command's."""

    def __init__(self, *args: Any, trailing: argparse.ArgumentParser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trailing = trailing

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        words = list(values or [])
        if len(words) > 1 and words[0] != "--":
            try:
                options, rest = self.trailing.parse_known_args(words[1:])
            except argparse.ArgumentError:
                options, rest = None, words
            if options is not None and not rest:
                for key, value in vars(options).items():
                    if value not in (None, False):
                        setattr(namespace, key, value)
                words = words[:1]
        setattr(namespace, self.dest, words)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = _options(sub.add_parser("exec", parents=[common], help="run a command next to (or in) the destination's app",
                                description=__doc__))
    trailing = _options(argparse.ArgumentParser(add_help=False, parents=[common], exit_on_error=False))
    p.add_argument("command", nargs=argparse.REMAINDER, action=_Command, trailing=trailing,
                   help="the command (one quoted string, or words after --)")
    p.set_defaults(handler=run)
