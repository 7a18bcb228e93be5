"""Kamal's command lines as `shipyard` commands: a stack's `aliases` (`shipyard console` runs the alias `console`, a
Kamal command line such as `app exec -i --reuse "bin/rails console"`, with the words after the alias appended, as
Kamal appends them), and Kamal's own words typed at the command line (`shipyard app logs -r web -d staging`): each
read as the `shipyard` command that does the same (`logs --role web -s staging`), Kamal's destination as the
stack."""

from __future__ import annotations

import shlex
from typing import Collection, Sequence

from ..errors import ConfigError

# Kamal's command words -> shipyard's; what follows is passed on, Kamal's option names translated
COMMANDS = {("app", "exec"): ["exec"], ("app", "logs"): ["logs"], ("app", "details"): ["details"],
            ("details",): ["details"], ("app", "maintenance"): ["maintenance"], ("app", "live"): ["live"],
            ("rollback",): ["rollback"], ("deploy",): ["deploy"], ("redeploy",): ["deploy"], ("audit",): ["audit"],
            ("lock", "status"): ["lock", "status"], ("lock", "release"): ["lock", "release"],
            ("accessory", "reboot"): ["accessory", "reboot"], ("accessory", "logs"): ["logs", "--role"],
            ("app", "containers"): ["versions"], ("prune", "all"): ["prune"], ("prune",): ["prune"]}
# Kamal 2.11's commands (`kamal help`, `kamal GROUP help`): those without a counterpart here are refused by name
KAMAL = {"accessory": ("boot", "details", "exec", "logs", "reboot", "remove", "restart", "start", "stop", "upgrade"),
         "app": ("boot", "containers", "details", "exec", "images", "live", "logs", "maintenance", "remove",
                 "stale_containers", "start", "stop", "version"),
         "build": ("create", "deliver", "details", "dev", "pull", "push", "remove"), "lock": ("acquire", "release",
                                                                                                "status"),
         "proxy": ("boot", "boot_config", "details", "logs", "reboot", "remove", "restart", "start", "stop"),
         "registry": ("login", "logout", "remove", "setup"), "secrets": ("extract", "fetch", "print"),
         "server": ("bootstrap", "exec"),
         **{c: () for c in ("audit", "config", "deploy", "details", "docs", "init", "prune", "redeploy", "remove",
                            "rollback", "setup", "upgrade", "version")}}
OPTIONS = {"--roles": "--role", "-r": "--role", "--hosts": "--host", "-h": "--host", "--lines": "-n"}
LOGS = {"-s": "--since", "-g": "--grep"}  # Kamal's `logs` options whose letters mean otherwise in shipyard
DESTINATION = ("-d", "--destination")  # Kamal's destination is the stack
STACK = ("-s", "--stack", *DESTINATION)


def _stack_flags(command: Sequence[str]) -> tuple[str, ...]:
    """What names the stack after `command` (shipyard's): Kamal's destination, or shipyard's `-s` where Kamal's
    command gives that letter no other meaning."""
    return STACK[1:] if command[0] == "logs" else STACK


def stack_in(words: Sequence[str], command: Sequence[str] = ("",)) -> tuple[str | None, list[str]]:
    """The stack `words` (after `command`) name, and the words without it."""
    words, flags = list(words), _stack_flags(command)
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if eq and flag in flags and flag.startswith("--"):
            return value, words[:i] + words[i + 1:]
        if not eq and word in flags and i + 1 < len(words):
            return words[i + 1], words[:i] + words[i + 2:]
    return None, words


def _known(words: Sequence[str]) -> tuple[list[str], int] | None:
    """The `shipyard` command for Kamal's command at the start of `words`, and how many words Kamal's took."""
    for size in (2, 1):
        command = COMMANDS.get(tuple(words[:size]))
        if command is not None:
            return command, size
    return None


