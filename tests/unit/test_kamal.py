"""Reading a Kamal config: its merge rules, ERB, secrets files and `$(...)`, refused keys, and details of Kamal 2.11's
own test fixtures (tests/unit/test_kamal_oracle.py holds every fixture to what the real Kamal resolves)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from components import config, kamal
from components.errors import ConfigError

FIXTURES = Path(__file__).parent / "kamal_fixtures"
SECRETS = "MYSQL_ROOT_PASSWORD=root-pw\nPASSWORD=app-pw\n"


def fixture_app(root: Path, name: str, secrets: str = SECRETS) -> Path:
    """A Kamal app directory holding fixture `name` as config/deploy.yml (its overlays as deploy.<dest>.yml)."""
    (root / "config").mkdir(parents=True)
    stem = name.removesuffix(".yml")
    shutil.copy(FIXTURES / name, root / "config" / "deploy.yml")
    for overlay in FIXTURES.glob(f"{stem}.*.yml"):
        shutil.copy(overlay, root / "config" / f"deploy.{overlay.name.split('.')[1]}.yml")
    (root / ".kamal").mkdir()
    for file in (".kamal/secrets", ".kamal/secrets.elsewhere", ".kamal/secrets.world"):
        (root / file).write_text(secrets)
    return root / "config" / "deploy.yml"


def load_fixture(tmp_path: Path, name: str, destination: str | None = None) -> config.Deploy:
    raw = kamal.load(fixture_app(tmp_path, name), destination=destination, project_dir=tmp_path, environ={})
    return config.load(raw, stack=destination or "production")


def test_fixture_details_registry_secrets_accessory_files(tmp_path):
    cfg = load_fixture(tmp_path, "deploy_with_accessories.yml")
    assert cfg.registry.server == "docker.io" and cfg.registry.username == "user" and cfg.registry.password == "pw"
    assert cfg.secrets == {"MYSQL_ROOT_PASSWORD": "root-pw"}
    mysql = cfg.accessories["mysql"]
    assert mysql.env.clear == {"MYSQL_ROOT_HOST": "%"}
    assert mysql.files == ("test/fixtures/files/my.cnf:/etc/mysql/my.cnf",)  # relative to the app directory
    assert mysql.directories == ("data:/var/lib/mysql",)
    assert cfg.builder.context == "."
    assert cfg.role_proxy("workers") is None  # only the primary role runs the proxy without asking


def test_a_local_registry_means_no_registry_the_image_is_streamed(tmp_path):
    cfg = load_fixture(tmp_path, "deploy_with_local_registry.yml")
    assert cfg.registry is None and cfg.image == "dhh/app"


def test_a_destination_without_its_overlay_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config/deploy.staging.yml does not exist: Kamal reads it for "
                                          r"destination staging"):
        load_fixture(tmp_path, "deploy_simple.yml", "staging")


# -- merge rules -------------------------------------------------------------------------------------------------------


def write_app(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root / "config" / "deploy.yml"


BASE_YML = textwrap.dedent("""\
    service: app
    image: acme/app
    servers: [10.0.0.1]
    registry: {server: registry.example.com, username: u, password: [REGISTRY_PASSWORD]}
    builder: {arch: amd64}
