"""Mapping Kamal's `env` (clear, secret, `NAME:ALIAS`), the secret values the config uses, and `volumes`."""

from __future__ import annotations

from typing import Any

from ..config import VOLUME
from .mapping_base import NOT_YET, MapperBase, unknown_key

ENV_KEYS = ("clear", "secret")
UNREAD = "(unread)"  # a secret's value where none is needed (`MapperBase.secrets_needed`)


class EnvMapping(MapperBase):
    def env(self, conf: Any, path: str, *, root: bool) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse(path, "should be a hash")
            return {}
        if not {"clear", "secret", "tags"} & set(conf):
            return {"clear": self.strings(conf, path) or {}}  # the short form: every key is clear
        out: dict[str, Any] = {}
        for key in conf:
            if key == "tags" and root:
                continue  # env_tags
            elif key not in ENV_KEYS:
                self.refuse(f"{path}.{key}", unknown_key(key, ENV_KEYS))
        if "clear" in conf:
            out["clear"] = self.strings(conf["clear"], f"{path}.clear") or {}
        if "secret" in conf:
            names = conf["secret"]
            if not isinstance(names, list):
                self.refuse(f"{path}.secret", "should be an array")
                names = []
            out["secret"] = []
            for i, item in enumerate(names):
                name, _, key = str(item).partition(":")
                key = key or name
                seen = self.needed.get(name)
                if seen and seen[0] != key:
                    self.refuse(f"{path}.secret[{i}]", f"{name} is read from secret {key} here and from {seen[0]} "
                                                       f"in {seen[1]}; shipyard gives a name one value per destination")
                    continue
                self.needed.setdefault(name, (key, f"{path}.secret[{i}]"))
                out["secret"].append(name)
        return out

    def secret(self, key: str, path: str) -> str | None:
        if key not in self.secrets.values and not self.secrets_needed:
            return UNREAD
        if key in self.secrets.blocked:
            self.refuse(path, self.blocked_message(key))
            return None
        if key not in self.secrets.values:
            # the stack's own registry login wins over the file's (an accessory's has no such key)
            alternative = f", or set it with `pulumi config set --secret --path 'shipyard:{path}' VALUE`" \
                if path.startswith("registry.") else ""
            self.refuse(path, f"secret {key} is in none of {', '.join(self.secrets.names)}: add it there"
                              f"{alternative}")
            return None
        return self.secrets.values[key]

    def blocked_message(self, key: str) -> str:
        return (f"secret {key} in {self.secrets.blocked[key]} runs a command ($(...)); shipyard runs them only when "
                f"the stack sets shipyard:kamal.run_secret_commands: true - or set the value with `pulumi config set "
                f"--secret --path 'shipyard:secrets.{key}' VALUE`")

    def secret_values(self) -> dict[str, str]:
        stacked = self.stack.get("secrets") if isinstance(self.stack.get("secrets"), dict) else {}
        out = {}
        for name, (key, path) in self.needed.items():
            if name in stacked:
                continue
            if key not in self.secrets.values and not self.secrets_needed and not path.startswith("ssh."):
                out[name] = UNREAD  # what is deployed is read, not deployed again: Kamal does not read it either
            elif key in self.secrets.blocked:
                self.refuse(path, self.blocked_message(key).replace(f"secrets.{key}'", f"secrets.{name}'"))
            elif key in self.secrets.values:
                out[name] = self.secrets.values[key]
            else:
                self.refuse(path, f"secret {key} is in none of {', '.join(self.secrets.names)}: add it there, or set "
                                  f"it with `pulumi config set --secret --path 'shipyard:secrets.{name}' VALUE`")
        return out

    def volumes(self, conf: Any, path: str) -> list[str]:
        if not isinstance(conf, list):
            self.refuse(path, "should be an array")
            return []
        out = []
        for i, v in enumerate(conf):
            if not VOLUME.match(str(v)):
                self.refuse(f"{path}[{i}]", f"{NOT_YET}: volumes are NAME:/path or /host/path:/path, optionally :ro")
            else:
                out.append(str(v))
        return out
