"""A Kamal app directory as it is - config/deploy.yml, its staging and production overlays, .kamal/secrets* - deployed
as two stacks onto one bench host behind kamal-proxy, with the real CLI. The stacks only name the file (and the
bench's SSH login). The SSH key is the deploying machine's, as a CI job holds one: in an environment variable, read
through `.kamal/secrets-common` into `ssh.key_data`, with no key file and no agent (`keys_only`). No version is
pinned: as with Kamal, the version is the app's commit, and the build takes what that commit holds.

The tests share one deployed pair (module fixture) and run in file order.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.bench import USER_HOME
from tests.conftest import Project, app_head, commit_app, host_docker, make_project, pulumi_env, requests_during, \
    show_after, ssh_config
from tests.e2e.cli_helpers import shipyard

pytestmark = pytest.mark.e2e

NAMES = {"staging": "staging.kamalshop.test", "production": "kamalshop.test"}
SECRET = {"staging": "st4ging-kamal-s3cret", "production": "pr0duction-kamal-s3cret"}
WEBHOOK = "https://hooks.invalid/kshop"  # a secret of the files that the config never names

DEPLOY = """\
    # A Kamal 2 config, as `kamal init` makes them
    service: kshop
    image: acme/kshop
    servers:
      web:
        - <%= ENV["KSHOP_HOST"] %>: canary
      job:
        hosts:
          - <%= ENV["KSHOP_HOST"] %>
        cmd: sh -c 'trap "exit 0" TERM; while :; do sleep 1; done'
    registry:
      server: {registry}
      username: deployer
      password:
        - KAMAL_REGISTRY_PASSWORD
    builder:
      arch: amd64
    env:
      clear:
        PLAIN: visible
        DATA_DIR: ${HOME}/data
        PRICE: $5
        UNSET_BY_KAMAL: ""
      secret:
        - GREETING
      tags:
        canary:
          CANARY: "yes"
    proxy:
      app_port: 80
      healthcheck:
        path: /up
        interval: 1
      run:
        log_max_size: 20m
        metrics_port: 9090
        options:
          memory: 256m
    deploy_timeout: 20
    drain_timeout: 2
    readiness_delay: 2
    retain_containers: 2
    error_pages_path: public
    asset_path: /www/assets
    aliases:
      shell: app exec --interactive --reuse "sh"
      whereami: app exec --reuse env
    accessories:
      db:
        image: library/busybox:latest
        registry:
          server: {registry}
          username: deployer
          password:
            - KAMAL_REGISTRY_PASSWORD
        host: <%= ENV["KSHOP_HOST"] %>
        cmd: sh -c 'mkdir -p /w && echo db-on-$KAMAL_HOST > /w/index.html && echo ok > /w/up && httpd -p 8080 -h /w && trap "exit 0" TERM && while :; do sleep 1; done'
        options:
          memory: 64m
        env:
          clear:
            DB_USER: kshop
          secret:
            - GREETING
        files:
          - config/db.conf.erb:/etc/db.conf
          - local: config/db.key
            remote: /etc/db.key
            mode: "0600"
            owner: "deploy:deploy"
        directories:
          - data/db:/var/lib/db:z
    logging:
      options:
        max-size: 5m
    ssh:
      keys_only: true
      key_data:
        - SSH_PRIVATE_KEY