""")


def load_app(tmp_path: Path, deploy: str, destination: str | None = None, *, files: dict[str, str] | None = None,
             environ: dict[str, str] | None = None, project_dir: Path | None = None, **kw: Any) -> dict[str, Any]:
    files = {"config/deploy.yml": deploy, ".kamal/secrets-common": "REGISTRY_PASSWORD=reg-pw\n", **(files or {})}
    return kamal.load(write_app(tmp_path, files), destination=destination, project_dir=project_dir or tmp_path,
                      environ=environ or {}, **kw)


def refusals(tmp_path: Path, deploy: str, destination: str | None = None, **kw: Any) -> dict[str, str]:
    """The refused paths and their messages (the error names nothing else)."""
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path, deploy, destination, **kw)
    assert err.value.path == "kamal", str(err.value)
    lines = str(err.value).splitlines()
    if len(lines) == 1:  # one refusal, in one line: `kamal: <files>: <path>: <why>[; how to go without it]`
        return dict([lines[0].split(": ", 2)[2].removesuffix(WITHOUT_IT).split(": ", 1)])
    return dict(line.split(": ", 1) for line in lines[1:])


WITHOUT_IT = "; drop it, or list its path in shipyard:kamal.ignore to deploy without it"


def test_an_empty_registry_password_is_refused_at_preview_naming_the_secret(tmp_path):
    """`KAMAL_REGISTRY_PASSWORD=$KAMAL_REGISTRY_PASSWORD` with the variable unset where the deploy runs: one line
    before anything is created, not an error in the middle of `up`."""
    assert refusals(tmp_path, BASE_YML, files={".kamal/secrets-common": "REGISTRY_PASSWORD=$REGISTRY_PASSWORD\n"}) \
        == {"registry.password": "secret REGISTRY_PASSWORD is empty (in .kamal/secrets-common, .kamal/secrets): set "
                                 "what it reads from before deploying"}
    assert load_app(tmp_path / "b", BASE_YML, files={".kamal/secrets-common": "REGISTRY_PASSWORD=$P\n"},
                    environ={"P": "pw"})["registry"]["password"] == "pw"
    # in no secrets file: put it there, or give the stack its own (which wins over the file's)
    assert refusals(tmp_path / "c", BASE_YML, files={".kamal/secrets-common": "OTHER=1\n"}) == {
        "registry.password": "secret REGISTRY_PASSWORD is in none of .kamal/secrets-common, .kamal/secrets: add it "
                             "there, or set it with `pulumi config set --secret --path 'shipyard:registry.password' "
                             "VALUE`"}


def test_deep_merge_merges_hashes_and_replaces_everything_else():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": [1], "e": {"f": 1}}
    assert kamal.deep_merge(base, {"a": {"c": [3]}, "d": [2], "e": None}) == {"a": {"b": 1, "c": [3]}, "d": [2],
                                                                              "e": None}


def test_the_overlay_merges_hashes_and_replaces_lists(tmp_path):
    raw = load_app(tmp_path, BASE_YML + "env: {clear: {A: '1', B: '1'}}\n", "staging", files={
        "config/deploy.staging.yml": "servers: [10.0.0.2, 10.0.0.3]\nenv: {clear: {B: '2'}}\n"})
    assert raw["servers"] == {"web": {"hosts": ["10.0.0.2", "10.0.0.3"]}}
    assert raw["env"] == {"clear": {"A": "1", "B": "2"}}
    assert raw["registry"] == {"server": "registry.example.com", "username": "u", "password": "reg-pw"}


def test_primary_role_runs_the_proxy_unless_false_others_only_when_asked(tmp_path):
    raw = load_app(tmp_path, BASE_YML.replace("servers: [10.0.0.1]", textwrap.dedent("""\
    primary_role: api
    servers:
      web: [10.0.0.1]
      api: {hosts: [10.0.0.2]}
      admin: {hosts: [10.0.0.3], proxy: true}
      jobs: {hosts: [10.0.0.4], proxy: {app_port: 3000}}
    proxy: {host: "a.example.com,b.example.com", app_port: 8080, healthcheck: {path: /health}}
    """)))
    servers = raw["servers"]
    assert "proxy" not in servers["web"] and "proxy" not in raw  # web is not primary here: no proxy
    expected = {"hosts": ["a.example.com", "b.example.com"], "app_port": 8080, "healthcheck": {"path": "/health"}}
    assert servers["api"]["proxy"] == expected and servers["admin"]["proxy"] == expected
    assert servers["jobs"]["proxy"] == {**expected, "app_port": 3000}  # the role's keys over the shared ones
    cfg = config.load(raw, stack="staging")
    assert cfg.role_proxy("web") is None and cfg.role_proxy("api").hosts == ("a.example.com", "b.example.com")


def test_primary_web_with_proxy_false_runs_no_proxy(tmp_path):
    raw = load_app(tmp_path, BASE_YML.replace("servers: [10.0.0.1]", "servers: {web: {hosts: [10.0.0.1], "
                                                                     "proxy: false}}"))
    assert "proxy" not in raw and "proxy" not in raw["servers"]["web"]


def test_host_tags_pick_accessory_hosts_and_env_tags_the_hosts_env(tmp_path):
    deploy = BASE_YML.replace("servers: [10.0.0.1]", textwrap.dedent("""\
    servers:
      web: [10.0.0.1, {10.0.0.2: replica}]
      jobs: {hosts: [{10.0.0.3: [replica, big]}]}
    accessories:
      cache: {image: redis:7, tag: replica}
      db: {image: postgres:16, tags: [big]}
    """))
    raw = load_app(tmp_path, deploy)
    assert raw["servers"]["web"]["hosts"] == ["10.0.0.1", "10.0.0.2"]
    assert raw["accessories"]["cache"]["hosts"] == ["10.0.0.2", "10.0.0.3"]
    assert raw["accessories"]["db"]["hosts"] == ["10.0.0.3"]
    deploy += "env: {clear: {A: '0'}, tags: {big: {B: '2'}, replica: {clear: {A: '1'}, secret: [S]}}}\n"
    cfg = config.load(load_app(tmp_path / "b", deploy, files={".kamal/secrets": "S=s\n"}), stack="production")
    assert cfg.host_env("web", "10.0.0.1") == config.Env(clear={"A": "0"})
    assert cfg.host_env("web", "10.0.0.2") == config.Env(clear={"A": "1"}, secret=("S",))
    assert cfg.host_env("jobs", "10.0.0.3") == config.Env(clear={"A": "1", "B": "2"}, secret=("S",))


def test_env_short_form_values_become_strings_as_in_ruby(tmp_path):
    raw = load_app(tmp_path, BASE_YML + "env: {PORT: 3306, DEBUG: true, RATIO: 1.5}\n")
    assert raw["env"] == {"clear": {"PORT": "3306", "DEBUG": "true", "RATIO": "1.5"}}


def test_secret_aliases_read_another_secret(tmp_path):
    deploy = BASE_YML + textwrap.dedent("""\
    env: {secret: ["DB_PASSWORD:MAIN_DB_PASSWORD", PLAIN]}
    accessories:
      db: {image: postgres:16, host: 10.0.0.1, env: {secret: ["POSTGRES_PASSWORD:MAIN_DB_PASSWORD"]}}
    """)
    files = {".kamal/secrets": "MAIN_DB_PASSWORD=main\nPLAIN=plain\n"}
    raw = load_app(tmp_path, deploy, files=files)
    assert raw["env"]["secret"] == ["DB_PASSWORD", "PLAIN"]
    assert raw["secrets"] == {"DB_PASSWORD": "main", "PLAIN": "plain", "POSTGRES_PASSWORD": "main"}
    cfg = config.load(raw, stack="production")
    assert cfg.role_env("web").secret == ("DB_PASSWORD", "PLAIN")
    conflict = deploy.replace("POSTGRES_PASSWORD:MAIN_DB_PASSWORD", "DB_PASSWORD:OTHER")
    assert refusals(tmp_path / "b", conflict, files=files) == {
        "accessories.db.env.secret[0]": "DB_PASSWORD is read from secret OTHER here and from MAIN_DB_PASSWORD in "
                                        "env.secret[0]; shipyard gives a name one value per destination"}


def test_a_secret_in_no_file_says_where_to_put_it(tmp_path):
    assert refusals(tmp_path, BASE_YML + "env: {secret: [MISSING]}\n", "staging",
                    files={"config/deploy.staging.yml": "{}"}) == {
        "env.secret[0]": "secret MISSING is in none of .kamal/secrets-common, .kamal/secrets.staging: add it there, "
                         "or set it with `pulumi config set --secret --path 'shipyard:secrets.MISSING' VALUE`"}


def test_accessories_hosts_roles_ports_files_directories(tmp_path):
    deploy = BASE_YML.replace("servers: [10.0.0.1]", textwrap.dedent("""\
    servers:
      web: [10.0.0.1, 10.0.0.2]
      jobs: [10.0.0.2, 10.0.0.3]
    volumes: ["/var/log/app:/logs", "cache:/cache:ro"]
    labels: {team: shop}
    accessories:
      a: {image: busybox, host: 10.0.0.9, port: 8080, cmd: "httpd -f -p 8080", labels: {tier: x}}
      b: {image: busybox, hosts: [10.0.0.7, 10.0.0.8], port: "127.0.0.1:5432:5432"}
      c: {image: busybox, roles: [web, jobs], port: "6379:6379", files: ["conf/my.cnf:/etc/my.cnf:ro"],
          directories: ["data:/data", "/srv/c:/srv"]}
      d: {image: busybox, role: jobs, volumes: ["d:/d"]}
    """))
    project = tmp_path / "infra"
    project.mkdir()
    raw = load_app(tmp_path / "myapp", deploy, project_dir=project)
    acc = raw["accessories"]
    assert acc["a"] == {"image": "busybox", "host": "10.0.0.9", "port": "8080:8080", "cmd": ["httpd", "-f", "-p",
                                                                                             "8080"],
                        "labels": {"tier": "x"}}
    assert acc["b"]["hosts"] == ["10.0.0.7", "10.0.0.8"] and acc["b"]["port"] == "127.0.0.1:5432:5432"
    assert acc["c"]["hosts"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert acc["c"]["files"] == ["../myapp/conf/my.cnf:/etc/my.cnf:ro"]  # relative to the project, as shipyard reads
    assert acc["c"]["directories"] == ["data:/data"] and acc["c"]["volumes"] == ["/srv/c:/srv"]
    assert acc["d"]["hosts"] == ["10.0.0.2", "10.0.0.3"] and acc["d"]["volumes"] == ["d:/d"]
    for role in raw["servers"].values():  # top-level volumes and labels go to every role
        assert role["volumes"] == ["/var/log/app:/logs", "cache:/cache:ro"] and role["labels"] == {"team": "shop"}
    assert raw["builder"]["context"] == "../myapp"
    cfg = config.load(raw, stack="staging")
    assert cfg.accessories["c"].all_hosts() == ("10.0.0.1", "10.0.0.2", "10.0.0.3")


def test_builder_ssh_boot_and_timeouts_map(tmp_path):
    raw = load_app(tmp_path, BASE_YML.replace("builder: {arch: amd64}", textwrap.dedent("""\
    builder: {arch: [amd64], context: app, dockerfile: app/Dockerfile.prod, target: prod, args: {RUBY: 3.3},
              remote: "ssh://deploy@builder.example.com", local: false, provenance: false, sbom: false,
              cache: {type: registry, image: kamal-app-build-cache}}
    ssh: {user: deploy, port: "2222", keys: [keys/id_ed25519, ~/.ssh/id_rsa, /etc/keys/id],
          log_level: debug, keys_only: true,
          proxy: bastion.example.com}
    boot: {limit: 50%, parallel_roles: true, wait: 2}
    servers: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4]
    retain_containers: 3
    deploy_timeout: 20
    drain_timeout: 5
    readiness_delay: 0
    """)).replace("servers: [10.0.0.1]\n", ""))
    assert raw["builder"] == {"context": "app", "dockerfile": "Dockerfile.prod", "target": "prod", "arch": "amd64",
                              "args": {"RUBY": "3.3"}, "host": "builder.example.com"}
    assert raw["ssh"] == {"user": "deploy", "port": 2222, "keys": ["keys/id_ed25519", "~/.ssh/id_rsa", "/etc/keys/id"],
                          "keys_only": True, "proxy": "root@bastion.example.com", "config": True}
    assert raw["boot"] == {"limit": 2, "wait": 2} and raw["retain_containers"] == 3
    assert raw["proxy"] == {"deploy_timeout": 20, "drain_timeout": 5} and raw["readiness_delay"] == 0
    # Kamal's drain_timeout: the proxy's drain, and the stop timeout of roles without proxy (`docker stop -t`)
    assert raw["drain_timeout"] == 5
    loaded = config.load(raw, stack="staging")
    assert loaded.readiness_delay == 0 and loaded.drain_timeout == 5


def test_every_documented_kamal_key_is_mapped_or_refused(tmp_path):
    """One file with every key of Kamal 2.11's lib/kamal/configuration/docs/*.yml: the refused ones are listed;
    with them ignored, the rest loads."""
    deploy = """\
    service: myapp
    image: my-image
    labels: {my-label: my-value}
    volumes: ["/path/on/host:/path/in/container:ro"]
    registry: {server: registry.example.com, username: [REGISTRY_USER], password: [REGISTRY_PASSWORD]}
    servers:
      web: [172.1.0.1, {172.1.0.2: experiment1}]
      workers:
        hosts: [172.1.0.3, {172.1.0.4: [experiment1]}]
        cmd: bin/jobs
        options: {memory: 2g}
        logging: {driver: json-file}
        proxy: {hosts: [workers.example.com]}  # with the app's `hosts`, `host` would be both
        labels: {my-label: workers}
        env: {clear: {A: "1"}, secret: ["DB_PASSWORD:MAIN_DB_PASSWORD"]}
        asset_path: /public
    env:
      clear: {DB_USER: app}
      secret: ["DB_PASSWORD:MAIN_DB_PASSWORD"]
      tags: {experiment1: {MYSQL_USER: monitoring}}
    asset_path: /path/to/assets
    hooks_path: .kamal/hooks
    hooks_output:
      pre-deploy: :verbose
    secrets_path: .kamal/secrets
    error_pages_path: public
    require_destination: true
    primary_role: web
    allow_empty_roles: false
    retain_containers: 3
    minimum_version: 1.3.0
    readiness_delay: 1
    deploy_timeout: 10
    drain_timeout: 10
    run_directory: /etc/kamal
    ssh: {user: app, port: "2222", proxy: root@proxy-host, proxy_command: "ssh -W %h:%p user@proxy",
          log_level: debug, keys_only: false, keys: [~/.ssh/id.pem], key_data: [SSH_PRIVATE_KEY], config: false}
    builder:
      arch: [amd64]
      remote: ssh://app@docker-builder:2222
      local: true
      pack: {builder: "heroku/builder:24"}
      cache: {type: registry}
      context: .
      dockerfile: Dockerfile.production
      target: production
      args: {ENVIRONMENT: production}
      secrets: [SECRET1]
      ssh: default=$SSH_AUTH_SOCK
      driver: docker
      provenance: mode=max
      sbom: true
    accessories:
      mysql:
        service: mysql
        image: mysql:8.0
        registry: {server: registry.example.com, username: [REGISTRY_USER], password: [REGISTRY_PASSWORD]}
        host: mysql-db1
        cmd: bin/mysqld
        port: "127.0.0.1:3306:3306"
        labels: {app: myapp}
        options: {cpus: 2}
        env: {secret: ["DB_PASSWORD:MAIN_DB_PASSWORD"]}
        files:
          - config/my.cnf.erb:/etc/mysql/my.cnf
          - config/myoptions.cnf:/etc/mysql/myoptions.cnf:ro
          - {local: config/secret.key, remote: /etc/mysql/secret.key, mode: "0600", owner: "mysql:mysql"}
        directories: ["mysql-logs:/var/log/mysql", "mysql-data:/var/lib/mysql:z"]
        volumes: ["/path/to/mysql-logs:/var/log/mysql"]
        network: custom
        proxy: {host: mysql.example.com}
      replica: {image: mysql:8.0, hosts: [mysql-db2], tags: [experiment1]}
      by_role: {image: mysql:8.0, roles: [workers]}
    proxy:
      hosts: [foo.example.com]
      app_port: 3000
      ssl: true
      ssl_redirect: false
      forward_headers: true
      response_timeout: 10
      path_prefixes: ["/api"]
      strip_path_prefix: false
      healthcheck: {interval: 3, path: /health, timeout: 3}
      buffering: {requests: true}
      logging: {request_headers: [Cache-Control]}
      run: {http_port: 8080}
    sshkit: {max_concurrent_starts: 10}
    boot: {limit: 25%, wait: 10, parallel_roles: true}  # wait: seconds between batches
    logging: {driver: json-file}
    aliases: {console: app exec -i --reuse "bin/rails console"}
    x-anchors: {shared: &shared 1}
    """
    files = {".kamal/secrets.production": "REGISTRY_USER=u\nREGISTRY_PASSWORD=p\nMAIN_DB_PASSWORD=m\n"
                                          "SSH_PRIVATE_KEY=k\n",
             "config/deploy.production.yml": "{}", ".kamal/hooks/pre-deploy.sample": "#!/bin/sh\n"}
    refused = {
        "builder.pack", "builder.secrets", "builder.ssh", "builder.driver", "builder.provenance",
        "builder.sbom",
    }
    assert set(refusals(tmp_path / "a", deploy, "production", files=files)) == refused
    raw = load_app(tmp_path / "b", deploy, "production", files=files, ignore=sorted(refused))
    cfg = config.load(raw, stack="production")
    assert cfg.servers["web"].hosts == ("172.1.0.1", "172.1.0.2")
    assert cfg.role_proxy("web").hosts == ("foo.example.com",) and cfg.role_proxy("web").ssl
    assert cfg.ssh.key_data == ("SSH_PRIVATE_KEY",)  # a secret's name, as Kamal reads it
    assert cfg.role_proxy("web").path_prefix == "/api" and cfg.role_proxy("web").healthcheck.path == "/health"
    assert cfg.role_proxy("workers").hosts == ("workers.example.com",)
    assert cfg.servers["workers"].labels == {"my-label": "workers"}
    assert cfg.servers["web"].volumes == ("/path/on/host:/path/in/container:ro",)
    assert cfg.builder.host == "docker-builder" and cfg.ssh.port == 2222
    assert cfg.accessories["by_role"].all_hosts() == ("172.1.0.3", "172.1.0.4")
    assert cfg.servers["workers"].options == {"memory": "2g"} and cfg.accessories["mysql"].options == {"cpus": "2"}
    assert cfg.role_asset_path("web") == "/path/to/assets" and cfg.role_asset_path("workers") == "/public"
    from components import plan
    assert cfg.accessories["mysql"].network == "custom" and cfg.accessories["mysql"].registry.server == \
        "registry.example.com"
    assert [a.image for a in plan.accessory_specs(cfg, "o/p") if a.accessory == "mysql"] == \
        ["registry.example.com/mysql:8.0"]
    (mysql,) = [a for a in plan.accessory_specs(cfg, "o/p") if a.accessory == "mysql"]
    assert mysql.networks == ("kamal", "custom")  # behind the proxy, and the network it names
    assert cfg.container_logging("workers") == {"driver": "json-file", "options": {}}
    web = cfg.role_proxy("web")
    assert web.run.http_port == 8080 and web.run.https_port == 443
    assert (web.ssl_redirect, web.forward_headers, web.strip_path_prefix, web.buffer_requests) == \
        (False, True, False, True)
    assert web.log_request_headers == ("Cache-Control",)
    assert cfg.secrets == {"DB_PASSWORD": "m", "SSH_PRIVATE_KEY": "k"} and cfg.registry.username == "u"


def test_unknown_keys_and_newer_kamal_are_refused(tmp_path):
    assert refusals(tmp_path, BASE_YML + "minimum_version: 3.0.0\nservcie: typo\n") == {
        "servcie": "unknown Kamal key (did you mean service?); Kamal 2.11 refuses it too",
        "minimum_version": "the file wants Kamal 3.0.0; shipyard reads Kamal 2.11 configs"}


def test_a_config_that_requires_a_destination_says_that_alone_without_one(tmp_path):
    """As Kamal ("You must specify a destination"): its servers are in the destination's file, so nothing else is
    named."""
    deploy = BASE_YML.replace("servers: [10.0.0.1]\n", "") + "require_destination: true\n"
    assert refusals(tmp_path, deploy) == {"require_destination": "this config needs a destination: set "
                                                                 "shipyard:kamal.destination, or leave it unset to "
                                                                 "use the stack's destination"}


def test_what_kamal_refuses_is_refused_by_kamals_path(tmp_path):
    """Values Kamal's own checks refuse (the oracle test runs Kamal on each): a number not whole, a proxy with both
    `host` and `hosts` (also once the app's proxy and a role's are merged, as Kamal merges them), a registry
    without its login."""
    role_host = BASE_YML.replace("servers: [10.0.0.1]", "servers: {web: {hosts: [10.0.0.1], proxy: {host: w.test}}}")
    assert refusals(tmp_path / "a", BASE_YML + "proxy: {host: a.test, hosts: [b.test], app_port: '80', "
                                               "healthcheck: {interval: 1.5}}\ndeploy_timeout: soon\n") == {
        "proxy": "specify one of 'host' or 'hosts', not both (Kamal refuses it too)",
        "proxy.app_port": "should be an integer (Kamal refuses it too)",
        "proxy.healthcheck.interval": "should be an integer (Kamal refuses it too)",
        "deploy_timeout": "should be an integer (Kamal refuses it too)"}
    assert refusals(tmp_path / "b", role_host + "proxy: {hosts: [a.test]}\n") == {
        "servers.web.proxy": "specify one of 'host' or 'hosts', not both: with the app's proxy it has both (Kamal "
                             "refuses it too)"}
    assert refusals(tmp_path / "c", BASE_YML.replace("username: u, ", "")) == {
        "registry.username": "is required (Kamal refuses it too)"}


def test_kamal_hooks_are_the_stacks_hooks_run_from_the_app_directory_with_every_secret_of_the_files(tmp_path):
    """As Kamal's hooks, they get every secret of the secrets files (a webhook's URL the config never names)."""
    raw = load_app(tmp_path / "a", BASE_YML, files={".kamal/hooks/pre-deploy": "#!/bin/sh\n",
                                                    ".kamal/hooks/post-deploy.sample": "#!/bin/sh\n",
                                                    ".kamal/secrets": "SLACK_WEBHOOK=https://hooks.invalid/x\n"})
    assert raw["hooks"] == {"path": ".kamal/hooks", "workdir": ".", "secrets": {
        "REGISTRY_PASSWORD": "reg-pw", "SLACK_WEBHOOK": "https://hooks.invalid/x"}}
    assert "SLACK_WEBHOOK" not in raw.get("secrets", {})  # nothing deployed uses it: no container changes with it
    raw = load_app(tmp_path / "b", BASE_YML + "hooks_path: bin/hooks\n", files={"bin/hooks/pre-build": "#!/bin/sh\n"},
                   project_dir=tmp_path)
    assert raw["hooks"] == {"path": "b/bin/hooks", "workdir": "b", "secrets": {"REGISTRY_PASSWORD": "reg-pw"}}
    assert "hooks" not in load_app(tmp_path / "c", BASE_YML, files={".kamal/hooks/pre-deploy.sample": ""})


def test_a_refusal_ignoring_cannot_help_says_to_fix_it_and_stays_when_listed(tmp_path):
    deploy = BASE_YML.replace("{arch: amd64}", "{arch: amd64, secrets: [S]}") + \
        "servcie: typo\nssh: {key_data: [K]}\nenv: {secret: [NOPE]}\n"
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path, deploy, ignore=["servcie", "env.secret", "ssh.key_data", "builder.secrets"])
    assert str(err.value).splitlines() == [
        "kamal: config/deploy.yml cannot be deployed as written (fix each as it says):",
        "servcie: unknown Kamal key (did you mean service?); Kamal 2.11 refuses it too",
        "ssh.key_data[0]: secret K is in none of .kamal/secrets-common, .kamal/secrets: add it there, or set it "
        "with `pulumi config set --secret --path 'shipyard:secrets.K' VALUE`",
        "env.secret[0]: secret NOPE is in none of .kamal/secrets-common, .kamal/secrets: add it there, or set it "
        "with `pulumi config set --secret --path 'shipyard:secrets.NOPE' VALUE`"]
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path / "b", deploy)
    assert "(fix each as it says; those not supported yet may instead be listed in shipyard:kamal.ignore" \
        in str(err.value)


def test_an_ignored_key_whose_erb_needs_ruby_is_deployed_without_it_never_with_a_placeholder(tmp_path, mocker):
    mocker.patch("components.kamal.erb.shutil.which", return_value=None)
    deploy = BASE_YML + 'builder: {arch: amd64, args: {RUBY: <%= `cat .ruby-version` %>, KEEP: "1"}}\n'
    raw = load_app(tmp_path, deploy.replace("builder: {arch: amd64}\n", ""), ignore=["builder.args.RUBY"])
    assert raw["builder"]["args"] == {"KEEP": "1"}
    assert "__shipyard_erb" not in repr(raw)


def test_a_promoting_kamal_stack_takes_no_builder_from_the_kamal_config(tmp_path):
    """Kamal needs builder.arch; the promoting stack builds nothing, so Kamal's builder is not its to refuse."""
    project = stack_app(tmp_path)
    raw = kamal.stack_config({"kamal": {"config": "../myapp/config/deploy.yml"}, "promote": {"from_stack": "staging"}},
                             stack="production", project_dir=project, environ={})
    assert "builder" not in raw
    assert config.load(raw, stack="production").promote.from_stack == "staging"


