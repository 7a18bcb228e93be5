"""Mapping Kamal's `accessories` (hosts by host, role or tag; port, cmd, env, files, directories, volumes, labels)
and `boot`."""

from __future__ import annotations

import shlex
from typing import Any

from .mapping_base import NOT_YET, MapperBase, to_s, unknown_key

FILE_KEYS = ("local", "remote", "mode", "owner", "options")
ACCESSORY_KEYS = ("image", "host", "hosts", "role", "roles", "tag", "tags", "cmd", "port", "labels", "env", "volumes",
                  "files", "directories", "registry", "service", "options", "proxy", "network")


class AccessoriesMapping(MapperBase):
    def accessories(self, conf: Any, servers: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("accessories", "should be a hash")
            return {}
        tags = self.host_tags()
        out = {}
        for name, ac in conf.items():
            path = f"accessories.{name}"
            if not isinstance(ac, dict):
                self.refuse(path, "should be a hash")
                continue
            acc: dict[str, Any] = {}
            for key, value in ac.items():
                kp = f"{path}.{key}"
                if key == "image":
                    acc["image"] = to_s(value)
                elif key == "host":
                    acc["host"] = to_s(value)
                elif key == "hosts":
                    acc["hosts"] = self.hosts(value, kp)
                elif key in ("role", "roles"):
                    names = [value] if key == "role" else value
                    hosts = []
                    for r in names if isinstance(names, list) else []:
                        if str(r) not in servers:
                            self.refuse(kp, f"unknown role {r}")
                        else:
                            hosts += servers[str(r)]["hosts"]
                    acc["hosts"] = list(dict.fromkeys(hosts))
                elif key in ("tag", "tags"):
                    wanted = [value] if key == "tag" else value
                    acc["hosts"] = [h for h, t in tags.items() if set(t) & set(wanted or [])]
                elif key == "cmd":
                    cmd = to_s(value)
                    if cmd is None:
                        self.refuse(kp, "should be a string")
                    else:
                        acc["cmd"] = shlex.split(cmd)
                elif key == "port":
                    port = to_s(value) or ""
                    acc["port"] = port if ":" in port else f"{port}:{port}"
                elif key == "labels":
                    acc["labels"] = self.strings(value, kp) or {}
                elif key == "env":
                    acc["env"] = self.env(value, kp, root=False)
                elif key == "volumes":
                    acc["volumes"] = self.volumes(value, kp)
                elif key == "files":
                    acc["files"] = self.files(value, kp)
                elif key == "directories":
                    dirs, binds = self.directories(value, kp)
                    acc["directories"] = dirs
                    if binds:
                        acc["volumes"] = acc.get("volumes", []) + binds
                elif key == "registry":
                    registry = self.registry(value, kp)  # its own login: the image comes from there
                    if registry is not None:
                        acc["registry"] = registry
                elif key == "service":
                    acc["service"] = to_s(value)  # Kamal's container name for it, which the app may use
                elif key == "options":
                    acc["options"] = self.run_options(value, kp)
                elif key == "proxy":
                    if isinstance(value, dict):
                        acc["proxy"] = self.proxy(value, kp, report=True)
                    else:
                        self.refuse(kp, "should be a hash")
                elif key == "network":
                    acc["network"] = to_s(value)  # joined as well: apps keep reaching it on the destination's
                else:
                    self.refuse(kp, unknown_key(key, ACCESSORY_KEYS))
            out[str(name)] = acc
        return out

    def _paths(self, conf: Any, path: str) -> list[tuple[int, dict[str, str]]]:
        """(index, {local, remote, and options, mode, owner where given}) of Kamal's `files`/`directories`."""
        if not isinstance(conf, list):
            self.refuse(path, "should be an array")
            return []
        out = []
        for i, item in enumerate(conf):
            if isinstance(item, dict):
                for key in item:
                    if key not in FILE_KEYS:
                        self.refuse(f"{path}[{i}].{key}", unknown_key(key, FILE_KEYS))
                out.append((i, {k: str(v) for k, v in item.items() if v is not None}))
            else:
                local, remote, options = (str(item).split(":", 2) + [None, None])[:3]
                out.append((i, {"local": local, "remote": str(remote), **({"options": options} if options else {})}))
        return out

    def files(self, conf: Any, path: str) -> list[str | dict[str, str]]:
        out: list[str | dict[str, str]] = []
        for _, entry in self._paths(conf, path):
            entry = {**entry, "local": self.rel(entry.get("local", ""))}
            if set(entry) <= {"local", "remote", "options"}:  # the short form, as Kamal writes it
                out.append(":".join(entry[k] for k in ("local", "remote", "options") if k in entry))
            else:
                out.append(entry)
        return out

    def directories(self, conf: Any, path: str) -> tuple[list[str], list[str]]:
        dirs, binds = [], []
        for i, entry in self._paths(conf, path):
            local, remote, options = entry.get("local", ""), entry.get("remote", ""), entry.get("options")
            for key in ("mode", "owner"):
                if key in entry:
                    self.refuse(f"{path}[{i}].{key}", f"{NOT_YET}: a directory's {key}")
            mount = f"{remote}:{options}" if options else remote
            if local.startswith("/"):
                binds.append(f"{local}:{mount}")  # a host directory of its own: a bind mount
            elif ".." in local.split("/") or local in (".", ""):
                self.refuse(f"{path}[{i}]", "a directory is a NAME (kept with the accessory) or an absolute host "
                                            "path")
            else:
                dirs.append(f"{local}:{mount}")
        return dirs, binds

    def boot(self, conf: Any, servers: dict[str, Any], accessories: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("boot", "should be a hash")
            return {}
        out: dict[str, Any] = {}
        for key, value in conf.items():
            if key == "limit":
                text = str(value)
                if text.endswith("%"):  # Kamal: a share of all hosts (roles and accessories), at least one
                    hosts = {h for r in servers.values() for h in r["hosts"]} | {
                        h for a in accessories.values() for h in ([a["host"]] if a.get("host") else []) +
                        list(a.get("hosts") or [])}
                    out["limit"] = max(len(hosts) * int(text[:-1]) // 100, 1)
                else:
                    out["limit"] = value
            elif key == "parallel_roles":
                continue  # shipyard boots the roles of a host together, batch by batch of hosts
            elif key == "wait":
                out["wait"] = value  # a whole number, or refused (`integers`)
            else:
                self.refuse(f"boot.{key}", unknown_key(key, ("limit", "wait", "parallel_roles")))
        return out
