"""Kamal's `config/deploy.yml` as a stack's config: read it the way Kamal 2.11 does, map it to `shipyard:*` keys.

A stack sets `shipyard:kamal: {config: ../myapp/config/deploy.yml}`; `stack_config` reads that file, deep-merges the
destination's overlay `deploy.<destination>.yml` over it (ActiveSupport `deep_merge`: hashes merge key by key,
everything else - lists included - is replaced), reads `.kamal/secrets-common` and `.kamal/secrets[.<destination>]`
(dotenv, later files win), maps every key to what shipyard does, and deep-merges the stack's own keys over the result.

Every key Kamal documents is either mapped or refused by its path: one `ConfigError` lists every refused key, one
per line. ERB: only `<%= ENV["X"] %>`, `<%= ENV.fetch("X") %>` and `<%= ENV.fetch("X", "default") %>` (and `<%# %>`
comments). `$(...)` in a secrets file runs only when the stack sets `run_secret_commands: true`.

No pulumi, docker or paramiko here: files in, a plain dict out.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .config import VOLUME
from .errors import ConfigError

KAMAL_VERSION = (2, 11, 0)
OPTIONS = ("config", "destination", "run_secret_commands", "ignore")

# -- merging ---------------------------------------------------------------------------------------------------------


def deep_merge(base: Any, over: Any) -> Any:
    """ActiveSupport's `Hash#deep_merge`: hashes merge key by key, `over` wins; anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return over


# -- ERB -------------------------------------------------------------------------------------------------------------

_ENV_EXPR = re.compile(r"""^\s*ENV\s*(?:
    \[\s*(?P<q1>["'])(?P<k1>[^"'\#]+)(?P=q1)\s*\]
  | \.fetch\s*\(\s*(?P<q2>["'])(?P<k2>[^"'\#]+)(?P=q2)\s*(?:,\s*(?P<q3>["'])(?P<d>[^"'\#]*)(?P=q3)\s*)?\)
)\s*$""", re.X)
_PLACEHOLDER = "__shipyard_erb_{}__"
_PLACEHOLDER_RE = re.compile(r"__shipyard_erb_(\d+)__")
ERB_HELP = 'only <%= ENV["X"] %>, <%= ENV.fetch("X") %> and <%= ENV.fetch("X", "default") %> are evaluated'


@dataclass
class _Rendered:
    text: str
    problems: dict[int, tuple[int, str]] = field(default_factory=dict)  # placeholder -> (line, message)


def render_erb(template: str, environ: Mapping[str, str]) -> _Rendered:
    """Render Kamal's ERB (trim mode "-"): supported expressions become their value; anything else becomes a
    placeholder whose key path is found after parsing, with the reason in `problems`."""
    out: list[str] = []
    problems: dict[int, tuple[int, str]] = {}
    i = 0
    while True:
        start = template.find("<%", i)
        if start < 0:
            out.append(template[i:])
            break
        out.append(template[i:start])
        if template.startswith("<%%", start):  # a literal "<%"
            out.append("<%")
            i = start + 3
            continue
        end = template.find("%>", start + 2)
        if end < 0:
            out.append(template[start:])
            break
        body = template[start + 2:end]
        line = template.count("\n", 0, start) + 1
        i = end + 2
        if body.endswith("-"):  # `-%>` eats the newline after the tag
            body = body[:-1]
            if template.startswith("\n", i):
                i += 1
        if body.startswith("#"):
            continue
        tag = f"<%{template[start + 2:end]}%>"
        if not body.startswith("="):  # Ruby code: it prints nothing, so it has no key path, only a line
            problems[len(problems)] = (line, f"ERB {tag} is not supported ({ERB_HELP})")
            continue
        m = _ENV_EXPR.match(body[1:])
        if m is None:
            problems[len(problems)] = (line, f"ERB {tag} is not supported ({ERB_HELP})")
            out.append(_PLACEHOLDER.format(len(problems) - 1))
            continue
        name = m["k1"] or m["k2"]
        if m["k1"]:
            out.append(environ.get(name, ""))
        elif name in environ:
            out.append(environ[name])
        elif m["d"] is not None:
            out.append(m["d"])
        else:
            problems[len(problems)] = (line, f"{tag}: {name} is not set in the environment (Kamal stops here too)")
            out.append(_PLACEHOLDER.format(len(problems) - 1))
    return _Rendered("".join(out), problems)