def test_readiness_delay_is_shipyards_readiness_delay(tmp_path):
    deploy = BASE_YML.replace("servers: [10.0.0.1]", "servers: {web: [10.0.0.1], jobs: [10.0.0.2]}")
    assert config.load(load_app(tmp_path / "a", deploy + "readiness_delay: 12\n"), stack="s").readiness_delay == 12
    assert "readiness_delay" not in load_app(tmp_path / "b", deploy)  # unset: shipyard's default, Kamal's 7 s
    assert refusals(tmp_path / "c", deploy + "readiness_delay: soon\n") == {
        "readiness_delay": "should be an integer (Kamal refuses it too)"}
    with pytest.raises(ConfigError) as err:  # beyond what shipyard accepts: its path, as any stack key
        config.load(load_app(tmp_path / "d", deploy + "readiness_delay: 900\n"), stack="s")
    assert err.value.path == "readiness_delay"


# -- ERB ---------------------------------------------------------------------------------------------------------------


def test_erb_env_forms_are_evaluated(tmp_path):
    deploy = BASE_YML.replace("image: acme/app", 'image: <%= ENV["IMAGE"] %>') + textwrap.dedent("""\
        env:
          clear:
            PORT: <%= ENV.fetch("PORT") %>
            MODE: "<%= ENV.fetch('MODE', "fast") %>"
            EMPTY: "<%= ENV['NOT_SET'] %>"
            DEST: <%= ENV["KAMAL_DESTINATION"] -%>

            PCT: "100<%% literal"
        <%# a comment %>
    """)
    raw = load_app(tmp_path, deploy, "staging", environ={"IMAGE": "acme/other", "PORT": "8080"},
                   files={"config/deploy.staging.yml": "{}"})
    assert raw["image"] == "acme/other"
    assert raw["env"]["clear"] == {"PORT": "8080", "MODE": "fast", "EMPTY": "", "DEST": "staging",
                                   "PCT": "100<% literal"}


