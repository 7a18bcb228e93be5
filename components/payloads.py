"""Pure translation of specs into what Docker's API and kamal-proxy's command line take (the way docker-py keeps
its kwargs-to-payload functions apart). No pulumi, docker or paramiko here."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any, Iterable, Mapping

from . import naming

VOLUME = re.compile(r"^(?P<source>[^:]+):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?$")  # Docker's bind syntax


def mount_options(default: str, options: str | None) -> str:
    """A bind's options: `ro`/`rw` as given (else `default`), then the others (SELinux's z, Z) as given."""
    given = [o for o in (options or "").split(",") if o]
    access = next((o for o in given if o in ("ro", "rw")), default)
    return ",".join([access, *(o for o in given if o not in ("ro", "rw"))])


def path_prefixes(path_prefix: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """A route's `path_prefix` prop (one path, or several) as a list."""
    return [path_prefix] if isinstance(path_prefix, str) else list(path_prefix or [])


def proxy_deploy_argv(service: str, target: str, proxy: Mapping[str, Any]) -> list[str]:
    """`kamal-proxy deploy` for one destination's route: health-checks `target`, switches, drains the old one."""
    hc = proxy["healthcheck"]
    argv = ["kamal-proxy", "deploy", service, "--target", target,
            "--health-check-path", hc["path"],
            "--health-check-interval", _duration(hc["interval"]),
            "--health-check-timeout", _duration(hc["timeout"]),
            "--deploy-timeout", _duration(proxy["deploy_timeout"]),
            "--drain-timeout", _duration(proxy["drain_timeout"]),
            "--target-timeout", _duration(proxy["response_timeout"])]
    for h in proxy.get("hosts") or []:
        argv += ["--host", h]
    for prefix in path_prefixes(proxy.get("path_prefix")):
        argv += ["--path-prefix", prefix]
    if proxy.get("ssl"):
        argv += ["--tls"]
    for key, flag in (("ssl_redirect", "tls-redirect"), ("forward_headers", "forward-headers"),
                      ("strip_path_prefix", "strip-path-prefix"), ("buffer_requests", "buffer-requests"),
                      ("buffer_responses", "buffer-responses")):
        if proxy.get(key) is not None:
            argv.append(f"--{flag}={'true' if proxy[key] else 'false'}")
    for key, flag in (("buffer_memory", "buffer-memory"), ("max_request_body", "max-request-body"),
                      ("max_response_body", "max-response-body")):
        if proxy.get(key) is not None:
            argv += [f"--{flag}", str(int(proxy[key]))]
    for key, flag in (("log_request_headers", "log-request-header"), ("log_response_headers", "log-response-header")):
        for header in proxy.get(key) or []:
            argv += [f"--{flag}", header]
    return argv


def _duration(seconds: float) -> str:
    return f"{int(round(float(seconds) * 1000))}ms"


