"""The bench's fault proxy: a toxiproxy server with one proxy per bench host, between the deployer and that host's
sshd, driven over toxiproxy's HTTP API.

A target that uses a host's `proxied_address`/`proxied_port` (see `tests.bench.Host`) instead of its `address`/
`port` goes through the proxy; then `FaultProxy` slows it down or cuts it on demand:

    faults = FaultProxy(bench.fault_proxy)
    with faults.latency("host1", 25):   # 25 ms each way: 50 ms more per round trip
        ...
    faults.cut("host1")                 # open connections are reset at their next byte, new ones at their first
    faults.restore("host1")             # no toxics, proxy enabled

Nothing here is product code; the product only sees a slow or broken TCP connection.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any, Iterator

API_PORT = 8474
STREAMS = ("upstream", "downstream")  # client -> host sshd, and back


class FaultProxyError(RuntimeError):
    pass


class FaultProxy:
    def __init__(self, api: str, timeout: float = 5):
        self.base = f"http://{api}"
        self.timeout = timeout
        # the API is on a bench address: never through an HTTP proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise FaultProxyError(f"toxiproxy {method} {path}: {exc.code} {exc.read().decode(errors='replace')}") \
                from None
        except OSError as exc:
            raise FaultProxyError(f"toxiproxy at {self.base} did not answer {method} {path}: {exc}") from None
        return json.loads(text) if text.strip() else None

    # -- proxies ----------------------------------------------------------------------------------------------
    def version(self) -> str:
        return str(self._call("GET", "/version"))

    def proxies(self) -> dict[str, Any]:
        return self._call("GET", "/proxies")

    def populate(self, proxies: list[dict[str, Any]]) -> None:
        """Create the proxies (name, listen, upstream) that are missing or differ; others are left alone."""
        self._call("POST", "/populate", proxies)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disabled: every open connection through the proxy is closed and new ones are refused."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    # -- toxics -----------------------------------------------------------------------------------------------
    def toxics(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/proxies/{name}/toxics")

    def add_toxic(self, name: str, kind: str, stream: str, attributes: dict[str, Any], toxic: str | None = None) \
            -> None:
        self._call("POST", f"/proxies/{name}/toxics", {"name": toxic or f"{kind}_{stream}", "type": kind,
                                                       "stream": stream, "toxicity": 1.0,
                                                       "attributes": attributes})

    def add_latency(self, name: str, ms_each_way: int = 25, jitter_ms: int = 0) -> None:
        """Delay every byte by `ms_each_way` in both directions: a round trip grows by twice that."""
        for stream in STREAMS:
            self.add_toxic(name, "latency", stream, {"latency": ms_each_way, "jitter": jitter_ms})

    def cut(self, name: str, after_ms: int = 0) -> None:
        """TCP resets (`reset_peer`) both ways: open connections are reset when data next flows (or after
        `after_ms`), new ones right after they connect. Lasts until `restore`."""
        for stream in STREAMS:
            self.add_toxic(name, "reset_peer", stream, {"timeout": after_ms})

    def blackhole(self, name: str) -> None:
        """Data stops flowing both ways and nothing is closed (`timeout` toxic with timeout 0): a host that
        vanished from the network. Lasts until `restore`."""
        for stream in STREAMS:
            self.add_toxic(name, "timeout", stream, {"timeout": 0})

    def restore(self, name: str | None = None) -> None:
        """No toxics and the proxy enabled: for one host, or (no name) every proxy."""
        if name is None:
            self._call("POST", "/reset")
            return
        for toxic in self.toxics(name):
            self._call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}")
        self.set_enabled(name, True)

    @contextlib.contextmanager
    def latency(self, name: str, ms_each_way: int = 25) -> Iterator[None]:
        self.add_latency(name, ms_each_way)
        try:
            yield
        finally:
            self.restore(name)