OTHER_ERB = """\
    servers: [10.0.0.1, <%= `echo 10.0.0.9` %>]
    <% if ENV["KAMAL_DESTINATION"] == "staging" %>
    env: {clear: {A: <%= "left" + "-" + ENV.fetch("B", "right") %>}}
    <% end %>
    # password: <%= %x(cat pw) %>
    """


def test_other_erb_is_rendered_by_ruby_in_the_app_directory_as_kamal_does(tmp_path):
    deploy = BASE_YML.replace("servers: [10.0.0.1]", textwrap.dedent(OTHER_ERB))
    (tmp_path / "pw").write_text("from-the-app-dir")
    raw = load_app(tmp_path, deploy, "staging", files={"config/deploy.staging.yml": "{}"})
    assert raw["servers"] == {"web": {"hosts": ["10.0.0.1", "10.0.0.9"]}}
    assert raw["env"] == {"clear": {"A": "left-right"}}
    raw = load_app(tmp_path / "prod", deploy, "production", files={"config/deploy.production.yml": "{}"})
    assert "env" not in raw  # the conditional, evaluated


def test_erb_that_fails_in_ruby_is_one_line_naming_the_file(tmp_path):
    deploy = BASE_YML.replace("image: acme/app", 'image: <%= ENV.fetch("MISSING").upcase %>')
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path, deploy)
    assert err.value.path == "kamal.config" and "\n" not in str(err.value)
    assert str(err.value).startswith("kamal.config: config/deploy.yml: its ERB failed in Ruby, as it would in Kamal:")
    assert "MISSING" in str(err.value)


