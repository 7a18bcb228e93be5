"""Mapping Kamal's `registry`, `builder` and `ssh` to shipyard's keys of the same names."""

from __future__ import annotations

import os
import re
from typing import Any

from .mapping_base import MapperBase, to_s, unknown_key

SSH_KEYS = ("user", "port", "keys", "key_data", "keys_only", "config", "proxy", "proxy_command", "log_level")
BUILDER_MAPPED = ("arch", "remote", "local", "context", "dockerfile", "target", "args")
BUILDER_NOT_YET = ("pack", "secrets", "ssh", "driver", "provenance", "sbom")
BUILDER_KEYS = ("cache", *BUILDER_MAPPED, *BUILDER_NOT_YET)


class BuildMapping(MapperBase):
    @staticmethod
    def local_registry(conf: Any) -> bool:
        return isinstance(conf, dict) and bool(re.match(r"^localhost[:$]", str(conf.get("server") or "")))

    def registry(self, conf: Any, path: str = "registry") -> dict[str, Any] | None:
        """The stack's registry (`registry`), or an accessory's own (`path`: accessories.NAME.registry)."""
        if conf is None:
            return None
        if not isinstance(conf, dict):
            self.refuse(path, "should be a hash")
            return None
        self.unknown(conf, ("server", "username", "password"), path)
        if path == "registry" and self.local_registry(conf):
            return None  # no registry: shipyard streams the image from the build host to the others
        out: dict[str, Any] = {"server": to_s(conf.get("server")) or "docker.io"}
        # the stack's own registry keys win over the file's (its secrets are never looked up in Kamal's files)
        own = self.stack.get("registry") if isinstance(self.stack.get("registry"), dict) and path == "registry" \
            else {}
        for key in ("username", "password"):
            value = conf.get(key)
            if value is None or value == "" or value == []:
                if not self.local_registry(conf) and own.get(key) is None:
                    self.refuse(f"{path}.{key}", "is required (Kamal refuses it too)")
                continue
            if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
                stacked = own.get(key)
                if stacked is None:
                    value = self.secret(value[0], f"{path}.{key}")
                    if value is None:
                        continue
                    if not value:  # `X=$X` in the secrets file, with X unset where this runs
                        self.refuse(f"{path}.{key}", f"secret {conf[key][0]} is empty (in "
                                                     f"{', '.join(self.secrets.names)}): set what it reads from "
                                                     f"before deploying")
                        continue
                else:
                    value = stacked
            elif to_s(value) is None:
                self.refuse(f"{path}.{key}", "should be a string or an array with one secret name")
                continue
            out[key] = to_s(value)
        return out

    def builder(self, conf: Any) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("builder", "should be a hash")
            conf = {}
        for key in conf:
            if key in ("provenance", "sbom") and conf[key] in (False, "false"):
                continue  # what shipyard's builds are: no attestation is attached
            if key == "cache":
                continue  # a layer cache elsewhere: each build host keeps its own, which every build there uses
            if key in BUILDER_NOT_YET:
                self.refuse(f"builder.{key}")
            elif key not in BUILDER_MAPPED:
                self.refuse(f"builder.{key}", unknown_key(key, BUILDER_KEYS))
        arch = conf.get("arch")
        if isinstance(arch, list) and len(arch) > 1:
            self.refuse("builder.arch", "multi-arch images are not supported yet: shipyard builds one image on the "
                                        "build host, for its own architecture")
        context = str(conf.get("context") or ".")
        out: dict[str, Any] = {"context": self.rel(context)}
        if conf.get("context") is None:
            out["clean_checkout"] = True  # Kamal builds from a clean clone of HEAD unless a context is given
        if arch is not None:
            arches = arch if isinstance(arch, list) else [arch]
            if len(arches) == 1 and to_s(arches[0]):
                out["arch"] = to_s(arches[0])
        if "dockerfile" in conf:
            dockerfile = os.path.relpath(self.app_dir / str(conf["dockerfile"]), self.app_dir / context)
            if dockerfile.startswith(".."):
                self.refuse("builder.dockerfile", "must be inside the build context")
            else:
                out["dockerfile"] = dockerfile
        if "target" in conf:
            out["target"] = to_s(conf["target"])
        if "args" in conf:
            args = self.strings(conf["args"], "builder.args")
            if args:
                out["args"] = args
        if conf.get("remote"):
            m = re.match(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?/?$", str(conf["remote"]))
            ssh = self.raw.get("ssh") if isinstance(self.raw.get("ssh"), dict) else {}
            user, port = str(ssh.get("user", "root")), str(ssh.get("port", 22))
            if not m:
                self.refuse("builder.remote", "only ssh://[user@]host[:port] builders are supported")
            else:
                out["host"] = m["host"]
                if (m["user"] or user) != user:
                    out["user"] = m["user"]
                if (m["port"] or port) != port:
                    out["port"] = int(m["port"])
        return out

    def key_data(self, value: str, path: str, i: int) -> str:
        """The secret holding one `ssh.key_data` key: as Kamal reads it, the secret of that name, else the key
        itself (written inline, which Kamal deprecates: a PEM header no secret's name has), held as a secret of its
        own."""
        if "PRIVATE KEY-----" not in value:
            self.needed.setdefault(value, (value, path))  # a missing one is refused with where to put it
            return value
        self.own_secrets[f"SSH_KEY_DATA_{i}"] = value
        return f"SSH_KEY_DATA_{i}"

    def ssh(self, conf: Any) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("ssh", "should be a hash")
            return {}
        out: dict[str, Any] = {"config": True}  # Kamal (Net::SSH) reads OpenSSH's config files unless told not to
        for key, value in conf.items():
            path = f"ssh.{key}"
            if key == "user":
                out["user"] = to_s(value)
            elif key == "port":
                try:
                    out["port"] = int(value)
                except (TypeError, ValueError):
                    self.refuse(path, "should be a port number")
            elif key == "keys":
                if isinstance(value, list):
                    out["keys"] = [str(k) if str(k).startswith(("~", "/")) else self.rel(str(k)) for k in value]
                else:
                    self.refuse(path, "should be an array")
            elif key == "log_level":
                continue  # SSH client logging: no effect on what is deployed
            elif key == "keys_only" and isinstance(value, bool):
                if value:
                    out["keys_only"] = True
            elif key == "config" and isinstance(value, bool):
                out["config"] = value
            elif key == "config" and (to_s(value) or isinstance(value, list) and all(map(to_s, value))):
                out["config"] = [self.rel(str(f)) if not str(f).startswith(("~", "/")) else str(f)
                                 for f in (value if isinstance(value, list) else [value])]
            elif key == "proxy" and to_s(value):  # Kamal's jump host: its user is root unless it names one
                out["proxy"] = to_s(value) if "@" in to_s(value) else f"root@{to_s(value)}"
            elif key == "proxy_command" and to_s(value):
                if not conf.get("proxy"):  # Kamal takes the jump host where both are given
                    out["proxy_command"] = to_s(value)
            elif key == "key_data" and isinstance(value, list) and all(map(to_s, value)):
                out["key_data"] = [self.key_data(to_s(k), f"{path}[{i}]", i) for i, k in enumerate(value)]
            elif key in ("proxy", "proxy_command"):
                self.refuse(path)
            elif key == "key_data":
                self.refuse(path, "should be an array of secret names")
            elif key == "config":
                self.refuse(path, "should be true, false, or a file path or an array of them")
            else:
                self.refuse(path, unknown_key(key, SSH_KEYS))
        return out