"""


def certificate(proj: Path) -> tuple[str, str]:
    """A certificate of production's own (not Let's Encrypt), as a team keeps one in its secrets: (cert, key)."""
    name = NAMES["production"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(proj / "tls-key.pem"),
                    "-out", str(proj / "tls-cert.pem")], check=True, capture_output=True)
    return (proj / "tls-cert.pem").read_text(), (proj / "tls-key.pem").read_text()


def write_app(proj: Path, registry: str) -> None:
    app = proj / "app"
    cert, key = certificate(proj)
    files = {
        "config/deploy.yml": DEPLOY.replace("{registry}", registry),
        "config/deploy.staging.yml": f"proxy:\n  host: {NAMES['staging']}\n"
                                     f"accessories:\n  db:\n    proxy:\n      host: db.{NAMES['staging']}\n"
                                     f"      app_port: 8080\n",
        "config/deploy.production.yml": f"proxy:\n  host: {NAMES['production']}\n  forward_headers: false\n"
                                        f"  buffering:\n    max_request_body: 1000000\n"
                                        f"  ssl:\n    certificate_pem: CERT_PEM\n    private_key_pem: KEY_PEM\n"
                                        f"  ssl_redirect: false\nretain_containers: 3\n",
        # the registry password comes from the deploying machine's environment, as Kamal's dotenv reads `$VAR`
        ".kamal/secrets-common": "KAMAL_REGISTRY_PASSWORD=$KSHOP_REGISTRY_PASSWORD\nSSH_PRIVATE_KEY=$KSHOP_SSH_KEY\n",
        ".kamal/secrets.staging": f"GREETING={SECRET['staging']}\nWEBHOOK={WEBHOOK}\n",  # for the hooks alone
        ".kamal/secrets.production": f"GREETING=\"{SECRET['production']}\"\nCERT_PEM=\"{cert}\"\nKEY_PEM=\"{key}\"\n",
        ".dockerignore": ".kamal\n",  # config/ is sent, as in a Rails app
        "public/503.html": "<h1>kshop is down for maintenance</h1><p>{{ .Message }}</p>\n",
        # fingerprinted assets in the image, as a Rails app has them
        "Dockerfile": "FROM busybox:latest\nCOPY start.sh /start.sh\nCOPY assets /www/assets\nEXPOSE 80\n"
                      "CMD [\"/bin/sh\", \"/start.sh\"]\n",
        "assets/app-1.css": "body { color: black }\n",
        "config/db.conf.erb": "user=<%= ENV['DB_USER'] %> greeting=<%= ENV.fetch('GREETING') %>\n",
        "config/db.key": "a key only its owner reads\n",
    }
    for rel, text in files.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(textwrap.dedent(text))
    commit_app(proj, "config/deploy.yml", (app / "config/deploy.yml").read_text())


def stack(bench) -> dict:
    """The stack: the Kamal file, and the bench's login (its user and known hosts; the key is the file's)."""
    ssh = {k: v for k, v in ssh_config(bench).items() if k != "keys"}
    return {"kamal": {"config": "app/config/deploy.yml"}, "ssh": ssh}


def get(bench, dest: str) -> str:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/", headers={"Host": NAMES[dest]})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def pair(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("kamal")
    (root / "state").mkdir()
    env = {**pulumi_env(root / "state"), "KSHOP_HOST": bench.hosts[0].address,
           "KSHOP_REGISTRY_PASSWORD": bench.auth_registry_password,
           "KSHOP_SSH_KEY": Path(bench.identity_file).read_text()}
    proj = Project(make_project(root), env)
    write_app(proj.dir, bench.auth_registry)
    # the Pulumi project is a checkout of its own, as a clone of this repository is: its commits are not the app's
    git = ["git", "-c", "user.name=Project Author", "-c", "user.email=p@example.invalid", "-C", str(proj.dir)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "Pulumi.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "project"], check=True)
    for dest in NAMES:
        proj.init(dest, stack(bench))
        proj.up(dest)
    yield proj
    for dest in NAMES:
        proj.run("destroy", "--yes", stack=dest, check=False)


def test_each_destination_answers_on_its_own_host_name_with_its_own_secret(bench, pair):
    for dest in NAMES:
        answer = get(bench, dest)
        assert answer.startswith(f"service=kshop destination={dest} version={app_head(pair.dir)} role=web"), answer
        assert f"greeting={SECRET[dest]}" in answer
        out = pair.outputs(dest)
        assert out["urls"] == [f"{'https' if dest == 'production' else 'http'}://{NAMES[dest]}"]  # TLS: production
        assert out["repo_digest"].startswith(f"{bench.auth_registry}/acme/kshop@sha256:")  # pushed with the password
    d = host_docker(bench.hosts[0])
    for dest in NAMES:
        (c,) = d.containers(filters={"label": ["service=kshop", f"destination={dest}", "role=web"]})
        assert c["Names"] == [f"/kshop-web-{dest}-{app_head(pair.dir)}"]
        env = d.inspect_container(c["Id"])["Config"]["Env"]
        assert "PLAIN=visible" in env and f"GREETING={SECRET[dest]}" in env


def test_a_kamal_app_runs_unchanged_kamals_variables_and_its_accessory_by_kamals_name(bench, pair):
    """What the app reads of its runtime, as Kamal runs it: KAMAL_* in its env, the accessory as <service>-db."""
    host = bench.hosts[0].address
    d = host_docker(bench.hosts[0])
    for dest in NAMES:
        (c,) = d.containers(filters={"label": ["service=kshop", f"destination={dest}", "role=web"]})
        env = d.inspect_container(c["Id"])["Config"]["Env"]
        v = app_head(pair.dir)
        assert {f"KAMAL_CONTAINER_NAME=kshop-web-{dest}-{v}", f"KAMAL_VERSION={v}", f"KAMAL_HOST={host}",
                f"KAMAL_DESTINATION={dest}"} <= set(env)
        # `${...}` is the host shell's (the SSH user's home there), any other `$` is kept; a blank value is unset
        assert {f"DATA_DIR={USER_HOME}/data", "PRICE=$5", "CANARY=yes"} <= set(env)  # and the host's tag's env
        assert not [e for e in env if e.startswith("UNSET_BY_KAMAL")]
        assert d.inspect_container(c["Id"])["HostConfig"]["LogConfig"]["Config"] == {"max-size": "5m"}
        (db,) = d.containers(filters={"label": ["service=kshop", f"destination={dest}", "accessory=db"]})
        assert d.inspect_container(db["Id"])["HostConfig"]["Memory"] == 64 * 1024 * 1024  # options: {memory: 64m}
        # a file with its mode and owner (Kamal's files hash), and a directory of its own with mount options
        key = d.exec_start(d.exec_create(db["Id"], ["stat", "-c", "%a %u", "/etc/db.key"])["Id"]).decode().strip()
        assert key == f"600 {pwd.getpwnam('deploy').pw_uid}", key
        run = d.exec_create(db["Id"], ["sh", "-c", "touch /var/lib/db/written && echo ok"])
        assert d.exec_start(run["Id"]).decode().strip() == "ok"
        # its image from its own registry, pulled with its login
        assert f"{bench.auth_registry}/library/busybox:latest" in d.inspect_image(db["ImageID"])["RepoTags"]
        # and through kamal-proxy on its own host name (an accessory's proxy), staging's only
        if dest == "staging":
            req = urllib.request.Request(f"http://{host}/", headers={"Host": f"db.{NAMES['staging']}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.read().decode().strip() == f"db-on-{host}"
        run = d.exec_create(c["Id"], ["wget", "-qO-", "http://kshop-db:8080/"])
        reply = d.exec_start(run["Id"]).decode().strip()
        assert reply == f"db-on-{host}", reply


def test_the_hosts_kamal_proxy_runs_as_proxy_run_says(bench, pair):
    d = host_docker(bench.hosts[0])
    proxy = d.inspect_container("kamal-proxy")
    assert proxy["HostConfig"]["LogConfig"]["Config"] == {"max-size": "20m"}
    assert proxy["HostConfig"]["Memory"] == 256 * 1024 * 1024
    assert "--metrics-port=9090" in proxy["Config"]["Cmd"]
    run = d.exec_create("kamal-proxy", ["kamal-proxy", "list"])
    assert "kshop-web-staging" in d.exec_start(run["Id"]).decode()  # the routes lived through its restart


def test_each_route_has_kamals_proxy_settings(bench, pair):
    """kamal-proxy's own record of each route: what Kamal asks of it by default (buffering, logged headers), and
    what production's file sets (no forwarded headers, a request body limit)."""
    d = host_docker(bench.hosts[0])
    run = d.exec_create("kamal-proxy", ["cat", "/home/kamal-proxy/.config/kamal-proxy/kamal-proxy.state"])
    routes = {r["name"]: r["target_options"] for r in json.loads(d.exec_start(run["Id"]))}
    for dest in NAMES:
        target = routes[f"kshop-web-{dest}"]
        assert (target["buffer_requests"], target["buffer_responses"]) == (True, True)
        assert target["log_request_headers"] == ["Cache-Control", "Last-Modified", "User-Agent"]
    assert routes["kshop-web-staging"]["forward_headers"] is True  # kamal-proxy's default without TLS
    assert routes["kshop-web-production"]["forward_headers"] is False
    assert routes["kshop-web-production"]["max_request_body_size"] == 1000000