def port_bindings(ports: Iterable[Mapping[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    """(exposed ports, port bindings) for docker-py's create_container / create_host_config."""
    exposed: list[Any] = []
    bindings: dict[str, Any] = {}
    for p in ports:
        # numbers arrive as floats after a trip through Pulumi's property serialization
        container_port = int(p["container_port"])
        host_port = int(p["host_port"]) if p.get("host_port") is not None else None
        key = f"{container_port}/{p['protocol']}"
        exposed.append((container_port, p["protocol"]))
        binding = (p["host_ip"], host_port) if p.get("host_ip") else host_port
        bindings.setdefault(key, []).append(binding)
    return exposed, bindings


def volume_binds(volumes: Iterable[str], service: str, destination: str) -> list[str]:
    """Docker binds; a named volume gets the destination's name (`data` -> `<service>-<destination>-data`)."""
    binds = []
    for text in volumes:
        m = VOLUME.match(text)
        assert m, text  # validated in config
        source = m["source"] if m["source"].startswith("/") else naming.volume_name(service, destination, m["source"])
        binds.append(f"{source}:{m['target']}:{m['mode'] or 'rw'}")
    return binds


def named_volumes(volumes: Iterable[str], service: str, destination: str) -> list[str]:
    return [b.split(":")[0] for b in volume_binds(volumes, service, destination) if not b.startswith("/")]


def restart_policy(name: str) -> dict[str, Any]:
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": 0}


def env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items())]


# Kamal writes a clear env value into `docker run` in double quotes where the host's shell expands `${...}` (and no
# other `$`); a blank value becomes a bare `--env NAME`, which leaves the variable unset.
_SHELL_DOLLAR = re.compile(r"\$(?!\{[^}]*\})")
SHELL_EXPANDED = re.compile(r"\$\{[^}]*\}")


def kamal_env(env: Mapping[str, str]) -> dict[str, str]:
    """A Kamal app's clear env as Kamal's `docker run` sets it: blank values leave their variable unset."""
    return {k: v for k, v in env.items() if v.strip()}


def host_shell_quoted(value: str) -> str:
    """`value` as Kamal quotes it for the host's shell: `${...}` is expanded there, nothing else is."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return '"' + _SHELL_DOLLAR.sub(lambda _: "\\$", out) + '"'


def host_shell_script(values: list[str]) -> str:
    """A `sh -c` script printing each value as the host's shell expands it, NUL-terminated between two markers
    (so that no whitespace at either end is lost)."""
    return "printf BEGIN; printf '%s\\0' " + " ".join(host_shell_quoted(v) for v in values) + "; printf END"


def host_shell_values(output: str, count: int) -> list[str] | None:
    """The values `host_shell_script` printed, or None if the output is not what it prints."""
    if not (output.startswith("BEGIN") and output.endswith("END")):
        return None
    parts = output[5:-3].split("\0")
    return parts[:count] if len(parts) == count + 1 and parts[-1] == "" else None


# `docker run` flags a role or accessory may set (Kamal's `options`), as docker-py's create_host_config keyword
# (host) or create_container keyword (container), and how a value is read
class _Unreadable(ValueError):
    """A value a flag does not take, and why."""


def _size(v: Any) -> str:
    return str(v)


def _int(v: Any) -> int:
    return int(str(v))


def _many(v: Any) -> list[str]:
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def _flag(v: Any) -> bool:
    if v is True or str(v).lower() == "true":
        return True
    if v is False or str(v).lower() == "false":
        return False
    raise _Unreadable("should be true or false")


def _ulimits(v: Any) -> list[dict[str, Any]]:
    out = []
    for item in _many(v):
        name, _, limits = item.partition("=")
        soft, _, hard = limits.partition(":")
        if not name or not soft:
            raise _Unreadable(f"should be NAME=SOFT[:HARD], not {item!r}")
        out.append({"name": name, "soft": int(soft), "hard": int(hard or soft)})
    return out


def _gpus(v: Any) -> list[dict[str, Any]]:
    count = -1 if str(v) == "all" else _int(v)
    return [{"count": count, "capabilities": [["gpu"]]}]


def _sysctls(v: Any) -> dict[str, str]:
    out = {}
    for item in _many(v):
        key, eq, value = item.partition("=")
        if not eq:
            raise _Unreadable(f"should be KEY=VALUE, not {item!r}")
        out[key] = value
    return out


RUN_OPTIONS: dict[str, tuple[str, str, Any]] = {
    "memory": ("host", "mem_limit", _size), "memory-swap": ("host", "memswap_limit", _size),
    "memory-reservation": ("host", "mem_reservation", _size), "shm-size": ("host", "shm_size", _size),
    "cpus": ("host", "nano_cpus", lambda v: int(round(float(v) * 1e9))), "cpu-shares": ("host", "cpu_shares", _int),
    "cpuset-cpus": ("host", "cpuset_cpus", str), "pids-limit": ("host", "pids_limit", _int),
    "add-host": ("host", "extra_hosts", _many), "cap-add": ("host", "cap_add", _many),
    "cap-drop": ("host", "cap_drop", _many), "device": ("host", "devices", _many), "dns": ("host", "dns", _many),
    "security-opt": ("host", "security_opt", _many), "group-add": ("host", "group_add", _many),
    "tmpfs": ("host", "tmpfs", _many), "ulimit": ("host", "ulimits", _ulimits), "sysctl": ("host", "sysctls", _sysctls),
    "gpus": ("host", "device_requests", _gpus), "init": ("host", "init", _flag),
    "privileged": ("host", "privileged", _flag), "read-only": ("host", "read_only", _flag),
    "user": ("container", "user", str), "workdir": ("container", "working_dir", str),
    "hostname": ("container", "hostname", str), "stop-signal": ("container", "stop_signal", str),
    "entrypoint": ("container", "entrypoint", str),
}


def run_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(create_host_config kwargs, create_container kwargs) for `docker run` flags given as Kamal's `options`
    ({memory: 2g, cpus: 1.5, add-host: [db:10.0.0.5]}; true for a flag without a value). Raises ValueError naming
    the flag for one shipyard does not set or a value it cannot read."""
    host: dict[str, Any] = {}
    container: dict[str, Any] = {}
    for flag, value in options.items():
        known = RUN_OPTIONS.get(str(flag))
        if known is None:
            raise ValueError(f"{flag}: not a `docker run` flag shipyard sets "
                             f"(it sets {', '.join(sorted(RUN_OPTIONS))})")
        where, key, read = known
        try:
            (host if where == "host" else container)[key] = read(value)
        except _Unreadable as exc:
            raise ValueError(f"{flag}: {exc}") from None
        except (TypeError, ValueError):
            raise ValueError(f"{flag}: {value!r} is not a value it takes") from None
    return host, container


def log_config(logging: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """docker's HostConfig.LogConfig for a `logging` setting ({driver, options}); None: the daemon's default."""
    if not logging:
        return None
    options = logging.get("options") or {}
    return {"Type": logging.get("driver") or "", "Config": {str(k): str(v) for k, v in options.items()}}


# -- asset bridging (Kamal's asset_path) ------------------------------------------------------------------------------

def asset_bridge_script(*, image: str, path: str, scratch: str, extracted: str, volume: str,
                        predecessors: Iterable[tuple[str, str]]) -> str:
    """A `sh` script for the host, as Kamal bridges assets: the new image's `path` copied out to `extracted`
    (through a created, never started, container named `scratch`), then into the new version's `volume`; with each
    running predecessor's (extracted, volume): the new assets added to its volume (it serves them from now on) and
    its own added to the new volume. Copies never overwrite (`cp -rn`)."""
    q = shlex.quote
    lines = ["set -e", f"mkdir -p {q(extracted)} {q(volume)}",
             f"docker container rm -f {q(scratch)} >/dev/null 2>&1 || true",
             f"docker container create --name {q(scratch)} {q(image)} >/dev/null",
             f"docker container cp -L {q(scratch + ':' + path.rstrip('/') + '/.')} {q(extracted)} "
             f"|| {{ docker container rm -f {q(scratch)} >/dev/null; exit 1; }}",
             f"docker container rm -f {q(scratch)} >/dev/null",
             f"cp -rnT {q(extracted)} {q(volume)}"]
    for old_extracted, old_volume in predecessors:
        lines += [f"cp -rnT {q(extracted)} {q(old_volume)} || true", f"cp -rnT {q(old_extracted)} {q(volume)} || true"]
    return "\n".join(lines)


def asset_cleanup_script(*, base: str, role: str, versions: Iterable[str]) -> str:
    """A `sh` script removing a role's extracted assets and asset volumes of every version but `versions` (those
    it still has containers of: running or kept for rollback)."""
    q = shlex.quote
    keep = " ".join(f"! -name {q(f'{role}-{v}')}" for v in versions)
    return "; ".join(f"find {q(f'{base}/{kind}')} -mindepth 1 -maxdepth 1 -name {q(role + '-*')} {keep} "
                     f"-exec rm -rf {{}} + 2>/dev/null || true" for kind in ("extracted", "volumes"))


# -- the host's kamal-proxy container (Kamal's proxy.run) ------------------------------------------------------------

def proxy_run(run: Mapping[str, Any] | None) -> dict[str, Any]:
    """How kamal-proxy's container is created: its ports (published as `proxy.run` says: Kamal's 80/443 by
    default), log size, `kamal-proxy run` flags and `docker run` options."""
    run = dict(run or {})
    ports: list[Any] = [80, 443]
    bindings: dict[str, Any] = {}
    if run.get("publish", True):
        ips = list(run.get("bind_ips") or []) or [None]
        for container, host in ((80, int(run.get("http_port", 80))), (443, int(run.get("https_port", 443)))):
            bindings[f"{container}/tcp"] = [(ip, host) if ip else host for ip in ips]
    metrics = int(run["metrics_port"]) if run.get("metrics_port") else None  # (props carry numbers as floats)
    command = ["kamal-proxy", "run", *(["--debug"] if run.get("debug") else []),
               *([f"--metrics-port={metrics}"] if metrics else [])]
    if metrics:
        ports.append(metrics)
    host, container = run_options(run.get("options") or {})
    if len(command) > 2:
        container["command"] = command
    return {"ports": ports, "port_bindings": bindings or None, "log_max_size": run.get("log_max_size") or "10m",
            "host": host, "container": container}


def proxy_run_digest(run: Mapping[str, Any] | None) -> str:
    """How kamal-proxy was told to run, as a label on its container (numbers as the config has them)."""
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, Mapping):
            return {k: norm(x) for k, x in v.items()}
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v
    return hashlib.sha256(json.dumps(norm(dict(run or {})), sort_keys=True).encode()).hexdigest()[:16]
