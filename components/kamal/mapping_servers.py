"""Mapping Kamal's `servers` (roles, host lists, host tags) and the proxy of each role - the top-level `proxy`,
a role's own `proxy`, `deploy_timeout`/`drain_timeout` - and `readiness_delay`."""

from __future__ import annotations

import shlex
from typing import Any

from .mapping_base import MapperBase, to_s, unknown_key
from .merge import deep_merge, join

ROLE_KEYS = ("hosts", "cmd", "labels", "env", "options", "logging", "asset_path", "proxy")
PROXY_KEYS = ("host", "hosts", "app_port", "response_timeout", "ssl", "ssl_redirect", "strip_path_prefix",
              "forward_headers", "buffering", "logging", "path_prefix", "path_prefixes", "healthcheck", "run")
HEALTHCHECK_KEYS = ("path", "interval", "timeout")


class ServersMapping(MapperBase):
    def primary(self) -> str:
        return str(self.raw.get("primary_role") or "web")

    def servers(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        conf = self.raw.get("servers")
        if conf is None:
            if not self.raw.get("accessories"):  # an app of accessories only has none (as in Kamal)
                self.refuse("servers", "no servers or accessories specified (Kamal refuses it too)")
            return {}, None
        if isinstance(conf, list):
            roles = {"web": conf}
        elif isinstance(conf, dict):
            roles = conf
        else:
            self.refuse("servers", "should be an array or a hash")
            return {}, None
        if self.primary() not in roles:
            self.refuse("primary_role", f"the primary_role {self.primary()} isn't defined")
        top = self.raw.get("proxy")
        if top is not None and not isinstance(top, dict):
            self.refuse("proxy", "should be a hash")
            top = None
        top = top or {}
        self.proxy(top, "proxy", report=True)
        out: dict[str, Any] = {}
        top_proxy = None
        for name, rc in roles.items():
            name = str(name)
            path = f"servers.{name}" if isinstance(conf, dict) else "servers"
            spec = rc if isinstance(rc, dict) else {}
            hosts = self.hosts(rc.get("hosts", []) if isinstance(rc, dict) else rc,
                               f"{path}.hosts" if isinstance(rc, dict) else path)
            if not hosts:
                if not self.raw.get("allow_empty_roles"):
                    self.refuse(path, f"no servers specified for the {name} role (Kamal's allow_empty_roles: true "
                                      f"skips it)")
                continue
            role: dict[str, Any] = {"hosts": hosts}
            tags = self.role_tags(rc.get("hosts", []) if isinstance(rc, dict) else rc)
            if tags:
                role["tags"] = tags
            for key, value in spec.items():
                kp = f"{path}.{key}"
                if key == "cmd":
                    cmd = to_s(value)
                    if cmd is None:
                        self.refuse(kp, "should be a string")
                    else:
                        role["cmd"] = shlex.split(cmd)  # Kamal's `docker run ... image <cmd>`: split by the shell
                elif key == "labels":
                    pass
                elif key == "env":
                    env = self.env(value, kp, root=False)
                    if env:
                        role["env"] = env
                elif key == "options":
                    role["options"] = self.run_options(value, kp)
                elif key == "logging":
                    role["logging"] = self.logging(value, kp)
                elif key == "asset_path":
                    role["asset_path"] = str(value).split(":", 1)[0]
                elif key not in ("hosts", "proxy"):
                    self.refuse(kp, unknown_key(key, ROLE_KEYS))
            labels = {}
            if "labels" in self.raw:
                labels.update(self.strings(self.raw["labels"], "labels") or {})
            if "labels" in spec:
                labels.update(self.strings(spec["labels"], f"{path}.labels") or {})
            if labels:
                role["labels"] = labels
            volumes = self.raw.get("volumes")
            if volumes is not None:
                role["volumes"] = self.volumes(volumes, "volumes")
            specialized = spec.get("proxy")
            running = specialized is not False if name == self.primary() else specialized not in (None, False)
            if running:
                own = specialized if isinstance(specialized, dict) else {}
                if specialized is not True and not isinstance(specialized, dict) and specialized is not None:
                    self.refuse(f"{path}.proxy", "should be a hash or a boolean")
                self.proxy(own, f"{path}.proxy", report=True)
                merged = deep_merge(top, own)
                if {"host", "hosts"} <= set(merged) and not {"host", "hosts"} <= set(own) \
                        and not {"host", "hosts"} <= set(top):  # each alone was refused already
                    self.refuse(f"{path}.proxy", "specify one of 'host' or 'hosts', not both: with the app's proxy "
                                                 "it has both (Kamal refuses it too)")
                mapped = self.proxy(merged, "", report=False)
                if name == "web" and self.primary() == "web" and not own:
                    top_proxy = mapped  # shipyard's top-level proxy is the web role's, as Kamal's is the primary's
                else:
                    role["proxy"] = mapped
            out[name] = role
        return out, top_proxy

    def hosts(self, conf: Any, path: str) -> list[str]:
        if not isinstance(conf, list):
            self.refuse(path, "should be an array")
            return []
        hosts = []
        for i, item in enumerate(conf):
            if isinstance(item, dict) and len(item) == 1:
                hosts.append(str(next(iter(item))))  # a host with tags: tags only pick env.tags and accessories
            elif to_s(item) is not None and not isinstance(item, bool):
                hosts.append(str(item))
            else:
                self.refuse(f"{path}[{i}]", "should be a host or a hash of one host and its tags")
        return list(dict.fromkeys(hosts))

    @staticmethod
    def role_tags(items: Any) -> dict[str, list[str]]:
        """A role's `{host: tag}` / `{host: [tags]}` entries."""
        out: dict[str, list[str]] = {}
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and len(item) == 1:
                host, t = next(iter(item.items()))
                out[str(host)] = [str(x) for x in ([t] if isinstance(t, str) else list(t or []))]
        return out

    def host_tags(self) -> dict[str, list[str]]:
        conf = self.raw.get("servers")
        lists = [conf] if isinstance(conf, list) else [
            (r.get("hosts", []) if isinstance(r, dict) else r) for r in (conf or {}).values()]
        tags: dict[str, list[str]] = {}
        for items in lists:
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and len(item) == 1:
                    host, t = next(iter(item.items()))
                    tags.setdefault(str(host), []).extend([t] if isinstance(t, str) else list(t or []))
        return tags

    def proxy(self, conf: dict[str, Any], path: str, *, report: bool) -> dict[str, Any]:
        refuse = self.refuse if report else (lambda *a, **k: None)
        out: dict[str, Any] = {}
        if "host" in conf and "hosts" in conf:
            refuse(path, "specify one of 'host' or 'hosts', not both (Kamal refuses it too)")
        for key, value in conf.items():
            kp = join(path, key)
            if key in ("host", "hosts"):
                hosts = str(value).split(",") if key == "host" else value
                if not isinstance(hosts, list):
                    refuse(kp, "should be an array")
                else:
                    out["hosts"] = [str(h).strip() for h in hosts]
            elif key in ("app_port", "response_timeout"):
                out[key] = value
            elif key == "ssl":
                if isinstance(value, bool):
                    out["ssl"] = value
                elif isinstance(value, dict) and set(value) == {"certificate_pem", "private_key_pem"}:
                    # a certificate of your own, from two secrets (Kamal's custom certificate)
                    out.update(ssl=True, ssl_certificate=str(value["certificate_pem"]),
                               ssl_private_key=str(value["private_key_pem"]))
                    if report:
                        for k in ("certificate_pem", "private_key_pem"):
                            self.needed.setdefault(str(value[k]), (str(value[k]), f"{kp}.{k}"))
                else:
                    refuse(kp, "should be true, false, or {certificate_pem: SECRET, private_key_pem: SECRET}")
            elif key in ("ssl_redirect", "strip_path_prefix", "forward_headers"):
                if isinstance(value, bool):
                    out[key] = value
                else:
                    refuse(kp, "should be true or false")
            elif key in ("buffering", "logging"):
                names = {"requests": "buffer_requests", "responses": "buffer_responses", "memory": "buffer_memory",
                         "max_request_body": "max_request_body", "max_response_body": "max_response_body"} \
                    if key == "buffering" else {"request_headers": "log_request_headers",
                                                "response_headers": "log_response_headers"}
                if not isinstance(value, dict):
                    refuse(kp, "should be a hash")
                    continue
                for sub_key, sub_value in value.items():
                    if sub_key not in names:
                        refuse(f"{kp}.{sub_key}", unknown_key(sub_key, names))
                    else:
                        out[names[sub_key]] = sub_value
            elif key in ("path_prefix", "path_prefixes"):
                prefixes = str(value).split(",") if key == "path_prefix" else value
                if isinstance(prefixes, list) and prefixes:
                    out["path_prefix"] = str(prefixes[0]) if len(prefixes) == 1 else [str(p) for p in prefixes]
                else:
                    refuse(kp, "should be a path or an array of paths")
            elif key == "healthcheck":
                if not isinstance(value, dict):
                    refuse(kp, "should be a hash")
                    continue
                for hk in value:
                    if hk not in HEALTHCHECK_KEYS:
                        refuse(f"{kp}.{hk}", unknown_key(hk, HEALTHCHECK_KEYS))
                out["healthcheck"] = {k: v for k, v in value.items() if k in HEALTHCHECK_KEYS}
            elif key == "run":
                if not isinstance(value, dict):
                    refuse(kp, "should be a hash")
                    continue
                run: dict[str, Any] = {}
                for rk, rv in value.items():
                    if rk in ("http_port", "https_port", "publish", "bind_ips", "log_max_size", "metrics_port",
                              "debug"):
                        run[rk] = rv
                    elif rk == "options":
                        run["options"] = self.run_options(rv, f"{kp}.options")
                    elif rk not in ("registry", "repository", "version"):
                        refuse(f"{kp}.{rk}", unknown_key(rk, ("registry", "repository", "version", "options")))
                if {"registry", "repository", "version"} & set(value):  # Kamal's image of kamal-proxy
                    repository = "/".join(str(p) for p in (value.get("registry"), value.get("repository")
                                                            or "basecamp/kamal-proxy") if p)
                    out["image"] = f"{repository}:{value.get('version') or 'v0.9.2'}"
                out["run"] = run
            else:
                refuse(kp, unknown_key(key, PROXY_KEYS))
        for key in ("deploy_timeout", "drain_timeout"):
            if key in self.raw:
                out[key] = self.raw[key]
        return out

    def readiness_delay(self) -> float | None:
        """Kamal's seconds a container without proxy (or health check) must run before it counts as booted: the
        same as shipyard's `readiness_delay`."""
        return self.raw.get("readiness_delay")  # a whole number, or refused (`integers`)
