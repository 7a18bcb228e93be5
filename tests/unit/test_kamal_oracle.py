"""The real Kamal 2.11 is the oracle: every config of Kamal's own test fixtures (and of ours) is resolved by Kamal's
configuration classes (tests/kamal_peer.py) and by shipyard's reader, and what each would deploy is compared key by
key - roles, hosts, env and secret values per host, proxies, labels, accessories, registry, builder, boot and
timeouts. A config Kamal refuses is refused here too; one it accepts is accepted, or refused only for a key this
project leaves out of scope."""

from __future__ import annotations

import os
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest

from components import config, kamal, payloads, plan
from components.configtypes import AccessoryFile
from components.errors import ConfigError
from components.providers.container import DEFAULT_READINESS_DELAY_S
from tests.kamal_peer import resolve
from tests.unit.test_kamal import FIXTURES, fixture_app

# kamal-proxy's own defaults, which Kamal leaves to it when a key is not set
PROXY_DEFAULTS = {"healthcheck_interval": 1.0, "healthcheck_timeout": 5.0, "response_timeout": 30.0}


VERSION = "oracle"  # the version both deploy


def kamal_run_env(env: dict[str, str]) -> dict[str, str]:
    """The variables `docker run` sets (shipyard's own SHIPYARD_* aside); KAMAL_CONTAINER_NAME is each tool's name
    for the container (shipyard's always carries the stack's destination), so only its presence is compared."""
    out = {k: v for k, v in env.items() if not k.startswith("SHIPYARD_")}
    if "KAMAL_CONTAINER_NAME" in out:
        out["KAMAL_CONTAINER_NAME"] = "<its name>"
    return out


# kamal-proxy's defaults for `kamal-proxy deploy` flags either side may leave out
DEPLOY_DEFAULTS = {"deploy-timeout": ["30"], "drain-timeout": ["30"], "health-check-interval": ["1"],
                   "health-check-timeout": ["5"], "health-check-path": ["/up"], "target-timeout": ["30"],
                   "tls-redirect": ["true"], "strip-path-prefix": ["true"], "buffer-requests": ["false"],
                   "buffer-responses": ["false"]}