def _placeholder_paths(node: Any, path: str = "") -> dict[int, str]:
    found: dict[int, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            sub = _join(path, str(k))
            for m in _PLACEHOLDER_RE.finditer(str(k)):
                found.setdefault(int(m[1]), sub)
            found.update({n: p for n, p in _placeholder_paths(v, sub).items() if n not in found})
    elif isinstance(node, list):
        for idx, v in enumerate(node):
            found.update({n: p for n, p in _placeholder_paths(v, f"{path}[{idx}]").items() if n not in found})
    elif isinstance(node, str):
        for m in _PLACEHOLDER_RE.finditer(node):
            found.setdefault(int(m[1]), path)
    return found


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def read_yaml(file: Path, label: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One Kamal config file: ERB, then YAML (anchors allowed, as Kamal's unsafe_load). Returns the hash and the
    (path, message) of every ERB tag that could not be evaluated."""
    if not file.is_file():
        raise ConfigError("kamal.config", f"{label} does not exist")
    rendered = render_erb(file.read_text(), environ)
    try:
        data = yaml.safe_load(rendered.text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("kamal.config", f"{label}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") \
            from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("kamal.config", f"{label} must hold a mapping of keys (service, image, servers, ...)")
    paths = _placeholder_paths(data)
    problems = [(paths.get(n, f"{label} line {line}"), msg) for n, (line, msg) in rendered.problems.items()]
    return data, problems


# -- secrets (dotenv, as Kamal's dotenv 3 with its inline command substitution) ----------------------------------------

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


# -- mapping ---------------------------------------------------------------------------------------------------------

NOT_YET = "not supported yet"
NO_EFFECT = frozenset({"aliases", "sshkit", "run_directory", "minimum_version", "hooks_output", "allow_empty_roles"})


def _str(value: Any) -> str | None:
    """Ruby's `to_s` for the scalars Kamal accepts where it wants a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


@dataclass
class _Mapper:
    raw: dict[str, Any]
    app_dir: Path
    project_dir: Path
    destination: str | None
    secrets: Secrets
    stack: Mapping[str, Any]
    problems: list[tuple[str, str]] = field(default_factory=list)
    needed: dict[str, tuple[str, str]] = field(default_factory=dict)  # env name -> (secret key, path)

    def refuse(self, path: str, message: str = NOT_YET) -> None:
        self.problems.append((path, message))

    def rel(self, local: str) -> str:
        """A path in the Kamal app directory, as shipyard reads paths: relative to the Pulumi project."""
        return os.path.relpath(os.path.normpath(self.app_dir / os.path.expanduser(local)), self.project_dir)

    def strings(self, value: Any, path: str) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.refuse(path, "should be a hash")
            return None
        out = {}
        for k, v in value.items():
            s = _str(v)
            if s is None:
                self.refuse(f"{path}.{k}", "should be a string")
            else:
                out[str(k)] = s
        return out

    def unknown(self, conf: dict[str, Any], known: Iterable[str], path: str) -> None:
        for key in conf:
            if key not in known:
                self.refuse(_join(path, str(key)), "unknown Kamal key (Kamal 2.11 refuses it too)")

    # -- top level

    def run(self) -> dict[str, Any]:
        raw, out = self.raw, {}
        handled = {"service", "image", "servers", "registry", "builder", "env", "ssh", "proxy", "accessories",
                   "volumes", "labels", "retain_containers", "deploy_timeout", "drain_timeout", "readiness_delay",
                   "boot", "primary_role", "require_destination", "secrets_path", "hooks_path", *NO_EFFECT}
        for key in raw:
            if str(key).startswith("x-"):
                continue  # Kamal's extension keys: YAML anchors for the rest of the file
            if key in ("asset_path", "error_pages_path", "logging"):
                self.refuse(key)
            elif key not in handled:
                self.refuse(key, "unknown Kamal key (Kamal 2.11 refuses it too)")
        if raw.get("require_destination") and not self.destination:
            self.refuse("require_destination", "this config needs a destination: set shipyard:kamal.destination, "
                                               "or leave it unset to use the stack's destination")
        mv = raw.get("minimum_version")
        if mv is not None and _version(str(mv)) > KAMAL_VERSION:
            self.refuse("minimum_version", f"the file wants Kamal {mv}; shipyard reads Kamal 2.11 configs")
        self.hooks()
        for key in ("service", "image"):
            if key in raw:
                out[key] = _str(raw[key])
        registry = self.registry(raw.get("registry"))
        if registry is not None:
            out["registry"] = registry
        elif "image" not in raw and "service" in raw and self.local_registry(raw.get("registry")):
            out["image"] = _str(raw["service"])  # Kamal: a local registry's image defaults to the service
        out["builder"] = self.builder(raw.get("builder") or {})
        if "ssh" in raw:
            out["ssh"] = self.ssh(raw["ssh"])
        servers, top_proxy = self.servers()
        if servers:
            out["servers"] = servers
        if top_proxy is not None:
            out["proxy"] = top_proxy
        if "env" in raw:
            env = self.env(raw["env"], "env", root=True)
            if env:
                out["env"] = env
        if "accessories" in raw:
            out["accessories"] = self.accessories(raw["accessories"], servers)
        if "retain_containers" in raw:
            out["retain_containers"] = raw["retain_containers"]
        if "boot" in raw:
            boot = self.boot(raw["boot"], servers, out.get("accessories", {}))
            if boot:
                out["boot"] = boot
        self.readiness_delay(servers, top_proxy)
        secrets = self.secret_values()
        if secrets:
            out["secrets"] = secrets
        return out

    def hooks(self) -> None:
        hooks_dir = self.app_dir / str(self.raw.get("hooks_path") or ".kamal/hooks")
        if hooks_dir.is_dir():
            for hook in sorted(hooks_dir.iterdir()):
                if hook.is_file() and not hook.name.endswith(".sample"):
                    self.refuse(os.path.relpath(hook, self.app_dir), "Kamal hooks are not run by shipyard; run it "
                                "yourself around `pulumi up`, or list it in shipyard:kamal.ignore")

    # -- registry, builder, ssh

    @staticmethod
    def local_registry(conf: Any) -> bool:
        return isinstance(conf, dict) and bool(re.match(r"^localhost[:$]", str(conf.get("server") or "")))

    def registry(self, conf: Any) -> dict[str, Any] | None:
        if conf is None:
            return None
        if not isinstance(conf, dict):
            self.refuse("registry", "should be a hash")
            return None
        self.unknown(conf, ("server", "username", "password"), "registry")
        if self.local_registry(conf):
            return None  # no registry: shipyard streams the image from the build host to the others
        out: dict[str, Any] = {"server": _str(conf.get("server")) or "docker.io"}
        for key in ("username", "password"):
            value = conf.get(key)
            if value is None:
                continue
            if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
                stacked = (self.stack.get("registry") or {}).get(key) if isinstance(self.stack.get("registry"),
                                                                                   dict) else None
                if stacked is None:
                    value = self.secret(value[0], f"registry.{key}")
                    if value is None:
                        continue
                else:
                    value = stacked
            elif _str(value) is None:
                self.refuse(f"registry.{key}", "should be a string or an array with one secret name")
                continue
            out[key] = _str(value)
        return out

    def builder(self, conf: Any) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("builder", "should be a hash")
            conf = {}
        for key in conf:
            if key in ("pack", "cache", "secrets", "ssh", "driver", "provenance", "sbom"):
                self.refuse(f"builder.{key}")
            elif key not in ("arch", "remote", "local", "context", "dockerfile", "target", "args"):
                self.refuse(f"builder.{key}", "unknown Kamal key (Kamal 2.11 refuses it too)")
        arch = conf.get("arch")
        if isinstance(arch, list) and len(arch) > 1:
            self.refuse("builder.arch", "multi-arch images are not supported yet: shipyard builds one image on the "
                                        "build host, for its own architecture")
        context = str(conf.get("context") or ".")
        out: dict[str, Any] = {"context": self.rel(context)}
        if "dockerfile" in conf:
            dockerfile = os.path.relpath(self.app_dir / str(conf["dockerfile"]), self.app_dir / context)
            if dockerfile.startswith(".."):
                self.refuse("builder.dockerfile", "must be inside the build context")
            else:
                out["dockerfile"] = dockerfile
        if "target" in conf:
            out["target"] = _str(conf["target"])
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
            elif (m["user"] or user) != user or (m["port"] or port) != port:
                self.refuse("builder.remote", f"shipyard builds over the same SSH login as it deploys ({user}, port "
                                              f"{port}): drop the user and port from the URL or match ssh.user/port")
            else:
                out["host"] = m["host"]
        return out

    def ssh(self, conf: Any) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse("ssh", "should be a hash")
            return {}
        out: dict[str, Any] = {}
        for key, value in conf.items():
            path = f"ssh.{key}"
            if key == "user":
                out["user"] = _str(value)
            elif key == "port":
                try:
                    out["port"] = int(value)
                except (TypeError, ValueError):
                    self.refuse(path, "should be a port number")
            elif key == "keys":
                if isinstance(value, list):
                    out["keys"] = [k if str(k).startswith("~") else self.rel(str(k)) for k in value]
                else:
                    self.refuse(path, "should be an array")
            elif key == "log_level":
                continue  # SSH client logging: no effect on what is deployed
            elif key == "keys_only" and value is False or key == "config" and value is False:
                continue  # what shipyard does: it reads no ~/.ssh/config, and also asks the agent
            elif key in ("proxy", "proxy_command", "key_data", "keys_only", "config"):
                self.refuse(path)
            else:
                self.refuse(path, "unknown Kamal key (Kamal 2.11 refuses it too)")
        return out

    # -- roles and their proxies

    def primary(self) -> str:
        return str(self.raw.get("primary_role") or "web")

    def servers(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        conf = self.raw.get("servers")
        if conf is None:
            self.refuse("servers", "shipyard deploys an app: give at least one role with hosts")
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
            for key, value in spec.items():
                kp = f"{path}.{key}"
                if key == "cmd":
                    cmd = _str(value)
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
                elif key in ("options", "logging", "asset_path"):
                    self.refuse(kp)
                elif key not in ("hosts", "proxy"):
                    self.refuse(kp, "unknown Kamal key (Kamal 2.11 refuses it too)")
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
                mapped = self.proxy(deep_merge(top, own), "", report=False)
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
            elif _str(item) is not None and not isinstance(item, bool):
                hosts.append(str(item))
            else:
                self.refuse(f"{path}[{i}]", "should be a host or a hash of one host and its tags")
        return list(dict.fromkeys(hosts))

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
        for key, value in conf.items():
            kp = _join(path, key)
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
                else:
                    refuse(kp, "custom certificates are not supported yet; ssl: true (Let's Encrypt) is")
            elif key in ("ssl_redirect", "strip_path_prefix"):
                if value is not True:  # true is kamal-proxy's default, which shipyard keeps
                    refuse(kp, f"{NOT_YET}: only true (kamal-proxy's default) is")
            elif key in ("path_prefix", "path_prefixes"):
                prefixes = str(value).split(",") if key == "path_prefix" else value
                if isinstance(prefixes, list) and len(prefixes) == 1:
                    out["path_prefix"] = str(prefixes[0])
                else:
                    refuse(kp, f"{NOT_YET}: one path prefix per role is")
            elif key == "healthcheck":
                if not isinstance(value, dict):
                    refuse(kp, "should be a hash")
                    continue
                for hk in value:
                    if hk not in ("path", "interval", "timeout"):
                        refuse(f"{kp}.{hk}", "unknown Kamal key (Kamal 2.11 refuses it too)")
                out["healthcheck"] = {k: v for k, v in value.items() if k in ("path", "interval", "timeout")}
            elif key in ("forward_headers", "buffering", "logging", "run"):
                refuse(kp)
            else:
                refuse(kp, "unknown Kamal key (Kamal 2.11 refuses it too)")
        for key in ("deploy_timeout", "drain_timeout"):
            if key in self.raw:
                out[key] = self.raw[key]
        return out

    def readiness_delay(self, servers: dict[str, Any], top_proxy: Any) -> None:
        delay = self.raw.get("readiness_delay")
        unproxied = [n for n, r in servers.items() if "proxy" not in r and not (n == "web" and top_proxy is not None)]
        if delay is not None and unproxied and float(delay) > 1:
            self.refuse("readiness_delay", f"{NOT_YET}: shipyard checks a role without proxy ({', '.join(unproxied)})"
                                           f" 1 s after it starts (and waits for its image's HEALTHCHECK); use 0 or 1")

    # -- env, secrets, volumes

    def env(self, conf: Any, path: str, *, root: bool) -> dict[str, Any]:
        if not isinstance(conf, dict):
            self.refuse(path, "should be a hash")
            return {}
        if not {"clear", "secret", "tags"} & set(conf):
            return {"clear": self.strings(conf, path) or {}}  # the short form: every key is clear
        out: dict[str, Any] = {}
        for key in conf:
            if key == "tags" and root:
                self.refuse(f"{path}.tags", f"{NOT_YET}: env per host tag")
            elif key not in ("clear", "secret"):
                self.refuse(f"{path}.{key}", "unknown Kamal key (Kamal 2.11 refuses it too)")
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
        if key in self.secrets.blocked:
            self.refuse(path, self.blocked_message(key))
            return None
        if key not in self.secrets.values:
            self.refuse(path, f"secret {key} is in none of {', '.join(self.secrets.names)}: add it there")
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
            if key in self.secrets.blocked:
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

    # -- accessories, boot

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
                    acc["image"] = _str(value)
                elif key == "host":
                    acc["host"] = _str(value)
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
                    cmd = _str(value)
                    if cmd is None:
                        self.refuse(kp, "should be a string")
                    else:
                        acc["cmd"] = shlex.split(cmd)
                elif key == "port":
                    port = _str(value) or ""
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
                elif key in ("service", "registry", "options", "network", "proxy"):
                    self.refuse(kp)
                else:
                    self.refuse(kp, "unknown Kamal key (Kamal 2.11 refuses it too)")
            out[str(name)] = acc
        return out

    def _paths(self, conf: Any, path: str) -> list[tuple[int, str, str, str | None]]:
        """(index, local, remote, options) of Kamal's `files`/`directories` entries."""
        if not isinstance(conf, list):
            self.refuse(path, "should be an array")
            return []
        out = []
        for i, item in enumerate(conf):
            if isinstance(item, dict):
                for key in item:
                    if key in ("mode", "owner", "options"):
                        self.refuse(f"{path}[{i}].{key}")
                    elif key not in ("local", "remote"):
                        self.refuse(f"{path}[{i}].{key}", "unknown Kamal key (Kamal 2.11 refuses it too)")
                out.append((i, str(item.get("local")), str(item.get("remote")), None))
            else:
                local, remote, options = (str(item).split(":", 2) + [None, None])[:3]
                out.append((i, local, str(remote), options))
        return out

    def files(self, conf: Any, path: str) -> list[str]:
        out = []
        for i, local, remote, options in self._paths(conf, path):
            if local.endswith("erb"):
                self.refuse(f"{path}[{i}]", f"{NOT_YET}: ERB templates as accessory files")
            elif options not in (None, "ro"):
                self.refuse(f"{path}[{i}]", f"{NOT_YET}: mount options ({options}); files are mounted read-only")
            else:
                out.append(f"{self.rel(local)}:{remote}")
        return out

    def directories(self, conf: Any, path: str) -> tuple[list[str], list[str]]:
        dirs, binds = [], []
        for i, local, remote, options in self._paths(conf, path):
            if options:
                self.refuse(f"{path}[{i}]", f"{NOT_YET}: mount options ({options})")
            elif local.startswith("/"):
                binds.append(f"{local}:{remote}")  # a host directory of its own: a bind mount
            elif "/" in local or local in (".", ".."):
                self.refuse(f"{path}[{i}]", f"{NOT_YET}: a directory is a NAME or an absolute host path")
            else:
                dirs.append(f"{local}:{remote}")
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
                self.refuse("boot.wait")
            else:
                self.refuse(f"boot.{key}", "unknown Kamal key (Kamal 2.11 refuses it too)")
        return out


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# -- entry points ----------------------------------------------------------------------------------------------------


def overlay_file(config_file: Path, destination: str) -> Path:
    """Kamal's `sub_ext(".<destination>.yml")`: config/deploy.yml -> config/deploy.staging.yml."""
    return config_file.with_suffix(f".{destination}.yml")


def load(config_file: Path, *, destination: str | None, project_dir: Path, environ: Mapping[str, str] | None = None,
         run_secret_commands: bool = False, ignore: Iterable[str] = (), stack: Mapping[str, Any] | None = None,
         runner: CommandRunner = run_command) -> dict[str, Any]:
    """Read a Kamal config for `destination` (None: as `kamal deploy` without `-d`) and return the raw shipyard
    config it maps to. `stack` is the stack's own config: secrets it sets are never looked up (nor their commands
    run). Raises one ConfigError listing every refused key."""
    environ = dict(os.environ if environ is None else environ)
    if destination:
        environ["KAMAL_DESTINATION"] = destination
    config_file = config_file.resolve()
    app_dir = config_file.parent.parent
    files = [config_file] + ([overlay_file(config_file, destination)] if destination else [])
    raw: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if destination and not files[1].is_file():
        raise ConfigError("kamal.config", f"{os.path.relpath(files[1], app_dir)} does not exist: Kamal reads it for "
                                          f"destination {destination}; create it (`{{}}` for no changes), or set "
                                          f"shipyard:kamal.destination")
    for file in files:
        data, erb = read_yaml(file, os.path.relpath(file, app_dir), environ)
        raw = deep_merge(raw, data)
        problems += erb
    secrets = read_secrets(app_dir, str(raw.get("secrets_path") or ".kamal/secrets"), destination, environ,
                           runner if run_secret_commands else None)
    mapper = _Mapper(raw, app_dir, project_dir.resolve(), destination, secrets, stack or {})
    out = mapper.run()
    problems += mapper.problems
    ignored = tuple(ignore)
    seen, lines = set(), []
    for path, message in problems:
        if path in seen or any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in ignored):
            continue
        seen.add(path)
        lines.append(f"{path}: {message}")
    if lines:
        label = " + ".join(os.path.relpath(f, app_dir) for f in files)
        header = (f"{label} uses Kamal keys shipyard cannot deploy as written (drop them, or list their paths in "
                  f"shipyard:kamal.ignore to deploy without them):")
        raise ConfigError("kamal", "\n".join([header, *lines]))
    return out


def stack_config(raw: Mapping[str, Any], *, stack: str, project_dir: Path, environ: Mapping[str, str] | None = None,
                 runner: CommandRunner = run_command) -> dict[str, Any]:
    """The stack's `shipyard:*` keys, with `kamal` replaced by the Kamal config it names and the stack's own keys
    deep-merged over that (the stack wins). Without `kamal`, the keys as they are."""
    if "kamal" not in raw:
        return dict(raw)
    opts = raw["kamal"]
    if isinstance(opts, str):
        opts = {"config": opts}
    if not isinstance(opts, dict) or not isinstance(opts.get("config"), str):
        raise ConfigError("kamal", "give the Kamal config file: shipyard:kamal: {config: ../myapp/config/deploy.yml}")
    for key in opts:
        if key not in OPTIONS:
            raise ConfigError(f"kamal.{key}", f"unknown key: known keys are {', '.join(OPTIONS)}")
    if not isinstance(opts.get("run_secret_commands", False), bool):
        raise ConfigError("kamal.run_secret_commands", "should be true or false")
    ignore = opts.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise ConfigError("kamal.ignore", "should be a list of Kamal key paths, like accessories.db.options")
    own = {k: v for k, v in raw.items() if k != "kamal"}
    destination = opts["destination"] if "destination" in opts else (own.get("destination") or stack)
    if destination is not None and not isinstance(destination, str):
        raise ConfigError("kamal.destination", "should be a destination name, or null for none")
    mapped = load(project_dir / opts["config"], destination=destination or None, project_dir=project_dir,
                  environ=environ, run_secret_commands=opts.get("run_secret_commands", False), ignore=ignore,
                  stack=own, runner=runner)
    return deep_merge(mapped, own)
