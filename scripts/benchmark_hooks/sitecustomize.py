"""Timing hooks for `make benchmark`, loaded (through PYTHONPATH) into the Python processes that `pulumi` starts -
the program and the shipyard plugin - and only when SHIPYARD_BENCH_TIMINGS names a file.

They wrap, from outside, what the providers do: each provider method (create, update, delete, diff, check, read),
the readiness wait, the route switch, every Docker API call and health probe, SSH connections and SFTP sessions.
Each is one JSON line (process, thread, host, what, start, end, peak RSS) appended to that file. Nothing in the
product changes; without the variable this file does nothing but load the system's own sitecustomize, if any.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time

_PATH = os.environ.get("SHIPYARD_BENCH_TIMINGS")


def _chain_system_sitecustomize() -> None:
    """This file shadows the interpreter's own sitecustomize (if any): run that one too."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_system_sitecustomize", candidate)
            try:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            except Exception:
                pass
            return


_chain_system_sitecustomize()


def _rss_kb() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _emit(record: dict) -> None:
    record.setdefault("pid", os.getpid())
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _cmdline() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return " ".join(sys.argv)


def _span(what: str, host_of=None):
    """A decorator factory: times a call as one record."""
    def wrap(fn):
        def timed(*args, **kwargs):
            t0 = time.time()
            try:
                result = fn(*args, **kwargs)
            finally:
                pass
            if hasattr(result, "__next__") and what.startswith("docker."):
                return _timed_stream(result, what, t0, host_of(args) if host_of else None)
            _emit({"what": what, "host": host_of(args) if host_of else None, "t0": t0, "t1": time.time(),
                   "thread": threading.get_ident(), "rss_kb": _rss_kb()})
            return result
        timed.__wrapped__ = fn
        timed._bench_timed = True
        return timed
    return wrap


def _timed_stream(gen, what, t0, host):
    try:
        yield from gen
    finally:
        _emit({"what": what, "host": host, "t0": t0, "t1": time.time(), "thread": threading.get_ident(),
               "rss_kb": _rss_kb()})


def _docker_host(args) -> str | None:
    client = args[0]
    cached = getattr(client, "_bench_host", None)
    if cached is None:
        try:
            adapter = client.adapters.get("http+docker://ssh")
            cached = adapter.ssh.get_transport().getpeername()[0]
        except Exception:
            cached = "?"
        client._bench_host = cached
    return cached


def _props_host(args) -> str | None:
    for a in args[1:]:
        if isinstance(a, dict):
            for key in ("target", "build_host"):
                t = a.get(key)
                if isinstance(t, dict) and t.get("host"):
                    return t["host"]
    return None


DOCKER_CALLS = ("build", "push", "pull", "create_container", "start", "stop", "remove_container", "inspect_container",
                "inspect_image", "exec_create", "exec_start", "exec_inspect", "containers", "images", "tag", "rename",
                "load_image", "get_image", "networks", "create_network", "remove_image", "version", "logs",
                "connect_container_to_network", "volumes", "create_volume")
PROVIDER_METHODS = {
    "components.providers.container": {"ContainerProvider": ("create", "update", "delete", "diff", "read",
                                                             "_wait_ready", "_after_rollout", "_upload")},
    "components.providers.proxy": {"ProxyProvider": ("create", "update", "delete", "diff", "read"),
                                   "RouteProvider": ("create", "update", "delete", "diff", "read")},
    "components.providers.image": {"ImageProvider": ("create", "update", "delete", "diff", "read", "check",
                                                     "_build", "_push", "_ship")},
    "components.providers.network": {"NetworkProvider": ("create", "update", "delete", "diff", "read")},
    "components.providers.volume": {"VolumeProvider": ("create", "update", "delete", "diff", "read")},
}


def _patch_docker(module) -> None:
    api = module.APIClient
    for name in DOCKER_CALLS:
        if hasattr(api, name) and not hasattr(getattr(api, name), "_bench_timed"):
            setattr(api, name, _span(f"docker.{name}", _docker_host)(getattr(api, name)))


def _patch_providers(module) -> None:
    for cls_name, methods in PROVIDER_METHODS.get(module.__name__, {}).items():
        cls = getattr(module, cls_name, None)
        if cls is None:
            continue
        for m in methods:
            fn = cls.__dict__.get(m)
            if fn is None:
                continue
            if isinstance(fn, staticmethod):
                inner = fn.__func__
                setattr(cls, m, staticmethod(_span(f"{cls_name}.{m}", lambda a: _props_host((None, *a)))(inner)))
            else:
                setattr(cls, m, _span(f"{cls_name}.{m}", _props_host)(fn))


def _patch_hosts(module) -> None:
    module.http_probe = _span("probe", lambda a: getattr(a[0], "host", None))(module.http_probe)


def _patch_connection(module) -> None:
    real_init = module.Connection.__init__

    def init(self, target):
        t0 = time.time()
        real_init(self, target)
        _emit({"what": "ssh.connect", "host": target.host, "t0": t0, "t1": time.time(),
               "thread": threading.get_ident(), "rss_kb": _rss_kb()})
    module.Connection.__init__ = init


def _patch_paramiko(module) -> None:
    client = module.SSHClient
    client.open_sftp = _span("sftp.open", lambda a: None)(client.open_sftp)


_AFTER_IMPORT = {"docker.api.client": _patch_docker, "components.hosts": _patch_hosts, "components.dockerapi": _patch_connection,
                 "paramiko.client": _patch_paramiko, **{m: _patch_providers for m in PROVIDER_METHODS}}


class _Finder(importlib.abc.MetaPathFinder):
    """Patches each module of interest right after it is first imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _AFTER_IMPORT:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                loader = spec.loader
                real_exec = loader.exec_module

                class _Loader(importlib.abc.Loader):
                    def create_module(self, spec):
                        return loader.create_module(spec)

                    def exec_module(self, module):
                        real_exec(module)
                        try:
                            _AFTER_IMPORT[fullname](module)
                        except Exception as exc:  # a hook must never break the run
                            _emit({"what": "hook.error", "module": fullname, "error": repr(exc)})
                spec.loader = _Loader()
                return spec
        return None


if _PATH:
    import atexit
    _emit({"what": "process.start", "t0": time.time(), "cmd": _cmdline()[:200]})
    def _exit() -> None:
        import resource
        use = resource.getrusage(resource.RUSAGE_SELF)
        _emit({"what": "process.exit", "t0": time.time(), "cmd": _cmdline()[:200],
               "cpu_s": use.ru_utime + use.ru_stime, "rss_kb": use.ru_maxrss})
    atexit.register(_exit)
    sys.meta_path.insert(0, _Finder())