def deploy_flags(args: list[str]) -> dict[str, list[str]]:
    """`kamal-proxy deploy` flags ({flag: [values]}), durations in seconds, defaults filled in, the service name and
    target left out (each tool names them its own way)."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        flag, eq, value = arg[2:].partition("=")
        if not eq:
            if i < len(args) and not args[i].startswith("--"):
                value, i = args[i], i + 1
            else:
                value = "true"
        value = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        if m := re.fullmatch(r"(\d+)ms", value):
            value = f"{int(m[1]) / 1000:g}"
        elif m := re.fullmatch(r"([\d.]+)s", value):
            value = f"{float(m[1]):g}"
        out.setdefault(flag, []).append(value)
    out.pop("target", None)
    for flag in ("error-pages", "tls-certificate-path", "tls-private-key-path"):
        if flag in out:  # where each tool keeps them on the host
            out[flag] = [f"<{flag}>"]
    if "forward-headers" not in out:  # kamal-proxy: forward them without TLS, not with it
        out["forward-headers"] = ["false" if "tls" in out else "true"]
    return {**DEPLOY_DEFAULTS, **out}


def proxy_run(p: config.Proxy | None) -> dict[str, Any] | None:
    if p is None or p.run is None:
        return None
    run = p.run.model_dump()
    return {"image": p.image, **run, "bind_ips": list(run["bind_ips"]), "options": options(run["options"])}


def options(flags: Any) -> dict[str, Any]:
    """`docker run` flags: a flag given once is its value, also from a list of one."""
    return dict(flags or {})


def ours(cfg: config.Deploy, project: Path) -> dict[str, Any]:
    """What shipyard deploys for a config, in the oracle's shape."""
    specs = {(s.role, s.host): s for s in plan.container_specs(cfg, VERSION, "o/p")}
    accessory_specs = {(s.accessory, s.host): s for s in plan.accessory_specs(cfg, "o/p")}
    for s in specs.values():
        assert s.env.get("KAMAL_CONTAINER_NAME") == s.name
    def env(e: config.Env) -> dict[str, Any]:  # the clear part is in run_env, as `docker run` sets it
        return {"secret": {n: cfg.secrets.get(n, "") for n in e.secret}}

    def proxy(p: config.Proxy | None) -> dict[str, Any] | None:
        if p is None:
            return None
        return {"hosts": list(p.hosts), "app_port": p.app_port, "ssl": p.ssl,
                "path_prefixes": list(p.path_prefixes), "healthcheck_path": p.healthcheck.path,
                "healthcheck_interval": p.healthcheck.interval, "healthcheck_timeout": p.healthcheck.timeout,
                "response_timeout": p.response_timeout,
                "certificate": cfg.secrets[p.ssl_certificate] if p.ssl_certificate else None,
                "private_key": cfg.secrets[p.ssl_private_key] if p.ssl_private_key else None}

    def logging(spec_logging: Any) -> dict[str, Any]:
        return {"driver": None, "options": {}, **(spec_logging or {})}

    def cmd(c: str | tuple[str, ...] | None) -> list[str] | None:  # the container's argv
        return ["sh", "-c", c] if isinstance(c, str) else c and list(c)

    roles = {name: {"hosts": list(role.hosts), "cmd": cmd(role.cmd),
                    "env": {h: env(cfg.host_env(name, h)) for h in role.hosts},
                    "proxy": proxy(cfg.role_proxy(name)), "labels": dict(role.labels),
                    "run_env": {h: kamal_run_env(specs[(name, h)].env) for h in role.hosts},
                    "logging": logging(specs[(name, role.hosts[0])].logging),
                    "asset_path": cfg.role_asset_path(name),
                    "proxy_run": proxy_run(cfg.role_proxy(name)),
                    "deploy_args": deploy_flags(payloads.proxy_deploy_argv(
                        "route", "TARGET", specs[(name, role.hosts[0])].proxy.route_props())
                        + (["--error-pages", "pages"] if cfg.error_pages else [])
                        + (["--tls-certificate-path", "c", "--tls-private-key-path", "k"]
                           if specs[(name, role.hosts[0])].proxy.ssl_certificate else []))
                    if specs[(name, role.hosts[0])].proxy else None,
                    "options": options(specs[(name, role.hosts[0])].options)}
             for name, role in cfg.servers.items()}
    accessories = {name: {"image": accessory_specs[(name, a.all_hosts()[0])].image, "hosts": list(a.all_hosts()),
                          "port": a.port, "cmd": cmd(a.cmd),
                          "env": env(a.env), "names": list(accessory_specs[(name, a.all_hosts()[0])].aliases),
                          "run_env": {h: kamal_run_env(accessory_specs[(name, h)].env) for h in a.all_hosts()},
                          "logging": logging(accessory_specs[(name, a.all_hosts()[0])].logging),
                          "options": options(accessory_specs[(name, a.all_hosts()[0])].options),
                          "registry": a.registry and {"server": a.registry.server, "username": a.registry.username,
                                                      "password": a.registry.password},
                          "proxy": proxy(a.proxy),
                          "deploy_args": deploy_flags(payloads.proxy_deploy_argv(
                              "route", "TARGET", accessory_specs[(name, a.all_hosts()[0])].proxy.route_props()))
                          if a.proxy else None,
                          "mounts": sorted([*(AccessoryFile.parse(f).remote for f in a.files),
                                            *(m.split(":")[1] for m in (*a.directories, *a.volumes))])}
                   for name, a in cfg.accessories.items()}
    registry = cfg.registry
    context = os.path.normpath(project / cfg.builder.context)
    return {
        "service": cfg.service, "image": cfg.image,
        "registry": {"server": registry.server, "username": registry.username, "password": registry.password}
        if registry else None,
        "roles": roles, "accessories": accessories,
        "builder": {"context": context, "dockerfile": os.path.normpath(os.path.join(context, cfg.builder.dockerfile)),
                    "target": cfg.builder.target, "args": dict(cfg.builder.args), "arch": cfg.builder.arch,
                    "clean_clone": cfg.builder.clean_checkout,
                    "host": cfg.builder.host,
                    "login": [cfg.builder.user or cfg.ssh.user, cfg.builder.port or cfg.ssh.port]
                    if cfg.builder.host else None},
        "ssh": {"user": cfg.ssh.user, "port": cfg.ssh.port, "proxy": cfg.ssh.proxy,
                "proxy_command": cfg.ssh.proxy_command, "keys_only": cfg.ssh.keys_only,
                "config": cfg.ssh.config if isinstance(cfg.ssh.config, bool) else [
                    os.path.relpath(project / f, project) for f in cfg.ssh.config],
                "key_data": [cfg.secrets[name] for name in cfg.ssh.key_data] or None},
        "boot": {"limit": cfg.boot.limit, "wait": cfg.boot.wait},
        "retain_containers": cfg.retain_containers,
        "readiness_delay": cfg.readiness_delay if cfg.readiness_delay is not None else DEFAULT_READINESS_DELAY_S,
        "drain_timeout": cfg.drain_timeout,
    }