def _translated(command: list[str], words: Sequence[str]) -> list[str]:
    """`command` with Kamal's words after it, their option names as shipyard's (`logs -s 5m` is Kamal's since); the
    stack (`-d`) right after the command's own words: after the options, a word would be the command's (`exec`'s)."""
    stack, words = stack_in(words, command)
    lead = next((i for i, w in enumerate(command) if w.startswith("-")), len(command))
    out = [*command[:lead], *([f"--stack={stack}"] if stack is not None else []), *command[lead:]]
    options = {**OPTIONS, **(LOGS if command[0] == "logs" else {})}
    for word in words:
        flag, eq, value = word.partition("=")
        out.append(options[flag] + eq + value if flag in options else word)
    return out


def expand(name: str, line: str, rest: Sequence[str]) -> list[str]:
    """The `shipyard` argv for alias `name` (its Kamal command `line`) followed by `rest` (pure)."""
    words = shlex.split(line)
    known = _known(words)
    if known is None:
        raise ConfigError(f"aliases.{name}", f"`{line}` is no Kamal command shipyard runs (it runs "
                                             f"{', '.join(' '.join(k) for k in COMMANDS)})")
    command, size = known
    return _translated(command, [*words[size:], *rest])


def as_shipyard(argv: Sequence[str], commands: Collection[str]) -> list[str] | None:
    """`argv` as the `shipyard` command it means: shipyard's own (`commands`), given Kamal's destination as the
    stack; Kamal's words (`app logs`, `accessory logs db`) as their counterpart; None for neither (an alias?)."""
    known = _known(argv)
    if argv[0] not in commands or known is not None and known[0] != list(argv[:known[1]]) or \
            known is None and argv[1:2] and argv[1] in KAMAL.get(argv[0], ()):  # `accessory exec`: Kamal's alone
        return kamal_words(argv)
    return destination_as_stack(argv)


def destination_as_stack(argv: Sequence[str]) -> list[str]:
    """`argv` of a `shipyard` command, Kamal's destination (`-d`, `--destination`) given as the stack; its other
    words as they are (`-h` is help here) - and all of `exec`'s, whose words are the command it runs."""
    if not argv or argv[0] == "exec":
        return list(argv)
    out = []
    for word in argv:
        flag, eq, value = word.partition("=")
        out.append(("-s" if flag == "-d" else "--stack") + eq + value if flag in DESTINATION else word)
    return out


def kamal_words(argv: Sequence[str]) -> list[str] | None:
    """`argv` typed as Kamal's command line (`app logs -r web -d staging`; its first word no `shipyard` command) as
    the `shipyard` command that does the same; None when it starts with no Kamal word (an alias, maybe). A Kamal
    command shipyard has no counterpart for is refused, naming the ones it runs (pure)."""
    known = _known(argv)
    if known is not None:
        return _translated(known[0], argv[known[1]:])
    if argv and argv[0] in KAMAL:
        group = KAMAL[argv[0]]
        kamal = " ".join(argv[:2] if argv[1:2] and argv[1] in group else argv[:1])
        runs = [" ".join(k) for k in COMMANDS if k[0] == argv[0] and len(k) == 2]
        which = f"of Kamal's `{argv[0]}` commands it runs" if runs else "the Kamal commands it runs are"
        raise ConfigError("COMMAND", f"`{kamal}` is a Kamal command shipyard has no counterpart for; {which} "
                                     f"{', '.join(runs or (' '.join(k) for k in COMMANDS))} (see `shipyard --help` "
                                     f"for its own)")
    return None


def resolve(argv: Sequence[str]) -> list[str]:
    """`argv` whose first word is no `shipyard` command: the stack's alias of that name, expanded."""
    from .stack import open_stack
    name, rest = argv[0], list(argv[1:])
    ctx = open_stack(stack_in(rest)[0])
    aliases = ctx.cfg.aliases
    if name not in aliases:
        raise ConfigError("COMMAND", f"{name!r} is no shipyard command, nor an alias of stack {ctx.name} "
                                     f"({', '.join(sorted(aliases)) or 'it has none'}): see `shipyard --help`")
    return expand(name, aliases[name], rest)