def test_without_ruby_other_erb_is_refused_by_its_key_path_saying_ruby_is_needed(tmp_path, mocker):
    mocker.patch("components.kamal.erb.shutil.which", return_value=None)
    deploy = BASE_YML.replace("servers: [10.0.0.1]", textwrap.dedent(OTHER_ERB))
    need = ('Kamal evaluates it with Ruby: install ruby (without it only <%= ENV["X"] %>, <%= ENV.fetch("X") %> '
            'and <%= ENV.fetch("X", "default") %> are evaluated)')
    assert refusals(tmp_path, deploy) == {
        "servers[1]": f"ERB <%= `echo 10.0.0.9` %>: {need}",
        "config/deploy.yml line 4": f'ERB <% if ENV["KAMAL_DESTINATION"] == "staging" %>: {need}',
        "env.clear.A": f'ERB <%= "left" + "-" + ENV.fetch("B", "right") %>: {need}',
        "config/deploy.yml line 6": f"ERB <% end %>: {need}",
        "config/deploy.yml line 7": f"ERB <%= %x(cat pw) %>: {need}",
    }


def test_an_unset_variable_in_the_env_forms_is_refused_by_its_key_path(tmp_path):
    deploy = BASE_YML + 'env: {clear: {A: <%= ENV.fetch("MISSING") %>}}\n'
    assert refusals(tmp_path, deploy) == {
        "env.clear.A": '<%= ENV.fetch("MISSING") %>: MISSING is not set in the environment (Kamal stops here too)'}