def test_the_shipyard_command_reads_a_kamal_backed_stack_as_the_program_does(bench, pair):
    host = bench.hosts[0].address
    for dest in NAMES:
        d = shipyard(pair.dir, pair.env, "details", "-s", dest, "--json")
        assert d.code == 0, d.err
        details = d.json()
        assert (details["destination"], details["version"]) == (dest, app_head(pair.dir))
        containers = {c["role"]: c for c in details["containers"]}
        assert sorted(containers) == ["job", "web"]
        for role, c in containers.items():
            assert (c["host"], c["container"], c["state"]) == (host, f"kshop-{role}-{dest}-{app_head(pair.dir)}",
                                                               "running")
        assert containers["web"]["route"]["hosts"] == [NAMES[dest]]
    # what is deployed reads without the secrets a deploy needs, as Kamal's `app details` does: a checkout that lacks
    # production's GREETING still shows production
    secrets = pair.dir / "app/.kamal/secrets.production"
    kept = secrets.read_text()
    try:
        secrets.write_text("".join(line for line in kept.splitlines(True) if not line.startswith("GREETING=")))
        assert shipyard(pair.dir, pair.env, "details", "-d", "production", "--json").json()["destination"] == \
            "production"
    finally:
        secrets.write_text(kept)
    # typed as Kamal's command line: `kamal app containers -d staging` is `shipyard versions -s staging`
    versions = shipyard(pair.dir, pair.env, "app", "containers", "-d", "staging", "--json").json()["versions"]
    current = sorted((r["role"], r["version"]) for r in versions if r["current"])  # earlier ones: retained
    assert current == [("job", app_head(pair.dir)), ("web", app_head(pair.dir))]
    # the app logs nothing: the command reads every container of the destination and ends (it hung before)
    assert shipyard(pair.dir, pair.env, "app", "logs", "-d", "staging", "--lines", "2", timeout=60).code == 0
    # audit and the host lock read the Kamal-backed stack too
    updates = shipyard(pair.dir, pair.env, "audit", "-s", "production", "--json").json()["updates"]
    assert updates and updates[0]["result"] == "succeeded"
    # a plain `pulumi up`: the Pulumi CLI records the project checkout's commit and author, which are not the app's
    assert (updates[0]["via"], updates[0]["who"], updates[0]["version"], updates[0]["message"]) == (
        "cli", None, None, None)
    assert "free" in shipyard(pair.dir, pair.env, "lock", "status", "-s", "staging").out
    # Kamal's aliases are shipyard subcommands
    assert "KAMAL_DESTINATION=production" in shipyard(pair.dir, pair.env, "whereami", "-s", "production").out
    # accessory reboot: the same container (its data with it) running again; prune: what retention keeps, kept
    d = host_docker(bench.hosts[0])
    (db,) = d.containers(filters={"label": ["service=kshop", "destination=staging", "accessory=db"]})
    d.exec_start(d.exec_create(db["Id"], ["sh", "-c", "echo kept > /marker"])["Id"])
    # its file rendered from ERB with its env, as Kamal renders a *.erb accessory file
    conf = d.exec_start(d.exec_create(db["Id"], ["cat", "/etc/db.conf"])["Id"]).decode().strip()
    assert conf == f"user=kshop greeting={SECRET['staging']}"
    started = d.inspect_container(db["Id"])["State"]["StartedAt"]
    shipyard(pair.dir, pair.env, "accessory", "reboot", "db", "-d", "staging")  # Kamal's destination: the stack
    after = d.inspect_container(db["Id"])
    assert shipyard(pair.dir, pair.env, "accessory", "logs", "db", "-d", "staging", timeout=60).code == 0
    assert after["State"]["Running"] and after["State"]["StartedAt"] != started
    assert d.exec_start(d.exec_create(db["Id"], ["cat", "/marker"])["Id"]).decode().strip() == "kept"
    # prune: old stopped versions beyond retention (2 here) go, this destination's only; what runs stays
    running = {c["Id"] for c in d.containers(filters={"label": ["service=kshop", "destination=staging"]})}
    (web,) = d.containers(filters={"label": ["service=kshop", "destination=staging", "role=web"]})
    labels = d.inspect_container(web["Id"])["Config"]["Labels"]
    for dest in ("staging", "production"):
        for old in ("old1", "old2", "old3"):
            name = f"kshop-web-{dest}-{old}"
            d.create_container("busybox:latest", name=name, command="true",
                               labels={**labels, "destination": dest, "version": old,
                                       "shipyard.stack": labels["shipyard.stack"].replace("staging", dest)})
    shipyard(pair.dir, pair.env, "prune", "-s", "staging")
    assert {c["Id"] for c in d.containers(filters={"label": ["service=kshop", "destination=staging"]})} == running
    kept = {c["Names"][0][1:] for c in d.containers(all=True, filters={
        "label": ["service=kshop", "role=web"], "name": "-old"})}
    assert len([k for k in kept if "-staging-" in k]) <= 2  # staging's beyond retention are gone
    assert {f"kshop-web-production-{o}" for o in ("old1", "old2", "old3")} <= kept  # production's are not staging's
    for name in kept:
        d.remove_container(name, force=True)
    # a review app of it: the same file, staging's overlay and secrets, its own host name, gone after review down
    shipyard(pair.dir, pair.env, "review", "up", "pr1", "--from", "staging")
    try:
        req = urllib.request.Request(f"http://{host}/", headers={"Host": f"pr1.{NAMES['staging']}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            answer = resp.read().decode()
        assert answer.startswith(f"service=kshop destination=pr1 version={app_head(pair.dir)} "), answer
        assert f"greeting={SECRET['staging']}" in answer
        assert get(bench, "staging").startswith("service=kshop destination=staging ")  # staging is untouched
    finally:
        shipyard(pair.dir, pair.env, "review", "down", "pr1")
    d = host_docker(bench.hosts[0])
    assert not d.containers(all=True, filters={"label": ["service=kshop", "destination=pr1"]})


def test_secrets_from_the_kamal_files_never_show(bench, pair):
    state = "".join(p.read_text() for p in (pair.dir.parent / "state").rglob("*.json"))
    preview = pair.run("preview", "--diff", stack="staging").out
    outputs = pair.run("stack", "output", "--json", "--show-secrets", stack="production").out
    everything = state + preview + outputs + "".join(pair.history)
    key = Path(bench.identity_file).read_text().splitlines()[1]  # a line of the SSH key (in every resource's target)
    for value in [*SECRET.values(), bench.auth_registry_password, key]:
        assert value not in everything


def test_editing_the_kamal_file_shows_in_preview_diff_and_deploys(bench, pair):
    """An edit that is not committed (here in the build context) changes the env, never the build: as with Kamal's
    clean clone of HEAD, the version stays the commit and no image is built."""
    overlay = pair.dir / "app/config/deploy.staging.yml"
    before = overlay.read_text()
    overlay.write_text(before + "env:\n  clear:\n    PLAIN: edited\n")
    try:
        preview = pair.run("preview", "--diff", stack="staging").out
        assert re.search(r'~ PLAIN *: "visible" => "edited"', preview), preview
        assert "shipyard:index:Container: (replace)" in preview
        assert not re.search(r"shipyard:index:Image: \((replace|update|create)", preview), preview
        assert "edited" not in pair.run("preview", "--diff", stack="production").out  # production's file is its own
        pair.up("staging")
        d = host_docker(bench.hosts[0])
        (c,) = d.containers(filters={"label": ["service=kshop", "destination=staging", "role=web"]})
        assert "PLAIN=edited" in d.inspect_container(c["Id"])["Config"]["Env"]
        assert f"greeting={SECRET['staging']}" in get(bench, "staging")
        assert f"version={app_head(pair.dir)} " in get(bench, "staging")
    finally:  # the next test, whichever it is, starts from the file as it was
        overlay.write_text(before)
        pair.up("staging")


def test_an_unsupported_kamal_key_fails_with_its_path_and_nothing_changes(bench, pair):
    overlay = pair.dir / "app/config/deploy.production.yml"
    before = overlay.read_text()
    overlay.write_text(before + "builder:\n  secrets:\n    - GREETING\n  ssh: default\n")
    result = pair.run("preview", stack="production", check=False)
    overlay.write_text(before)
    assert result.code != 0
    assert ("stack production: kamal: config/deploy.yml + config/deploy.production.yml cannot be deployed as "
            "written" in result.out)
    lines = [line.strip() for line in result.out.splitlines()]
    assert "builder.ssh: not supported yet" in lines and "builder.secrets: not supported yet" in lines, result.out
    assert "Traceback" not in result.out
    assert get(bench, "production").startswith("service=kshop destination=production")


HOOK = """#!/bin/sh
echo "$(basename "$0") hosts=$KAMAL_HOSTS destination=$KAMAL_DESTINATION version=$KAMAL_VERSION \\
service_version=$KAMAL_SERVICE_VERSION command=$KAMAL_COMMAND secret=${GREETING:-none} \\
webhook=${WEBHOOK:-none} lock=$KAMAL_LOCK" >> "$PWD/../hooks.log"
"""


def test_kamal_hooks_fire_in_kamals_order_and_a_failing_pre_deploy_changes_nothing(bench, pair, request):
    """.kamal/hooks as Kamal runs them: on the deploying machine, from the app directory, in order, with Kamal's
    variables (and, for pre-connect and pre-/post-deploy, every secret of the secrets files, as Kamal gives them); a
    pre-deploy that fails stops the deploy in one line with every container as it was and no request failed."""
    app, log = pair.dir / "app", pair.dir / "hooks.log"
    overlay = app / "config/deploy.staging.yml"
    before = overlay.read_text()
    order = ["pre-connect", "pre-build", "pre-deploy", "pre-app-boot", "post-app-boot", "post-deploy"]
    (app / ".kamal/hooks").mkdir()
    try:
        for hook in order:
            (app / ".kamal/hooks" / hook).write_text(HOOK)
            (app / ".kamal/hooks" / hook).chmod(0o755)
        pair.up("staging")
        lines = log.read_text().splitlines()
        assert [ln.split()[0] for ln in lines] == order, lines
        v, host = app_head(pair.dir), bench.hosts[0].address
        assert lines[2] == (f"pre-deploy hosts={host} destination=staging version={v} service_version=kshop@{v[:7]} "
                            f"command=deploy secret={SECRET['staging']} webhook={WEBHOOK} lock=true")
        assert lines[0].endswith(f"webhook={WEBHOOK} lock=false")  # before Kamal's lock is taken
        assert lines[1].endswith("secret=none webhook=none lock=false")  # pre-build gets no secrets, as in Kamal

        d = host_docker(bench.hosts[0])
        (running,) = d.containers(filters={"label": ["service=kshop", "destination=staging", "role=web"]})
        (app / ".kamal/hooks/pre-deploy").write_text("#!/bin/sh\necho 'migrations pending' >&2\nexit 3\n")
        overlay.write_text(before + "env:\n  clear:\n    PLAIN: gated\n")
        log.unlink()
        with requests_during(lambda: get(bench, "staging")) as seen:
            result = shipyard(pair.dir, pair.env, "deploy", "-s", "staging", check=False)
        assert result.code != 0
        assert "hook pre-deploy: " in result.err and "exited 3: migrations pending; nothing after it was done" \
            in result.err, result.err
        assert [ln.split()[0] for ln in log.read_text().splitlines()] == ["pre-connect"]  # nothing after it ran
        (still,) = d.containers(filters={"label": ["service=kshop", "destination=staging", "role=web"]})
        assert still["Id"] == running["Id"] and "PLAIN=visible" in d.inspect_container(still["Id"])["Config"]["Env"]
        assert seen and not [s for s in seen if not (s[1] or "").startswith("service=kshop")]
        show_after(request, "hooks", [f"a failing pre-deploy hook: {len(seen)} requests during the deploy, 0 failed"])
    finally:
        shutil.rmtree(app / ".kamal/hooks", ignore_errors=True)
        overlay.write_text(before)
        log.unlink(missing_ok=True)
        pair.up("staging")


def test_maintenance_serves_the_error_page_with_the_message_and_live_restores_with_no_container_restarted(
        bench, pair):
    d = host_docker(bench.hosts[0])

    def web(dest: str) -> dict:
        (c,) = d.containers(filters={"label": ["service=kshop", f"destination={dest}", "role=web"]})
        return d.inspect_container(c["Id"])

    before = web("staging")
    shipyard(pair.dir, pair.env, "maintenance", "-s", "staging", "--message", "back at noon")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            get(bench, "staging")
        assert err.value.code == 503
        page = err.value.read().decode()
        assert "kshop is down for maintenance" in page and "back at noon" in page, page
        assert get(bench, "production").startswith("service=kshop destination=production ")  # its own routes
    finally:
        shipyard(pair.dir, pair.env, "live", "-s", "staging")
    assert get(bench, "staging").startswith("service=kshop destination=staging ")
    after = web("staging")
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])


