"""The whole Kamal-to-shipyard mapping: the top-level keys, each area handed to its own module (servers and
proxies, env and secrets, registry/builder/ssh, accessories and boot). Every key Kamal documents is either mapped
or refused by its path; nothing is dropped silently."""

from __future__ import annotations

import re
from typing import Any

from .mapping_accessories import AccessoriesMapping
from .mapping_base import NO_EFFECT, to_s, unknown_key
from .mapping_build import BuildMapping
from .mapping_env import EnvMapping
from .mapping_servers import ServersMapping

KAMAL_VERSION = (2, 11, 0)
# the keys whose example in Kamal's own documentation is a whole number: Kamal refuses any other value there ("3000",
# 1.5, true), so shipyard does too, by the same path
INTEGERS = ("retain_containers", "readiness_delay", "deploy_timeout", "drain_timeout", "boot.wait",
            "sshkit.max_concurrent_starts", "sshkit.pool_idle_timeout")
PROXY_INTEGERS = ("app_port", "response_timeout", "healthcheck.interval", "healthcheck.timeout",
                  "buffering.max_request_body", "buffering.max_response_body", "buffering.memory", "run.http_port",
                  "run.https_port", "run.metrics_port")


class Mapper(ServersMapping, EnvMapping, BuildMapping, AccessoriesMapping):
    def run(self) -> dict[str, Any]:
        raw, out = self.raw, {}
        handled = {"service", "image", "servers", "registry", "builder", "env", "ssh", "proxy", "accessories",
                   "logging", "error_pages_path", "asset_path", "aliases",
                   "volumes", "labels", "retain_containers", "deploy_timeout", "drain_timeout", "readiness_delay",
                   "boot", "primary_role", "require_destination", "secrets_path", "hooks_path", *NO_EFFECT}
        for key in raw:
            if str(key).startswith("x-"):
                continue  # Kamal's extension keys: YAML anchors for the rest of the file
            if key not in handled:
                self.refuse(key, unknown_key(key, [k for k in handled if k not in NO_EFFECT]))
        if raw.get("require_destination") and not self.destination:
            self.refuse("require_destination", "this config needs a destination: set shipyard:kamal.destination, "
                                               "or leave it unset to use the stack's destination")
            return out  # as Kamal, nothing more is said: without its destination's file, the rest is not the app
        mv = raw.get("minimum_version")
        if mv is not None and _version(str(mv)) > KAMAL_VERSION:
            self.refuse("minimum_version", f"the file wants Kamal {mv}; shipyard reads Kamal 2.11 configs")
        self.integers()
        hooks = self.hooks()
        if hooks:
            out["hooks"] = hooks
        for key in ("service", "image"):
            if key in raw:
                out[key] = to_s(raw[key])
        registry = self.registry(raw.get("registry"))
        if registry is not None:
            out["registry"] = registry
        elif "image" not in raw and "service" in raw and self.local_registry(raw.get("registry")):
            out["image"] = to_s(raw["service"])  # Kamal: a local registry's image defaults to the service
        out["builder"] = self.builder(raw.get("builder") or {})
        out["ssh"] = self.ssh(raw["ssh"] if "ssh" in raw else {})
        servers, top_proxy = self.servers()
        if servers:
            out["servers"] = servers
        if top_proxy is not None:
            out["proxy"] = top_proxy
        if "env" in raw:
            env = self.env(raw["env"], "env", root=True)
            if env:
                out["env"] = env
            tags = raw["env"].get("tags") if isinstance(raw["env"], dict) else None
            if tags is not None:
                if not isinstance(tags, dict):
                    self.refuse("env.tags", "should be a hash")
                else:
                    out["env_tags"] = {str(t): self.env(e, f"env.tags.{t}", root=False) for t, e in tags.items()}
        if "accessories" in raw:
            out["accessories"] = self.accessories(raw["accessories"], servers)
        if "aliases" in raw:
            aliases = self.strings(raw["aliases"], "aliases")
            if aliases:
                out["aliases"] = aliases
        if raw.get("asset_path"):
            out["asset_path"] = str(raw["asset_path"]).split(":", 1)[0]
        if raw.get("error_pages_path"):
            out["error_pages"] = self.rel(str(raw["error_pages_path"]))
        if "logging" in raw:
            out["logging"] = self.logging(raw["logging"], "logging")
        if "retain_containers" in raw:
            out["retain_containers"] = raw["retain_containers"]
        if "boot" in raw:
            boot = self.boot(raw["boot"], servers, out.get("accessories", {}))
            if boot:
                out["boot"] = boot
        delay = self.readiness_delay()
        if delay is not None:
            out["readiness_delay"] = delay
        if "drain_timeout" in raw:  # also the proxied roles' (their proxy's): Kamal's stop timeout of the others
            out["drain_timeout"] = raw["drain_timeout"]
        secrets = {**self.secret_values(), **self.own_secrets}
        if secrets:
            out["secrets"] = secrets
        return out

    def integers(self) -> None:
        """Each key Kamal takes as a whole number (`INTEGERS`, and `PROXY_INTEGERS` in every proxy: the app's, a
        role's, an accessory's) holds one, or is refused by its path."""
        def sections(name: str) -> list[tuple[str, Any]]:
            conf = self.raw.get(name)
            return [(f"{name}.{k}", v) for k, v in conf.items() if isinstance(v, dict)] if isinstance(conf, dict) \
                else []
        places = [("", self.raw, INTEGERS), ("proxy", self.raw.get("proxy"), PROXY_INTEGERS),
                  *((f"{path}.proxy", conf.get("proxy"), PROXY_INTEGERS)
                    for path, conf in (*sections("servers"), *sections("accessories")))]
        for base, conf, keys in places:
            for key in keys:
                value: Any = conf
                for part in key.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    self.refuse(f"{base}.{key}" if base else key, "should be an integer (Kamal refuses it too)")

    def hooks(self) -> dict[str, Any] | None:
        """Kamal's hooks directory (`hooks_path`, default .kamal/hooks), run from the app directory as Kamal runs
        them; None where it holds none."""
        hooks_dir = self.app_dir / str(self.raw.get("hooks_path") or ".kamal/hooks")
        if not hooks_dir.is_dir() or not any(h.is_file() and not h.name.endswith(".sample")
                                             for h in hooks_dir.iterdir()):
            return None
        # Kamal's hooks that get secrets get every one of the secrets files, used by the config or not
        secrets = {k: v for k, v in self.secrets.values.items() if k not in self.secrets.blocked}
        return {"path": self.rel(str(hooks_dir)), "workdir": self.rel("."), **({"secrets": secrets} if secrets else {})}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])