# -- secrets files -----------------------------------------------------------------------------------------------------


def test_secrets_files_precedence_quotes_and_variables(tmp_path):
    deploy = BASE_YML + "env: {secret: [A, B, C, D, E, F, G]}\n"
    files = {
        "config/deploy.staging.yml": "{}",
        ".kamal/secrets-common": "A=common\nB=common\nREGISTRY_PASSWORD=reg\n",
        ".kamal/secrets": "B=no-destination\n",
        ".kamal/secrets.staging": textwrap.dedent("""\
            # staging's own
            export B=staging
            C='single $HOME stays'
            D="double ${USER_NAME}-x"
            E=$B-and-$USER_NAME  # a comment
            F=\\$LITERAL
            G=$UNSET
        """),
    }
    raw = load_app(tmp_path, deploy, "staging", files=files, environ={"USER_NAME": "ann", "HOME": "/root"})
    assert raw["secrets"] == {"A": "common", "B": "staging", "C": "single $HOME stays", "D": "double ann-x",
                              "E": "staging-and-ann", "F": "$LITERAL", "G": ""}
    raw = load_app(tmp_path / "nodest", deploy.replace("[A, B, C, D, E, F, G]", "[A, B]"), files=files)
    assert raw["secrets"] == {"A": "common", "B": "no-destination"}  # without a destination: .kamal/secrets