def theirs(k: dict[str, Any], app: Path) -> dict[str, Any]:
    """The oracle's answer, in shipyard's terms where both say the same thing differently: no registry server is
    Docker Hub, a registry on localhost is none (shipyard streams the image), kamal-proxy's defaults filled in."""
    server = k["registry"]["server"]
    registry = None if server and server.startswith("localhost") else {**k["registry"],
                                                                       "server": server or "docker.io"}
    def argv(cmd: str | None) -> list[str] | None:  # Kamal's cmd is a string the host's shell splits
        return cmd and shlex.split(cmd)

    roles = {name: {**r, "cmd": argv(r["cmd"]), "env": {h: {"secret": e["secret"]} for h, e in r["env"].items()},
                    "proxy": r["proxy"] and {**r["proxy"], **{key: r["proxy"][key] or default
                                                                   for key, default in PROXY_DEFAULTS.items()}},
                    "run_env": {h: kamal_run_env(e) for h, e in r["run_env"].items()}, "options": options(r["options"]),
                    "proxy_run": r["proxy_run"] and {**r["proxy_run"], "options": options(r["proxy_run"]["options"])},
                    "deploy_args": r["deploy_args"] and deploy_flags(r["deploy_args"])}
             for name, r in k["roles"].items()}
    # an accessory answers to its name in the config (shipyard's own) and to Kamal's name for it
    accessories = {name: {**{key: v for key, v in a.items() if key != "service_name"},
                          "cmd": argv(a["cmd"]), "env": {"secret": a["env"]["secret"]},
                          "options": options(a["options"]),
                          "proxy": a["proxy"] and {**a["proxy"], **{key: a["proxy"][key] or default
                                                                     for key, default in PROXY_DEFAULTS.items()}},
                          "deploy_args": a["deploy_args"] and deploy_flags(a["deploy_args"]),
                          "run_env": {h: kamal_run_env(e) for h, e in a["run_env"].items()},
                          "port": a["port"] and str(a["port"]), "mounts": sorted(a["mounts"]),
                          "names": list(dict.fromkeys([name, a["service_name"]]))}
                   for name, a in k["accessories"].items()}
    builder = k["builder"]
    context = os.path.normpath(app / builder["context"])
    arch = builder["arch"][0] if isinstance(builder["arch"], list) and len(builder["arch"]) == 1 else builder["arch"]
    remote = re.match(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?", builder["remote"] or "")
    return {
        "service": k["service"], "image": k["image"], "registry": registry, "roles": roles,
        "accessories": accessories,
        "builder": {"context": context, "dockerfile": os.path.normpath(app / builder["dockerfile"]),
                    "target": builder["target"], "args": builder["args"], "arch": arch,
                    "clean_clone": builder["clean_clone"],
                    "host": remote and remote["host"],
                    "login": [remote["user"] or k["ssh"]["user"], int(remote["port"] or k["ssh"]["port"])]
                    if remote else None},
        "ssh": k["ssh"],
        "boot": {"limit": k["boot"]["limit"], "wait": k["boot"]["wait"] or 0},
        "retain_containers": k["retain_containers"], "readiness_delay": k["readiness_delay"],
        "drain_timeout": k["drain_timeout"],
    }


# Apps of our own, for what Kamal's fixtures do not show: ERB beyond ENV, env values Kamal leaves to the host's
# shell or unset, role env over the top-level env, secret aliases, an accessory's own name, SSH, boot and timeouts
OWN_APPS: dict[str, dict[str, str]] = {
    "own:shop": {
        "config/deploy.yml": textwrap.dedent("""\
            service: shop
            image: acme/shop
            servers:
              web:
                hosts: [10.0.0.1, {10.0.0.2: replica}]
                env:
                  clear:
                    ROLE_ONLY: "1"
                    EMPTY_HERE: ""
              jobs:
                hosts: [10.0.0.3]
                cmd: bin/jobs --queue "default high"
                labels: {team: payments}
                options: {memory: 2g, cpus: 1.5, init: true, add-host: ["db.internal:10.0.0.3", "cache:10.0.0.4"]}
                logging: {options: {max-file: "3"}}
            registry:
              server: <%= "registry." + "example.com" %>
              username: <%= `printf deployer` %>
              password: [KAMAL_REGISTRY_PASSWORD]
            builder:
              arch: amd64
              args:
                RUBY_VERSION: <%= ENV.fetch("SHOP_RUBY", "3.3") %>
            env:
              clear:
                DATA_DIR: ${HOME}/data
                PRICE: $5 and `cmd` "quoted" \\back
                EMPTY_HERE: something
                BLANK: "  "
            <% if ENV["KAMAL_DESTINATION"] == "staging" %>
                STAGING: "yes"
            <% end %>
              secret:
                - DB_PASSWORD:SHOP_DB_PASSWORD
                - API_KEY
              tags:
                replica:
                  clear: {READ_ONLY: "1", EMPTY_HERE: "from the tag"}
                  secret: [REPLICA_TOKEN]
            proxy:
              hosts: [shop.example.com]
              app_port: 3000
              healthcheck: {path: /health, interval: 2}
              forward_headers: false
              buffering: {requests: false, memory: 5000000, max_request_body: 10000000}
              logging: {response_headers: [X-Request-Id]}
              run:
                metrics_port: 9191
                log_max_size: 20m
                bind_ips: [10.0.0.1]
                registry: registry.example.com:5000
                options: {memory: 256m}
            accessories:
              db:
                image: postgres:16
                host: 10.0.0.3
                port: 5432
                service: shop-postgres
                env:
                  clear: {POSTGRES_USER: shop, POSTGRES_DB: ""}
                  secret: [POSTGRES_PASSWORD]
                directories: [data:/var/lib/postgresql/data]
                options: {shm-size: 256m}
              cache:
                image: redis:7
                roles: [web]
                registry: {server: "mirror.example.com:5000", username: cacher, password: [CACHE_PASSWORD]}
            logging:
              driver: json-file
              options: {max-size: 100m}
            ssh:
              user: deploy
              port: 2222
              proxy: bastion.shop.example.com
              config: [config/ssh_config, ~/.ssh/work_config]
            boot:
              limit: 50%
              wait: 3
            readiness_delay: 4
            drain_timeout: 12
            retain_containers: 2
            """),
        "config/deploy.staging.yml": "proxy: {hosts: [staging.shop.example.com]}\nenv: {clear: {OVERLAY: staged}}\n",
        ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=r\nSHOP_DB_PASSWORD=db\nAPI_KEY=k\nPOSTGRES_PASSWORD=pg\n"
                          "REPLICA_TOKEN=t\nCACHE_PASSWORD=c\n",
        ".kamal/secrets.staging": "KAMAL_REGISTRY_PASSWORD=r\nSHOP_DB_PASSWORD=db-s\nAPI_KEY=k-s\n"
                                  "POSTGRES_PASSWORD=pg-s\nREPLICA_TOKEN=t-s\nCACHE_PASSWORD=c-s\n",
    },
}


OWN_APPS["own:tls"] = {
    "config/deploy.yml": textwrap.dedent("""\
        service: vault
        image: acme/vault
        servers: [10.0.0.7]
        registry: {server: "localhost:5000"}
        builder: {arch: amd64}
        ssh:
          proxy_command: "ssh -W %h:%p jump@bastion.example.com"
          keys_only: true
          key_data:  # a secret's name; a key written inline, which Kamal 2.11 still takes
            - DEPLOY_KEY
            - "-----BEGIN OPENSSH PRIVATE KEY-----\nb2xk\n-----END OPENSSH PRIVATE KEY-----\n"
        proxy:
          host: vault.example.com
          path_prefixes: [/vault, /secrets]
          ssl:
            certificate_pem: CERT_PEM
            private_key_pem: KEY_PEM
        """),
    ".kamal/secrets": 'CERT_PEM="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"\nKEY_PEM=k\n'
                      'DEPLOY_KEY="-----BEGIN OPENSSH PRIVATE KEY-----\nbmV3\n-----END OPENSSH PRIVATE KEY-----"\n',
    ".kamal/secrets.staging": 'CERT_PEM="-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----"\nKEY_PEM=k2\n'
                              'DEPLOY_KEY="-----BEGIN OPENSSH PRIVATE KEY-----\nc3Rn\n'
                              '-----END OPENSSH PRIVATE KEY-----"\n',
    "config/deploy.staging.yml": "{}\n",
}


# an app of accessories only: no role, so no image is built (Kamal accepts it)
OWN_APPS["own:accessories-only"] = {
    "config/deploy.yml": textwrap.dedent("""\
        service: data
        image: acme/data
        registry: {username: ops, password: [KAMAL_REGISTRY_PASSWORD]}
        builder: {arch: amd64}
        accessories:
          db:
            image: postgres:16
            host: 10.0.0.8
            port: "127.0.0.1:5432:5432"
            env: {secret: [POSTGRES_PASSWORD]}
            directories: ["data:/var/lib/postgresql/data:z", "backups/daily:/backups"]
            files:
              - config/pg.conf:/etc/postgresql/pg.conf:ro
              - {local: config/server.key, remote: /etc/ssl/server.key, mode: "0600", owner: "999:999"}
          cache:
            image: redis:7
            hosts: [10.0.0.8, 10.0.0.9]
        """),
    ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=r\nPOSTGRES_PASSWORD=pg\n",
    "config/deploy.staging.yml": "accessories: {cache: {hosts: [10.0.0.10]}}\n",
    "config/pg.conf": "listen_addresses = '*'\n", "config/server.key": "not a real key\n",
}


# what Kamal refuses and a reader might let through: a proxy's `host` beside `hosts` (also when the destination's
# file adds one), a number Kamal takes whole in any other form, a registry that is not local without its login
REFUSED_BASE = textwrap.dedent("""\
    service: odd
    image: acme/odd
    servers: {web: {hosts: [10.0.0.1], proxy: {host: web.example.com}}}
    registry: {server: registry.example.com, username: u, password: [PW]}
    builder: {arch: amd64}
    """)
for _name, _extra, _overlay in [
        ("host-and-hosts", "proxy: {host: a.example.com, hosts: [b.example.com]}\n", "{}\n"),
        ("hosts-and-overlay-host", "proxy: {hosts: [a.example.com, b.example.com]}\n",
         "proxy: {host: c.example.com}\n"),
        ("app-port-string", "proxy: {host: a.example.com, app_port: '3000'}\n", "{}\n"),
        ("interval-fraction", "proxy: {host: a.example.com, healthcheck: {interval: 1.5}}\n", "{}\n"),
        ("deploy-timeout-word", "deploy_timeout: soon\n", "{}\n"),
        ("role-timeout-string", "", "servers: {web: {hosts: [10.0.0.1], proxy: {response_timeout: '10'}}}\n"),
        ("accessory-port-true", "accessories: {db: {image: x, host: 10.0.0.1, proxy: {host: db.example.com, "
                                "app_port: true}}}\n", "{}\n"),
        ("registry-without-login", "", "registry: {server: registry.example.com, username: '', password: []}\n")]:
    OWN_APPS[f"own:refused-{_name}"] = {"config/deploy.yml": REFUSED_BASE + _extra,
                                        "config/deploy.staging.yml": _overlay, ".kamal/secrets": "PW=p\n"}


def make_app(root: Path, name: str) -> None:
    if name in OWN_APPS:
        for rel, text in OWN_APPS[name].items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    else:
        fixture_app(root, name)


def fixture_cases() -> list[tuple[str, str | None]]:
    cases = [(name, dest) for name in OWN_APPS for dest in (None, "staging")]
    for base in sorted(FIXTURES.glob("*.yml")):
        if base.name.count(".") == 1:
            cases.append((base.name, None))
            cases += [(base.name, o.name.split(".")[1]) for o in sorted(FIXTURES.glob(f"{base.stem}.*.yml"))]
    return cases


# Kamal keys this project leaves out of scope, with why (README: the Kamal-key table)
OUT_OF_SCOPE = {"builder.driver"}  # a cloud builder is a Docker Build Cloud account; shipyard builds on a host


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[tuple[str, str | None], tuple[Path, dict[str, Any]]]:
    """Every fixture as a Kamal app directory, resolved by the real Kamal in one run."""
    root = tmp_path_factory.mktemp("oracle")
    apps = []
    for name, destination in fixture_cases():
        app = root / f"{name}-{destination}".replace(":", "-")
        make_app(app, name)
        apps.append(app)
    answers = resolve([(app, dest) for app, (_, dest) in zip(apps, fixture_cases())])
    return {case: (app, answer) for case, app, answer in zip(fixture_cases(), apps, answers)}


def read(app: Path, destination: str | None) -> config.Deploy:
    """The config as a stack naming it reads it (shipyard:kamal), with Kamal's destination."""
    stack = {"kamal": {"config": "config/deploy.yml", "destination": destination}}
    return kamal.load_stack(stack, stack=destination or "production", project_dir=app, environ={})


@pytest.mark.parametrize("case", fixture_cases(), ids=lambda c: f"{c[0]}:{c[1]}")
def test_a_fixture_maps_to_what_kamal_resolves(fixtures, case):
    app, answer = fixtures[case]
    if "refused" in answer:
        with pytest.raises(ConfigError):
            read(app, case[1])
        return
    try:
        cfg = read(app, case[1])
    except ConfigError as exc:
        refused = {line.split(": ", 1)[0] for line in str(exc).splitlines()[1:]}
        assert refused <= OUT_OF_SCOPE, f"Kamal accepts this config; shipyard refused:\n{exc}"
        return
    assert ours(cfg, app) == theirs(answer, app)
