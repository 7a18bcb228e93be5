"""Kamal's secrets files: `.kamal/secrets-common`, then `.kamal/secrets[.<destination>]`, read as Kamal's dotenv 3
reads them (quotes, `#` comments, `$VAR`/`${VAR}`), with its inline command substitution `$(...)` - run only when
the caller gives a runner (the stack's `run_secret_commands: true`); otherwise such a value is marked blocked."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..errors import ConfigError

_DOTENV_LINE = re.compile(r"""(?:^|\A)\s*(?P<export>export\s+)?(?P<key>[\w.]+)(?:(?:\s*=\s*?|:\s+?)(?P<value>
    \s*'(?:\\'|[^'])*' | \s*"(?:\\"|[^"])*" | [^\#\n]+ )?)?\s*(?:\#.*)?(?:$|\Z)""", re.X | re.M)
_QUOTED = re.compile(r"""\A(['"])(.*)\1\Z""", re.S)
_VARIABLE = re.compile(r"(\\)?(\$)(?!\()\{?([A-Z0-9_]+)?\}?", re.I)


class _Blocked(str):
    """The value of a secret whose `$(...)` was not run; remembers the command's file and variable."""


@dataclass
class Secrets:
    values: dict[str, str]
    blocked: dict[str, str]  # name -> file holding a `$(...)` shipyard did not run
    files: tuple[str, ...]  # the files that exist, in the order read
    names: tuple[str, ...]  # the files Kamal looks for


CommandRunner = Callable[[str, Path], str]


def run_command(command: str, cwd: Path) -> str:
    """`$(command)` as Kamal runs it (in the app directory); `kamal secrets ...` gets `--inline`, as Kamal adds."""
    if re.match(r"\A\s*kamal\s*secrets\s+", command):
        command = f"{command} --inline"
    proc = subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"exited with code {proc.returncode}")
    return proc.stdout.rstrip("\n")


def _commands(value: str) -> list[tuple[int, int, bool]]:
    """(start, end, escaped) of each `$(...)` with balanced parentheses (Kamal's recursive regex)."""
    found, i = [], 0
    while True:
        i = value.find("$(", i)
        if i < 0:
            return found
        depth, j = 0, i + 1
        while j < len(value):
            ch = value[j]
            if ch == "\\":
                j += 2
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if depth != 0:
            return found
        found.append((i, j + 1, i > 0 and value[i - 1] == "\\"))
        i = j + 1


def parse_dotenv(text: str, environ: Mapping[str, str], *, label: str, cwd: Path, run: CommandRunner | None) \
        -> dict[str, str]:
    """Dotenv 3 as Kamal reads its secrets (overwrite: true): quotes stripped, single quotes literal, `$(...)` run
    (when `run` is given; otherwise the value is `_Blocked`), then `$VAR`/`${VAR}` from this file or the
    environment (unknown: empty)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    values: dict[str, str] = {}
    for m in _DOTENV_LINE.finditer(text):
        if m["export"] and m["value"] is None:
            if m["key"] not in values:
                raise ConfigError("kamal", f"{label}: line {m.group(0).strip()!r} has an unset variable")
            continue
        raw = (m["value"] or "").strip()
        q = _QUOTED.match(raw)
        quote = q[1] if q else None
        value = q[2] if q else raw
        if quote == '"':
            value = value.replace("\\n", "\\\\n").replace("\\r", "\\\\r")
        if quote == "'":
            values[m["key"]] = value
            continue
        value = re.sub(r"\\([^$])", r"\1", value)
        blocked = any(isinstance(values.get(v), _Blocked) for v in _referenced(value))
        parts, last = [], 0
        for start, end, escaped in _commands(value):
            parts.append(value[last:start])
            if escaped:
                parts.append(value[start + 1:end])
            elif run is None:
                blocked = True
            else:
                command = _substitute(value[start + 2:end - 1], values, environ)
                try:
                    parts.append(run(command, cwd))
                except Exception as exc:  # noqa: BLE001 - the user gets one line, never the command's output
                    raise ConfigError("kamal", f"{label}: the command in {m['key']} failed ({exc}); run it by hand "
                                               f"to see why") from None
            last = end
        parts.append(value[last:])
        value = _substitute("".join(parts), values, environ)
        values[m["key"]] = _Blocked(value) if blocked else value
    return values


def _referenced(value: str) -> list[str]:
    return [m[3] for m in _VARIABLE.finditer(value) if m[3] and not m[1]]


def _substitute(value: str, values: Mapping[str, str], environ: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m[1]:
            return m[0][1:]
        if m[3]:
            return values.get(m[3]) or environ.get(m[3]) or ""
        return m[0]
    return _VARIABLE.sub(sub, value)


def read_secrets(app_dir: Path, secrets_path: str, destination: str | None, environ: Mapping[str, str],
                 run: CommandRunner | None) -> Secrets:
    names = (f"{secrets_path}-common", f"{secrets_path}.{destination}" if destination else secrets_path)
    values: dict[str, str] = {}
    blocked: dict[str, str] = {}
    present = []
    for name in names:
        file = app_dir / name
        if not file.is_file():
            continue
        present.append(name)
        for key, value in parse_dotenv(file.read_text(), environ, label=name, cwd=app_dir, run=run).items():
            values[key] = str(value)
            if isinstance(value, _Blocked):
                blocked[key] = name
            else:
                blocked.pop(key, None)
    return Secrets(values, blocked, tuple(present), names)