def test_a_custom_secrets_path(tmp_path):
    raw = load_app(tmp_path, BASE_YML + "secrets_path: config/creds\nenv: {secret: [X]}\n",
                   files={"config/creds": "X=from-creds\n", "config/creds-common": "REGISTRY_PASSWORD=r\n"})
    assert raw["secrets"] == {"X": "from-creds"}


COMMAND_SECRETS = {".kamal/secrets": "TOKEN=$(printf '%s-%s' token $SUFFIX)\nUNUSED=$(exit 3)\n"
                                     "FROM_FILE=$(cat token.txt)\nLATER=$TOKEN\n",
                   "token.txt": "file-token\n"}


def test_secret_commands_are_refused_unless_the_stack_opts_in(tmp_path):
    deploy = BASE_YML + "env: {secret: [TOKEN, LATER]}\n"
    assert refusals(tmp_path / "a", deploy, files=COMMAND_SECRETS) == {
        f"env.secret[{i}]": f"secret {name} in .kamal/secrets runs a command ($(...)); shipyard runs them only when "
                            f"the stack sets shipyard:kamal.run_secret_commands: true - or set the value with "
                            f"`pulumi config set --secret --path 'shipyard:secrets.{name}' VALUE`"
        for i, name in enumerate(["TOKEN", "LATER"])}
    # a value the stack sets itself needs no command
    raw = load_app(tmp_path / "b", deploy.replace("LATER", "PLAIN"), files={
        **COMMAND_SECRETS, ".kamal/secrets-common": "REGISTRY_PASSWORD=r\nPLAIN=p\n"},
        stack={"secrets": {"TOKEN": "from-stack"}})
    assert raw["secrets"] == {"PLAIN": "p"}


def test_secret_commands_run_in_the_app_directory_when_opted_in(tmp_path):
    raw = load_app(tmp_path, BASE_YML + "env: {secret: [TOKEN, FROM_FILE, LATER]}\n",
                   files={**COMMAND_SECRETS, ".kamal/secrets": COMMAND_SECRETS[".kamal/secrets"].replace(
                       "UNUSED=$(exit 3)\n", "")}, environ={"SUFFIX": "x"}, run_secret_commands=True)
    assert raw["secrets"] == {"TOKEN": "token-x", "FROM_FILE": "file-token", "LATER": "token-x"}


def test_a_failing_secret_command_names_file_and_variable_not_its_output(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path, BASE_YML, files={".kamal/secrets": "BAD=$(echo s3cret-out; exit 3)\n"},
                 run_secret_commands=True)
    assert str(err.value) == ("kamal: .kamal/secrets: the command in BAD failed (exited with code 3); run it by hand "
                              "to see why")


def test_kamal_secrets_commands_get_inline():
    seen = []
    kamal.parse_dotenv("X=$(kamal secrets fetch --adapter bitwarden a b)\n", {}, label="s", cwd=Path("."),
                       run=lambda cmd, cwd: seen.append(cmd) or "v")
    assert seen == ["kamal secrets fetch --adapter bitwarden a b"]
    assert kamal.run_command.__doc__ and "--inline" in kamal.run_command.__doc__


# -- the stack over the file -------------------------------------------------------------------------------------------


def stack_app(tmp_path: Path) -> Path:
    write_app(tmp_path / "myapp", {
        "config/deploy.yml": BASE_YML + "env: {clear: {A: '1'}, secret: [S]}\nproxy: {host: app.example.com}\n",
        "config/deploy.staging.yml": "proxy: {host: staging.example.com}\n",
        "config/deploy.production.yml": "{}",
        ".kamal/secrets-common": "REGISTRY_PASSWORD=r\n",
        ".kamal/secrets.staging": "S=staging-s\n", ".kamal/secrets.production": "S=production-s\n",
        ".kamal/secrets": "S=none-s\n"})
    (tmp_path / "infra").mkdir()
    return tmp_path / "infra"


def test_the_stack_names_the_file_and_its_own_keys_win(tmp_path):
    project = stack_app(tmp_path)
    stack = {"kamal": {"config": "../myapp/config/deploy.yml"}, "ssh": {"keys": ["k"]},
             "servers": {"web": {"hosts": ["10.0.0.5"]}}, "env": {"clear": {"B": "2"}}}
    raw = kamal.stack_config(stack, stack="staging", project_dir=project, environ={})
    cfg = config.load(raw, stack="staging")
    assert cfg.destination == "staging" and cfg.servers["web"].hosts == ("10.0.0.5",)
    assert cfg.env.clear == {"A": "1", "B": "2"} and cfg.secrets == {"S": "staging-s"}
    assert cfg.role_proxy("web").hosts == ("staging.example.com",)
    assert cfg.builder.context == "../myapp" and cfg.ssh.keys == ("k",)
    prod = config.load(kamal.stack_config({**stack, "destination": "production"}, stack="prod",
                                          project_dir=project, environ={}), stack="prod")
    assert prod.destination == "production" and prod.secrets == {"S": "production-s"}
    none = kamal.stack_config({**stack, "kamal": {"config": "../myapp/config/deploy.yml", "destination": None}},
                              stack="staging", project_dir=project, environ={})
    assert none["secrets"] == {"S": "none-s"} and none["proxy"]["hosts"] == ["app.example.com"]
    secret_from_stack = kamal.stack_config({**stack, "secrets": {"S": "stack-s"}}, stack="staging",
                                           project_dir=project, environ={})
    assert secret_from_stack["secrets"] == {"S": "stack-s"}


