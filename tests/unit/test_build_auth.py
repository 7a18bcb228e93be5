"""A build sends the daemon the stack's registry credentials and nothing else of the operator's Docker config:
checked on the wire, against a local HTTP server standing in for the daemon (loopback only)."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import docker
import pytest

from components.providers.image import _build_auth


@pytest.fixture
def daemon():
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen["X-Registry-Config"] = self.headers.get("X-Registry-Config", "")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"stream": "done\\n"}\n'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


@pytest.fixture
def operator_config(tmp_path, monkeypatch):
    """The operator's own Docker login, as `docker login` leaves it."""
    cfg = tmp_path / "docker"
    cfg.mkdir()
    secret = base64.b64encode(b"me:operators-own-password").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {"private.example.com": {"auth": secret}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))


def _build(url: str, props: dict) -> None:
    c = docker.APIClient(base_url=url, version="1.41")
    _build_auth(c, props)
    for _ in c.build(fileobj=io.BytesIO(b""), custom_context=True, tag="x:y", decode=True):
        pass


def test_only_the_stacks_registry_credentials_reach_the_daemon(daemon, operator_config):
    url, seen = daemon
    _build(url, {"registry_server": "r.example.com:5000", "registry_username": "deploy",
                 "registry_password": "stack-password"})
    sent = json.loads(base64.urlsafe_b64decode(seen["X-Registry-Config"] + "=="))
    assert set(sent) == {"r.example.com:5000"}
    assert sent["r.example.com:5000"]["password"] == "stack-password"
    assert "operators-own-password" not in json.dumps(sent)


def test_without_registry_credentials_none_of_the_operators_are_sent(daemon, operator_config):
    url, seen = daemon
    _build(url, {"registry_server": None})
    sent = json.loads(base64.urlsafe_b64decode(seen["X-Registry-Config"] + "=="))
    assert "private.example.com" not in sent and "operators-own-password" not in json.dumps(sent)
