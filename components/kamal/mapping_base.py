"""What every part of the Kamal-to-shipyard mapping shares: the mapper's inputs, how a key is refused by its path,
and Ruby's `to_s` for the scalars Kamal takes where it wants a string."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..payloads import run_options
from .merge import join
from .secrets import Secrets

NOT_YET = "not supported yet"
NO_EFFECT = frozenset({"sshkit", "run_directory", "minimum_version", "hooks_output", "allow_empty_roles"})


def unknown_key(key: Any, known: Iterable[str] = ()) -> str:
    """Why a key Kamal does not know is refused, with the known one it looks like (of `known`)."""
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    return f"unknown Kamal key{f' (did you mean {near[0]}?)' if near else ''}; Kamal 2.11 refuses it too"


def to_s(value: Any) -> str | None:
    """Ruby's `to_s` for the scalars Kamal accepts where it wants a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


@dataclass
class MapperBase:
    raw: dict[str, Any]
    app_dir: Path
    project_dir: Path
    destination: str | None
    secrets: Secrets
    stack: Mapping[str, Any]
    problems: list[tuple[str, str, bool]] = field(default_factory=list)  # (path, message, ignorable)
    needed: dict[str, tuple[str, str]] = field(default_factory=dict)  # env name -> (secret key, path)
    own_secrets: dict[str, str] = field(default_factory=dict)  # secrets the config holds itself (inline key_data)
    secrets_needed: bool = True  # False: a secret missing (or behind a command) is left unread (`kamal.load`)

    def refuse(self, path: str, message: str = NOT_YET, *, ignorable: bool | None = None) -> None:
        """Refuse the key at `path`. Ignorable (by default, a feature not supported yet): listing it in
        shipyard:kamal.ignore deploys without it. Anything else - a typo, a missing secret - is refused whatever
        the ignore list says: deploying without it would not be this app."""
        self.problems.append((path, message, message.startswith(NOT_YET) if ignorable is None else ignorable))

    def rel(self, local: str) -> str:
        """A path in the Kamal app directory, as shipyard reads paths: relative to the Pulumi project."""
        return os.path.relpath(os.path.normpath(self.app_dir / os.path.expanduser(local)), self.project_dir)

    def strings(self, value: Any, path: str) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.refuse(path, "should be a hash")
            return None
        out = {}
        for k, v in value.items():
            s = to_s(v)
            if s is None:
                self.refuse(f"{path}.{k}", "should be a string")
            else:
                out[str(k)] = s
        return out

    def run_options(self, conf: Any, path: str) -> dict[str, Any]:
        """Kamal's `options` (`docker run` flags): those shipyard sets; any other is refused by its path."""
        if not isinstance(conf, dict):
            self.refuse(path, "should be a hash")
            return {}
        out: dict[str, Any] = {}
        for flag, value in conf.items():
            value = [str(v) for v in value] if isinstance(value, list) else value if isinstance(value, bool) \
                else to_s(value)
            try:
                run_options({str(flag): value})
            except ValueError as exc:
                self.refuse(f"{path}.{flag}", str(exc).split(": ", 1)[1], ignorable=True)
                continue
            out[str(flag)] = value
        return out

    def logging(self, conf: Any, path: str) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse(path, "should be a hash")
            return {}
        self.unknown(conf, ("driver", "options"), path)
        out: dict[str, Any] = {}
        if conf.get("driver") is not None:
            out["driver"] = to_s(conf["driver"])
        if "options" in conf:
            out["options"] = self.strings(conf["options"], f"{path}.options") or {}
        return out

    def unknown(self, conf: dict[str, Any], known: Iterable[str], path: str) -> None:
        known = tuple(known)
        for key in conf:
            if key not in known:
                self.refuse(join(path, str(key)), unknown_key(key, known))