def test_a_value_of_the_kamal_file_that_shipyard_refuses_is_named_in_its_files_and_the_stacks_own_in_the_stack(
        tmp_path):
    project = stack_app(tmp_path)
    (tmp_path / "myapp/config/deploy.staging.yml").write_text("proxy: {host: staging.example.com, app_port: 70000}\n")
    stack = {"kamal": {"config": "../myapp/config/deploy.yml"}, "ssh": {"keys": ["k"]}}
    with pytest.raises(ConfigError) as err:
        kamal.load_stack(stack, stack="staging", project_dir=project, environ={})
    assert str(err.value) == ("kamal: config/deploy.yml + config/deploy.staging.yml: proxy.app_port: Input should be "
                              "less than or equal to 65535")
    (tmp_path / "myapp/config/deploy.staging.yml").write_text("proxy: {host: staging.example.com, app_port: eighty}\n")
    with pytest.raises(ConfigError) as err:  # one Kamal refuses too: by Kamal's path
        kamal.load_stack(stack, stack="staging", project_dir=project, environ={})
    assert str(err.value) == ("kamal: config/deploy.yml + config/deploy.staging.yml: proxy.app_port: should be an "
                              "integer (Kamal refuses it too)")
    with pytest.raises(ConfigError) as err:
        kamal.load_stack({**stack, "ssh": {"port": "twenty-two"}}, stack="production", project_dir=project,
                         environ={})
    assert err.value.path == "ssh.port"


def test_what_is_deployed_reads_without_the_secrets_a_deploy_needs_as_kamal_reads_it(tmp_path):
    """`kamal config -d production` and `kamal app details` read the config without its secrets; so does the
    shipyard command (details, logs, ...): a secret this checkout lacks is left unread - the deploy still refuses."""
    project = stack_app(tmp_path)
    (tmp_path / "myapp/.kamal/secrets.production").write_text("")
    (tmp_path / "myapp/.kamal/secrets-common").write_text("")
    stack = {"kamal": {"config": "../myapp/config/deploy.yml"}, "ssh": {"keys": ["k"]}, "destination": "production"}
    cfg = kamal.load_stack(stack, stack="production", project_dir=project, environ={}, secrets_needed=False)
    assert cfg.servers["web"].hosts == ("10.0.0.1",) and cfg.secrets["S"] == "(unread)"
    with pytest.raises(ConfigError, match="secret S is in none of .kamal/secrets-common, .kamal/secrets.production"):
        kamal.load_stack(stack, stack="production", project_dir=project, environ={})


def test_without_kamal_the_stack_config_is_unchanged(tmp_path):
    assert kamal.stack_config({"service": "x"}, stack="s", project_dir=tmp_path) == {"service": "x"}


@pytest.mark.parametrize("opts, path", [
    ({"config": "../myapp/config/deploy.yml", "destiantion": "x"}, "kamal.destiantion"),
    ({"file": "x"}, "kamal"),
    ({"config": "../myapp/config/deploy.yml", "ignore": "proxy"}, "kamal.ignore"),
    ({"config": "../myapp/config/deploy.yml", "run_secret_commands": "yes"}, "kamal.run_secret_commands"),
    ({"config": "../nowhere/deploy.yml"}, "kamal.config"),
])
def test_bad_kamal_options_name_their_path(tmp_path, opts, path):
    project = stack_app(tmp_path)
    with pytest.raises(ConfigError) as err:
        kamal.stack_config({"kamal": opts}, stack="staging", project_dir=project, environ={})
    assert err.value.path == path


def test_the_error_lists_every_refused_key_once_per_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_app(tmp_path, BASE_YML.replace("{arch: amd64}", "{arch: amd64, secrets: [S], driver: cloud}"))
    assert str(err.value) == (
        "kamal: config/deploy.yml cannot be deployed as written (drop them, or list their paths "
        "in shipyard:kamal.ignore to deploy without them):\nbuilder.secrets: not supported yet\n"
        "builder.driver: not supported yet")


def test_ssh_key_data_written_inline_is_a_secret_of_its_own_as_kamal_still_takes_it(tmp_path):
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    raw = load_app(tmp_path, BASE_YML + f"ssh:\n  key_data:\n    - {json.dumps(pem)}\n")
    cfg = config.load(raw, stack="staging")
    assert cfg.ssh.key_data == ("SSH_KEY_DATA_0",) and cfg.secrets["SSH_KEY_DATA_0"] == pem


def test_one_refusal_is_one_line_naming_the_key_it_looks_like(tmp_path):
    """A typo in a section (Kamal's own key names) or one key not supported yet: one line, with the file, the path
    and what to do - no header over it."""
    for deploy, says in (
            (BASE_YML + "proxy: {app_prot: 3000}\n", "kamal: config/deploy.yml: proxy.app_prot: unknown Kamal key (did "
                                                     "you mean app_port?); Kamal 2.11 refuses it too"),
            (BASE_YML.replace("{arch: amd64}", "{arch: amd64, secrets: [S]}"),
             "kamal: config/deploy.yml: builder.secrets: not supported yet; drop it, or list its path in "
             "shipyard:kamal.ignore to deploy without it")):
        with pytest.raises(ConfigError) as err:
            load_app(tmp_path, deploy)
        assert str(err.value) == says
