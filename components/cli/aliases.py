"""Kamal's `aliases` as `shipyard` subcommands: `shipyard console` runs the stack's alias `console`, a Kamal command
line (`app exec -i --reuse "bin/rails console"`) read as the `shipyard` command that does the same, with the words
after the alias appended, as Kamal appends them."""

from __future__ import annotations

import shlex
from typing import Sequence

from ..errors import ConfigError

# Kamal's command words -> shipyard's; what follows is passed on, Kamal's option names translated
COMMANDS = {("app", "exec"): ["exec"], ("app", "logs"): ["logs"], ("app", "details"): ["details"],
            ("details",): ["details"], ("app", "maintenance"): ["maintenance"], ("app", "live"): ["live"],
            ("rollback",): ["rollback"], ("deploy",): ["deploy"], ("redeploy",): ["deploy"], ("audit",): ["audit"],
            ("lock", "status"): ["lock", "status"], ("lock", "release"): ["lock", "release"],
            ("accessory", "reboot"): ["accessory", "reboot"], ("prune", "all"): ["prune"], ("prune",): ["prune"]}
OPTIONS = {"--roles": "--role", "-r": "--role", "--hosts": "--host", "-h": "--host", "--lines": "-n"}


def expand(name: str, line: str, rest: Sequence[str]) -> list[str]:
    """The `shipyard` argv for alias `name` (its Kamal command `line`) followed by `rest` (pure)."""
    words = shlex.split(line)
    for size in (2, 1):
        command = COMMANDS.get(tuple(words[:size]))
        if command is not None:
            break
    else:
        raise ConfigError(f"aliases.{name}", f"`{line}` is no Kamal command shipyard runs (it runs "
                                             f"{', '.join(' '.join(k) for k in COMMANDS)})")
    rest = list(rest)
    stack: list[str] = []  # the stack first: after the command, its words would be the command's
    for flag in ("-s", "--stack"):
        while flag in rest[:-1]:
            i = rest.index(flag)
            stack, rest = rest[i:i + 2], rest[:i] + rest[i + 2:]
    out = [*command, *stack]
    for word in [*words[size:], *rest]:
        flag, eq, value = word.partition("=")
        out.append(OPTIONS[flag] + eq + value if flag in OPTIONS else word)
    return out


def resolve(argv: Sequence[str]) -> list[str]:
    """`argv` whose first word is no `shipyard` command: the stack's alias of that name, expanded."""
    from .stack import open_stack
    name, rest = argv[0], list(argv[1:])
    stack = next((rest[i + 1] for i, w in enumerate(rest[:-1]) if w in ("-s", "--stack")), None)
    ctx = open_stack(stack)
    aliases = ctx.cfg.aliases
    if name not in aliases:
        raise ConfigError("COMMAND", f"{name!r} is no shipyard command, nor an alias of stack {ctx.name} "
                                     f"({', '.join(sorted(aliases)) or 'it has none'}): see `shipyard --help`")
    return expand(name, aliases[name], rest)