def test_production_serves_tls_with_its_own_certificate_from_the_secrets(bench, pair):
    """proxy.ssl with a certificate and key held as secrets: a TLS request through the proxy, checked against that
    certificate; plain HTTP still answers (ssl_redirect: false)."""
    name = NAMES["production"]
    context = ssl.create_default_context(cafile=str(pair.dir / "tls-cert.pem"))
    with socket.create_connection((bench.hosts[0].address, 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert body.startswith("service=kshop destination=production "), body
    assert get(bench, "production").startswith("service=kshop destination=production ")
    state = "".join(p.read_text() for p in (pair.dir.parent / "state").rglob("*.json"))
    assert "PRIVATE KEY" not in state  # the key is a secret in the state too


def asset(bench, name: str) -> bool:
    req = urllib.request.Request(f"http://{bench.hosts[0].address}/assets/{name}", headers={"Host": NAMES["staging"]})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_a_rollout_serves_the_old_and_the_new_versions_assets_throughout(bench, pair, request):
    """asset_path: the new image drops the old fingerprinted asset and brings a new one; a page of either version
    finds its asset from before the rollout to after it - the old one never missing, the new one never missing
    again once served."""
    assets = pair.dir / "app/assets"
    old = sorted(p.name for p in assets.glob("app-*.css"))[-1]
    new = f"app-{int(old[4:-4]) + 1}.css"
    (assets / old).unlink()
    commit_app(pair.dir, f"assets/{new}", "body { color: green }\n")
    asks = iter(range(1_000_000))

    def ask() -> str:
        name = old if next(asks) % 2 == 0 else new
        return f"{'old' if name == old else 'new'}:{'ok' if asset(bench, name) else 'miss'}"
    try:
        assert asset(bench, old) and not asset(bench, new)
        with requests_during(ask) as seen:
            pair.up("staging")
        answers = [a for _, a in seen]
        assert "old:miss" not in answers, answers
        served = answers.index("new:ok") if "new:ok" in answers else len(answers)
        assert "new:miss" not in answers[served:], answers
        assert asset(bench, old) and asset(bench, new)  # the new version serves the old page's asset too
        show_after(request, "assets", [f"a rollout with asset_path: {len(answers)} asset requests, old one missing "
                                       f"0 times, new one missing 0 times once served"])
    finally:
        pair.up("production")  # both destinations run the app's commit, as every test expects


def test_deploy_and_rollback_of_a_kamal_backed_stack_move_every_role_and_fail_no_request(bench, pair, request):
    """`shipyard deploy` of the app's next commit, then `shipyard rollback` to the one before (given as its whole
    commit, as Kamal takes it), on a stack that only names the Kamal file: the web and the job role both run the
    version asked for, a request loop through the rollback sees no failure, audit records it, and production is
    untouched."""
    before = app_head(pair.dir)
    after = commit_app(pair.dir, "release.txt", f"the release after {before}\n")
    d = host_docker(bench.hosts[0])

    def running(dest: str) -> dict[str, str]:
        """{role: version} of the destination's running app containers."""
        return {c["Labels"]["role"]: c["Labels"]["version"] for c in d.containers(
            filters={"label": ["service=kshop", f"destination={dest}"]}) if "accessory" not in c["Labels"]}
    try:
        shipyard(pair.dir, pair.env, "deploy", "-s", "staging")
        assert running("staging") == {"web": after, "job": after}
        # the commit as a Kamal user gives it (`kamal rollback <sha>`): whole
        commit = subprocess.run(["git", "-C", str(pair.dir / "app"), "rev-parse", before], capture_output=True,
                                text=True, check=True).stdout.strip()
        with requests_during(lambda: get(bench, "staging")) as seen:
            shipyard(pair.dir, pair.env, "rollback", commit, "-s", "staging")
        assert running("staging") == {"web": before, "job": before}
        assert get(bench, "staging").startswith(f"service=kshop destination=staging version={before} ")
        failed = [s for s in seen if not (s[1] or "").startswith("service=kshop destination=staging ")]
        assert seen and not failed, failed[:3]
        updates = shipyard(pair.dir, pair.env, "audit", "-s", "staging", "--json").json()["updates"]
        assert [(u["action"], u["version"]) for u in updates[-2:]] == [("deploy", after), ("rollback", before)]
        assert running("production") == {"web": before, "job": before}
        # the next deploy stays on the version rolled back to (Kamal's ships the app's commit again): it says so
        again = shipyard(pair.dir, pair.env, "redeploy", "-d", "staging")
        assert running("staging") == {"web": before, "job": before}
        assert f"staging stays on version {before}: shipyard:version pins it" in again.err
        show_after(request, "rollback", [f"a rollback of a Kamal-backed stack (web and job): {len(seen)} requests, "
                                        f"0 failed"])
    finally:  # the app's commit is `before` again and staging follows it: both run the app's commit, as every test
        # expects (a rollback that did not happen is deployed here)
        subprocess.run(["git", "-C", str(pair.dir / "app"), "reset", "-q", "--hard", before], check=True)
        pair.run("config", "rm", "shipyard:version", stack="staging", check=False)
        if running("staging") != {"web": before, "job": before}:
            pair.up("staging")


def test_a_kamal_app_of_accessories_only_deploys_with_no_image_and_the_command_reads_it(bench, tmp_path):
    """Kamal accepts an app with accessories and no servers: the accessories run as Kamal runs them, nothing is
    built, and the `shipyard` command reads the stack; what needs a role says so in one line."""
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), {**pulumi_env(tmp_path / "state"), "KDATA_HOST": bench.hosts[0].address})
    config = proj.dir / "app/config/deploy.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(textwrap.dedent("""\
        service: kdata
        image: acme/kdata
        builder:
          arch: amd64
        accessories:
          cache:
            image: library/busybox:latest
            host: <%= ENV["KDATA_HOST"] %>
            cmd: sh -c 'trap "exit 0" TERM; while :; do sleep 1; done'
            env:
              clear:
                MODE: cache
        """))
    (config.parent / "deploy.staging.yml").write_text("{}\n")
    (proj.dir / "app/Dockerfile").unlink()  # nothing to build: an app of accessories only may have no Dockerfile
    proj.init("staging", {"kamal": {"config": "app/config/deploy.yml"}, "ssh": ssh_config(bench)})
    try:
        shipyard(proj.dir, proj.env, "deploy", "-s", "staging")
        d = host_docker(bench.hosts[0])
        (cache,) = d.containers(filters={"label": ["service=kdata", "destination=staging"]})
        assert cache["Names"] == ["/kdata-staging-cache"]
        env = d.inspect_container(cache["Id"])["Config"]["Env"]
        assert {"MODE=cache", f"KAMAL_HOST={bench.hosts[0].address}"} <= set(env)
        assert not [i for i in d.images() if any("kdata" in t for t in i.get("RepoTags") or [])]  # nothing built
        details = shipyard(proj.dir, proj.env, "details", "-s", "staging", "--json").json()
        assert details["containers"] == [] and [a["role"] for a in details["accessories"]] == ["cache"]
        started = d.inspect_container(cache["Id"])["State"]["StartedAt"]
        shipyard(proj.dir, proj.env, "accessory", "reboot", "cache", "-s", "staging")
        assert d.inspect_container(cache["Id"])["State"]["StartedAt"] != started
        refused = shipyard(proj.dir, proj.env, "rollback", "v1", "-s", "staging", check=False)
        assert refused.code != 0 and "runs accessories only" in refused.err, refused.err
        proj.run("preview", "--expect-no-changes", stack="staging")
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)
