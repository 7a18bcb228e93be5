"""The `shipyard` command's pure parts: argument parsing, formatting, and what it derives from config, outputs and
history - tested with data, no Pulumi CLI, no host."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone

import pytest

from components import config, source
from components.cli import audit, deploy, details, execute, logs, output, parser, review, stack, versions
from components.errors import ConfigError
from components.hosts import SSHTarget

BASE = {"service": "shop", "image": "acme/shop", "registry": {"server": "registry.example.com"},
        "servers": {"web": {"hosts": ["10.0.0.2", "10.0.0.3"], "ports": ["8080:80"]},
                    "jobs": {"hosts": ["10.0.0.3"], "cmd": "bin/jobs", "volumes": ["data:/data"]}},
        "proxy": {"hosts": ["staging.shop.test", "www.staging.shop.test"]},
        "accessories": {"db": {"image": "postgres:16", "host": "10.0.0.3", "port": "5432:5432"}},
        "ssh": {"keys": ["keys/id"], "known_hosts": "keys/known_hosts"}}
OUTPUTS = {"containers": {"10.0.0.2": {"web": {"name": "shop-web-staging-v2", "id": "a1"}},
                          "10.0.0.3": {"web": {"name": "shop-web-staging-v2", "id": "a2"},
                                       "jobs": {"name": "shop-jobs-staging-v2", "id": "a3"}}},
           "accessories": {"db": {"10.0.0.3": {"container": "shop-staging-db", "id": "d1"}}},
           "image_id": "sha256:" + "f" * 64}


def test_every_subcommand_takes_a_stack_and_json():
    for argv in (["details"], ["logs", "-f"], ["exec", "--", "ls"], ["versions"], ["rollback", "v1"], ["audit"],
                 ["deploy", "--lock-wait", "30"]):
        args = parser().parse_args([argv[0], "-s", "production", "--json", *argv[1:]])
        assert args.stack == "production" and args.json
    assert parser().parse_args(["details"]).stack is None  # the selected stack
    assert parser().parse_args(["deploy", "--lock-wait", "30"]).lock_wait == 30
    assert parser().parse_args(["rollback", "v1"]).lock_wait == 0
    args = parser().parse_args(["review", "up", "pr-7", "--from", "staging"])
    assert (args.name, args.base, args.stackless) == ("pr-7", "staging", True)


def test_logs_arguments():
    args = parser().parse_args(["logs", "--role", "db", "--host", "10.0.0.3", "--since", "5m", "-n", "20",
                                "--grep", "GET /up", "-f"])
    assert (args.role, args.host, args.since, args.lines, args.follow) == ("db", "10.0.0.3", "5m", 20, True)
    assert args.grep.search("x GET /up 200") and not args.grep.search("POST")
    with pytest.raises(SystemExit):
        parser().parse_args(["logs", "--grep", "("])  # not a regular expression: a usage error, not a traceback


def test_table_aligns_columns_and_colours_only_when_asked():
    text = output.table(("HOST", "STATE"), [("10.0.0.2", "running"), ("10.0.0.10", None)])
    assert text.splitlines() == ["HOST       STATE", "10.0.0.2   running", "10.0.0.10  -"]
    coloured = output.table(("HOST", "STATE"), [("h", "running")], output.Painter(True), colour_column="STATE")
    assert "\x1b[32mrunning\x1b[0m" in coloured and output.ANSI.sub("", coloured).splitlines()[1] == "h     running"


def test_short_ids_and_times():
    assert output.short_id("sha256:6a348f720833aaaa") == "6a348f720833"
    assert output.when(0) == "1970-01-01 00:00:00Z"
    assert output.when("2024-05-01T12:30:05.123456789Z") == "2024-05-01 12:30:05Z"


def test_since_takes_durations_and_timestamps():
    now = 1_700_000_000
    assert logs.parse_since("5m", now) == datetime.fromtimestamp(now - 300, tz=timezone.utc)
    assert logs.parse_since("2h", now).timestamp() == now - 7200
    assert logs.parse_since("2024-05-01T12:00:00Z", now) == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert logs.parse_since(None, now) is None
    with pytest.raises(ConfigError, match="--since: 'yesterday' is neither a duration"):
        logs.parse_since("yesterday", now)


def test_log_sources_are_the_current_containers_by_role_accessory_and_host():
    every = logs.sources(OUTPUTS, None, None)
    assert {(s.host, s.role) for s in every} == {("10.0.0.2", "web"), ("10.0.0.3", "web"), ("10.0.0.3", "jobs"),
                                                ("10.0.0.3", "db")}
    assert [s.container for s in logs.sources(OUTPUTS, "db", None)] == ["shop-staging-db"]
    assert [s.id for s in logs.sources(OUTPUTS, "web", "10.0.0.2")] == ["a1"]
    with pytest.raises(ConfigError, match="--role: no role or accessory named 'cron': there are db, jobs, web"):
        logs.sources(OUTPUTS, "cron", None)
    with pytest.raises(ConfigError, match="--host: '10.0.0.2' runs none of them"):
        logs.sources(OUTPUTS, "db", "10.0.0.2")


def test_logs_end_with_one_error_whatever_stops_them(mocker):
    """A config the stack cannot be read with (a secret missing, a Kamal typo) is told before any host is read; a
    reader that meets something unexpected ends the command too - it waited for ever before."""
    from types import SimpleNamespace
    args = SimpleNamespace(role=None, host=None, since=None, lines=None, follow=False, grep=None, json=True)
    ctx = mocker.Mock(outputs=OUTPUTS)
    ctx.target.side_effect = ConfigError("env.secret[0]", "secret API_KEY is in none of .kamal/secrets-common")
    with pytest.raises(ConfigError, match="secret API_KEY"):
        logs.show(ctx, args)
    ctx.target.side_effect = lambda host: SSHTarget(host)
    mocker.patch.object(logs.hosts, "client", side_effect=RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        logs.show(ctx, args)


def test_log_lines_survive_chunks_that_split_them():
    assert list(logs.lines_of(iter([b"GET / 2", b"00\nGET /up", b" 200\r\n", b"tail"]))) == \
        ["GET / 200", "GET /up 200", "tail"]


def test_exec_runs_a_new_container_with_the_running_ones_env_its_network_and_volumes():
    cfg = config.load(BASE, stack="staging")
    name = execute.exec_name(cfg, "jobs")
    assert re.fullmatch(r"shop-jobs-staging-exec-[0-9a-f]{6}", name)
    argv = execute.docker_argv(cfg, "jobs", "sha256:abc", "shop-jobs-staging-v2", ["bin/console"], reuse=False,
                               interactive=True, env_file=".shipyard/shop-staging/exec-1.env", name=name)
    assert argv == ["docker", "run", "--rm", "--name", name, "-it", "--network", "shop-staging", "--env-file",
                    ".shipyard/shop-staging/exec-1.env", "-v", "shop-staging-data:/data:rw", "sha256:abc",
                    "bin/console"]
    assert execute.env_file_text(["A=1", "B=x y", "C=two\nlines"]) == b"A=1\nB=x y\n"
    assert execute.docker_argv(cfg, "web", "sha256:abc", "shop-web-staging-v2", ["ls", "/"], reuse=True,
                               interactive=False) == ["docker", "exec", "shop-web-staging-v2", "ls", "/"]
    assert execute.command_argv(["bin/rails console"]) == ["bin/rails", "console"]
    assert execute.command_argv(["--", "sh", "-c", "echo $X"]) == ["sh", "-c", "echo $X"]
    with pytest.raises(ConfigError, match="COMMAND"):
        execute.command_argv([])


def test_exec_picks_web_on_its_first_host_by_default():
    cfg = config.load(BASE, stack="staging")
    assert execute.pick(OUTPUTS, cfg, None, None) == ("web", "10.0.0.2", "shop-web-staging-v2")
    assert execute.pick(OUTPUTS, cfg, "jobs", None) == ("jobs", "10.0.0.3", "shop-jobs-staging-v2")
    with pytest.raises(ConfigError, match="--host: role jobs runs on 10.0.0.3, not on 10.0.0.2"):
        execute.pick(OUTPUTS, cfg, "jobs", "10.0.0.2")


def test_a_review_app_gets_its_own_destination_host_name_and_no_fixed_ports():
    cfg = review.review_config(BASE, "pr-7")
    assert cfg["destination"] == "pr-7"
    assert cfg["proxy"]["hosts"] == ["pr-7.staging.shop.test"]
    assert "ports" not in cfg["servers"]["web"] and "port" not in cfg["accessories"]["db"]
    assert BASE["servers"]["web"]["ports"] == ["8080:80"]  # the base config is left as it was
    loaded = config.load(cfg, stack="review-pr-7")
    assert loaded.destination == "pr-7" and loaded.retain_containers == 1 and loaded.delete_volumes_on_destroy
    assert review.stack_name("pr-7") == "review-pr-7"
    with pytest.raises(ConfigError, match="NAME: 'PR_7' cannot name a review app"):
        review.stack_name("PR_7")
    with pytest.raises(ConfigError, match="proxy.hosts: a review app is reached by a host name"):
        review.review_config({**BASE, "proxy": None}, "pr-7")


def test_a_review_app_never_writes_to_the_base_destinations_host_directories():
    base = {**BASE, "accessories": {"db": {"image": "postgres:16", "host": "10.0.0.2", "volumes": [
        "/var/lib/pg-staging:/var/lib/postgresql/data", "/etc/ssl/certs:/etc/ssl/certs:ro", "data:/data",
        "/srv/uploads/:/uploads:rw"]}}}
    cfg = review.review_config(base, "pr-7")
    assert cfg["accessories"]["db"]["volumes"] == [
        "host-var-lib-pg-staging:/var/lib/postgresql/data",  # a named volume: it carries the review destination
        "/etc/ssl/certs:/etc/ssl/certs:ro", "data:/data", "host-srv-uploads:/uploads:rw"]
    loaded = config.load(cfg, stack="review-pr-7")
    assert loaded.accessories["db"].volumes[0] == "host-var-lib-pg-staging:/var/lib/postgresql/data"
    assert base["accessories"]["db"]["volumes"][0] == "/var/lib/pg-staging:/var/lib/postgresql/data"


def test_a_review_app_of_a_kamal_backed_stack_reads_the_same_file_with_only_its_differences_its_own(tmp_path):
    """The base's Kamal destination (its overlay and secrets), no takeover of Kamal's deployment, and only what
    makes it a review app as its own keys: an edit of the file reaches it too."""
    from components import kamal
    from tests.unit.test_kamal import stack_app
    project = stack_app(tmp_path)  # web on 10.0.0.1, proxy host staging.example.com for staging
    base = {"kamal": {"config": "../myapp/config/deploy.yml"}, "ssh": {"keys": ["k"]}, "version": "v9"}
    cfg = review.review_config(base, "pr-7", base_stack="staging", project_dir=project)
    assert cfg["kamal"] == {"config": "../myapp/config/deploy.yml", "destination": "staging", "takeover": False}
    assert cfg["proxy"] == {"hosts": ["pr-7.staging.example.com"]} and "version" not in cfg
    assert cfg["destination"] == "pr-7" and cfg["ssh"] == {"keys": ["k"]}
    assert "servers" not in cfg and "secrets" not in cfg  # unchanged: read from the file, not copied
    loaded = kamal.load_stack(cfg, stack="review-pr-7", project_dir=project)
    assert loaded.destination == "pr-7" and loaded.takeover is None and loaded.secrets == {"S": "staging-s"}
    assert loaded.role_proxy("web").hosts == ("pr-7.staging.example.com",) and loaded.retain_containers == 1
    assert loaded.kamal_app.destination == "staging" and loaded.servers["web"].hosts == ("10.0.0.1",)


def test_a_review_app_of_a_pinned_stack_deploys_the_checkouts_own_version():
    assert "version" not in review.review_config({**BASE, "version": "ca9f4aa33579"}, "pr-7")


def test_review_config_keeps_secrets_secret():
    values = review.encoded({"servers": {"web": {"hosts": ["h"]}}, "secrets": {"DB": "x"}, "service": "s"},
                            {"secrets"})
    assert values["shipyard:servers"].value == '{"web": {"hosts": ["h"]}}' and not values["shipyard:servers"].secret
    assert values["shipyard:secrets"].secret and values["shipyard:service"].value == "s"


def test_stack_keys_decodes_objects_and_drops_other_namespaces():
    class V:
        def __init__(self, value):
            self.value = value
    raw = config.stack_keys({"shipyard:servers": V('{"web": {"hosts": ["h"]}}'), "shipyard:service": V("s"),
                            "aws:region": V("x")})
    assert raw == {"servers": {"web": {"hosts": ["h"]}}, "service": "s"}
    # a misspelt namespace is named, not dropped (its setting would be missing with no word why)
    with pytest.raises(ConfigError, match=r"^shipyrd:service: unknown namespace shipyrd \(did you mean "
                                          r"shipyard:service\?\)$"):
        config.stack_keys({"shipyrd:service": V("s"), "shipyard:image": V("i")})


def test_lock_holder_and_error_lines_from_the_pulumi_cli():
    from pulumi import automation as auto
    err = ("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or "
           "delete the lock file with `pulumi cancel`.\n  postgres://****:****@127.0.0.1:5432/db/.pulumi/locks/"
           "organization/shipyard/staging/1a6a.json: created by deploy@ci-3 (pid 3581) at 2026-11-26T23:21:16Z")
    assert stack.lock_holder(err) == "deploy@ci-3 (pid 3581, since 2026-11-26T23:21:16Z)"
    assert stack.lock_holder("error: something else") is None
    out = ("Diagnostics:\n  shipyard:index:Container (shop-web):\n    error: host 10.0.0.2: container shop-web did "
           "not become healthy within 8s\n\nerror: update failed\n")
    assert stack.command_error_line(out) == "host 10.0.0.2: container shop-web did not become healthy within 8s"
    refused = ("error: shipyard:index:Container resource 'shop-staging-accessory-db@h1': property "
               "ports value {[{map[container_port:{80} host_port:{80}]}]} has a problem: host h1: port 80 is already "
               "published by container kamal-proxy")
    assert stack.command_error_line(refused) == "host h1: port 80 is already published by container kamal-proxy " \
                                                "(resource shop-staging-accessory-db@h1, ports)"
    named = ("error: shipyard:index:Image resource 'shop-production-image' has a problem: promote: version v1 "
             "already names a build of this destination's own")
    assert stack.command_error_line(named) == "version v1 already names a build of this destination's own " \
                                              "(resource shop-production-image, promote)"
    assert stack.command_error_line("error: shipyard:index:Service resource 's' has a problem: host h1: down") == \
        "shipyard:index:Service resource 's' has a problem: host h1: down"
    stopped_first = "  pulumi:pulumi:Stack (shipyard-staging):\n    error: Resource monitor has terminated, shutting down\n" + out
    assert stack.command_error_line(stopped_first) == "host 10.0.0.2: container shop-web did not become healthy " \
                                                      "within 8s"

    # the Automation API's text of a command that failed on stderr alone (a backend's error), as it reads
    several = str(auto.CommandError(auto.CommandResult(stdout="", code=255, stderr=(
        "error: 2 errors occurred:\n    1) key not found: sql: no rows in result set\n    2) NotFound\n"))))
    assert stack.command_error_line(several) == "2 errors occurred: 1) key not found: sql: no rows in result set"
    listed = str(auto.CommandError(auto.CommandResult(stdout="Updating (staging):\n", code=255, stderr=(
        "error: could not list bucket: blob (code=NotFound): sql: no rows in result set\n"))))
    assert stack.command_error_line(listed) == "could not list bucket: blob (code=NotFound): sql: no rows in result set"


def test_audit_reads_who_and_what_from_shipyards_messages_and_falls_back_to_git():
    msg = deploy.message("rollback", "v2", "alice@laptop")
    assert msg == "shipyard rollback to v2 by alice@laptop"
    assert deploy.parse_message(deploy.message("deploy", "abc123", "Ada Lovelace@runner")) == {
        "action": "deploy", "version": "abc123", "who": "Ada Lovelace@runner"}
    ours = audit.audit_row({"update": 3, "kind": "update", "result": "succeeded", "message": msg, "start": 0,
                            "environment": {"exec.kind": "auto.local"}, "config": {}})
    assert (ours["action"], ours["version"], ours["who"], ours["via"]) == ("rollback", "v2", "alice@laptop",
                                                                            "shipyard")
    plain = audit.audit_row({"update": 1, "kind": "update", "result": "failed", "message": "", "start": 0,
                             "environment": {"exec.kind": "cli", "git.author": "Bob"},
                             "config": {"shipyard:version": "v1"}})
    assert (plain["action"], plain["version"], plain["who"], plain["via"]) == ("update", "v1", "Bob", "cli")
    # unpinned: the commit Pulumi recorded, if it was clean - and none of it where the project is not the app's
    update = {"update": 2, "kind": "update", "result": "succeeded", "message": "", "start": 0, "config": {},
              "environment": {"exec.kind": "cli", "git.author": "Bob", "git.head": "0123456789abcdef0123"}}
    assert (audit.audit_row(update)["version"], audit.audit_row(update)["who"]) == ("0123456789ab", "Bob")
    dirty = {**update, "environment": {**update["environment"], "git.dirty": "true"}}
    assert audit.audit_row(dirty)["version"] is None
    assert (audit.audit_row(update, app_checkout=False)["version"], audit.audit_row(update, False)["who"]) == (
        None, None)
    # the message a plain `pulumi up` takes from the project's commit is not the app's either; one of the user's is
    project = {**update, "message": "Project: tidy the README"}
    assert audit.audit_row(project, False, frozenset({"Project: tidy the README"}))["message"] is None
    assert audit.audit_row(project)["message"] == "Project: tidy the README"  # the app's own checkout
    said = {**update, "message": "hotfix for the login page"}
    assert audit.audit_row(said, False, frozenset({"Project: tidy the README"}))["message"] == \
        "hotfix for the login page"


def test_the_app_checkout_is_told_from_another(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for repo in ("project", "app"):
        (tmp_path / repo / "sub").mkdir(parents=True)
        subprocess.run([*git, "-C", str(tmp_path / repo), "init", "-q"], check=True)
    assert source.same_checkout(tmp_path / "project", tmp_path / "project" / "sub")
    assert not source.same_checkout(tmp_path / "project", tmp_path / "app")
    assert not source.same_checkout(tmp_path / "project", tmp_path / "nowhere")
    subprocess.run([*git, "-C", str(tmp_path / "project"), "commit", "-q", "--allow-empty", "-m",
                    "Tidy the README\n\nWhy it was untidy."], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path / "project"), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert source.commit_messages(tmp_path / "project", head) == ("Tidy the README\n\nWhy it was untidy.",
                                                                  "Tidy the README")
    assert source.commit_messages(tmp_path / "app", head) == ()  # no such commit there
    # who deploys, as Kamal records it: git's user.name where the app is
    subprocess.run(["git", "-C", str(tmp_path / "app"), "config", "user.name", "App Person"], check=True)
    assert stack.performer(tmp_path / "app").startswith("App Person@")


def test_proxy_routes_and_current_containers():
    listing = ("\x1b[1mService\x1b[0m  Host  Path  Target  State  TLS\n"
               "shop-web-staging  staging.shop.test  /  shop-web-staging-v2:80  running  no\n")
    routes = details.parse_routes(listing)
    assert routes["shop-web-staging"]["target"] == "shop-web-staging-v2:80"
    assert routes["shop-web-staging"]["state"] == "running"
    assert details.current_ids(OUTPUTS) == {"a1", "a2", "a3", "d1"}
    assert details.role_of({"role": "accessory.db"}) == ("accessory", "db")
    assert details.role_of({"role": "web"}) == ("role", "web")


def test_rollback_needs_the_version_on_every_host_of_every_role():
    rows = [{"role": "web", "host": "h1", "version": "v2"}, {"role": "web", "host": "h1", "version": "v1"},
            {"role": "web", "host": "h2", "version": "v2"}]
    assert versions.missing_for(rows, {"web": ("h1", "h2")}, "v2") == []
    assert versions.missing_for(rows, {"web": ("h1", "h2")}, "v1") == ["web@h2 (has v2)"]


def test_rollback_takes_a_commit_as_kamal_users_give_it_whole_or_short():
    rows = [{"role": "web", "host": "h1", "version": "f94ca6edcc1a"}, {"role": "web", "host": "h1",
                                                                      "version": "0b1f2c3d4e5f"}]
    full = "f94ca6edcc1a" + "2b" * 14
    assert versions.resolve(rows, full) == "f94ca6edcc1a"  # `git rev-parse HEAD`, Kamal's version
    assert versions.resolve(rows, "f94ca6e") == "f94ca6edcc1a"  # `git log --oneline`
    assert versions.resolve(rows, "0b1f2c3d4e5f") == "0b1f2c3d4e5f"
    assert versions.resolve(rows, "f94ca6") == "f94ca6"  # too short to name one: refused as not retained
    assert versions.resolve(rows, "v9") == "v9"
    twins = [*rows, {"role": "web", "host": "h1", "version": "f94ca6e99999"}]
    with pytest.raises(ConfigError, match=r"^VERSION: f94ca6e names several retained versions"):
        versions.resolve(twins, "f94ca6e")


def test_lock_status_rows_name_each_holder_or_say_free():
    from components.cli import lock
    held = {"stack": "shipyard/staging", "doing": "routing", "mode": "shared", "pid": 7, "machine": "ci-3",
            "since": "2024-05-01T12:00:00Z"}
    building = {**held, "doing": "building acme/hello:v2-staging", "lock": "images"}
    assert lock.rows({"h1": [held, building], "h2": []}) == [
        ("h1", "shipyard/staging", "routing", "shared", 7, "ci-3", "2024-05-01T12:00:00Z"),
        ("h1", "shipyard/staging", "building acme/hello:v2-staging", "shared, images", 7, "ci-3",
         "2024-05-01T12:00:00Z"),
        ("h2", "free", None, None, None, None, None)]
    args = parser().parse_args(["lock", "release", "-s", "staging", "--host", "h1"])
    assert (args.stack, args.host, args.handler) == ("staging", "h1", lock.release)


def test_an_interrupted_run_is_healed_before_the_deploy_and_its_pending_containers_removed(mocker):
    """`shipyard deploy` after a Ctrl-C twice: what is pending in the state is cleared with every resource read
    back (`refresh --clear-pending-creates`), containers left under a pending name - listed before that refresh,
    so never one a later run creates - are removed, and a worker the interrupted rollout started next to the one
    the last whole rollout recorded is stopped again; then the deploy runs."""
    import docker
    from components.cli.stack import StackContext
    ctx = StackContext.__new__(StackContext)
    ctx.name = "staging"
    ctx.stack = mocker.Mock()
    retire = {"type": "shipyard:index:Rollout", "inputs": {"step": "retire", "containers": [
        {"target": {"host": "h1"}, "role": "jobs", "proxied": False, "stop_timeout": 30}], "ids": {"jobs@h1": "r1"}}}
    ctx.stack.export_stack.return_value.deployment = {"resources": [retire], "pending_operations": [
        {"type": "creating", "resource": {"urn": "urn:pulumi:staging::shipyard::x$y::shop-staging-jobs@h1"}}]}
    c = mocker.create_autospec(docker.APIClient, instance=True)
    listing = [{"Id": "p1", "Names": ["/shop-jobs-staging-v2_pending_1a2b3c4d"], "State": "created"},
               {"Id": "r1", "Names": ["/shop-jobs-staging-v1"], "State": "running"},
               {"Id": "s1", "Names": ["/shop-jobs-staging-v3"], "State": "running"}]  # started, never retired
    c.containers.side_effect = lambda all=False, filters=None: [i for i in listing if all or i["State"] == "running"]
    mocker.patch("components.hosts.client", return_value=c)
    mocker.patch.object(StackContext, "hosts", return_value=("h1",))
    mocker.patch.object(StackContext, "label_filters", return_value=["service=shop"])
    mocker.patch.object(StackContext, "target", side_effect=lambda h: SSHTarget(host=h))
    healed = []
    ctx.up(message="m", on_heal=healed.append)
    ctx.stack.refresh.assert_called_once()
    assert ctx.stack.refresh.call_args.kwargs["clear_pending_creates"] is True
    c.remove_container.assert_called_once_with("p1", v=False, force=True)
    c.stop.assert_called_once_with("s1", timeout=30)  # the recorded worker runs: the stray one stops
    assert healed == [["creating shop-staging-jobs@h1", "removed shop-jobs-staging-v2_pending_1a2b3c4d",
                       "stopped shop-jobs-staging-v3"]]
    ctx.stack.up.assert_called_once()


def test_a_deploy_that_waits_for_another_takes_its_operations_in_flight_for_its_and_refreshes_nothing(mocker):
    """`shipyard deploy --lock-wait`, started while another deploy runs: what shows as pending is that deploy's
    work in flight. Once its lock stopped the refresh, this one waits and updates - no refresh, even when the other
    finishes just as this one looks again (it would add a refresh to the history, and read every host for
    nothing)."""
    from pulumi import automation as auto

    from components.cli import stack as stack_module
    from components.cli.stack import StackContext
    ctx = StackContext.__new__(StackContext)
    ctx.name = "staging"
    ctx.stack = mocker.Mock()
    mocker.patch.object(stack_module.time, "sleep")
    mocker.patch.object(StackContext, "hosts", return_value=("h1",))
    pending = mocker.patch.object(StackContext, "pending", return_value=["creating shop-staging-web@h1"])
    mocker.patch.object(StackContext, "leftovers", return_value=[])
    busy = auto.ConcurrentUpdateError(auto.CommandResult(stdout="", stderr="the stack is currently locked", code=1))
    ctx.stack.refresh.side_effect = [busy]
    ctx.stack.up.side_effect = [busy, mocker.sentinel.done]
    assert ctx.up(message="m", lock_wait=60) is mocker.sentinel.done
    ctx.stack.refresh.assert_called_once()  # the first look: it found the other deploy's lock
    pending.assert_called_once()
    assert ctx.stack.up.call_count == 2


@pytest.mark.parametrize("stderr", [
    "error: could not list bucket: blob (code=NotFound): sql: no rows in result set\n",
    "error: 2 errors occurred:\n    1) key not found: sql: no rows in result set\n    2) NotFound\n"])
def test_a_deploy_that_reads_a_lock_just_as_its_holder_releases_it_tries_again(mocker, stderr):
    """The two ways the Pulumi CLI's `postgres://` backend fails a command that takes the stack's lock while
    another process releases it (it lists the locks, then reads each): the holder has just finished, so the
    deploy tries again - with or without --lock-wait - and a failure that stays says what it is."""
    from pulumi import automation as auto

    from components.cli import stack as stack_module
    from components.cli.stack import StackContext
    from components.errors import StackError
    ctx = StackContext.__new__(StackContext)
    ctx.name = "staging"
    ctx.stack = mocker.Mock()
    clock = [0.0]
    mocker.patch.object(stack_module.time, "monotonic", side_effect=lambda: clock[0])
    mocker.patch.object(stack_module.time, "sleep", side_effect=lambda s: clock.__setitem__(0, clock[0] + s))
    mocker.patch.object(StackContext, "hosts", return_value=("h1",))
    mocker.patch.object(StackContext, "pending", return_value=[])
    raced = auto.CommandError(auto.CommandResult(stdout="", stderr=stderr, code=255))
    ctx.stack.up.side_effect = [raced, mocker.sentinel.done]
    assert ctx.up(message="m") is mocker.sentinel.done
    assert ctx.stack.up.call_count == 2
    ctx.stack.up.reset_mock()
    ctx.stack.up.side_effect = raced
    with pytest.raises(StackError, match=r"^stack staging: deploy failed: .*(could not list bucket|key not found)"):
        ctx.up(message="m", lock_wait=60)
    assert ctx.stack.up.call_count > 1 + stack_module.LOCK_RACE_TRIES  # within --lock-wait, it waits on
    ctx.stack.up.reset_mock()
    with pytest.raises(StackError):
        ctx.up(message="m")
    assert ctx.stack.up.call_count == 1 + stack_module.LOCK_RACE_TRIES  # without: a few tries


def test_a_deploy_of_a_stack_a_rollback_pinned_says_it_stays_on_that_version_and_how_to_follow_commits_again(
        mocker):
    from types import SimpleNamespace
    mocker.patch.object(deploy, "up")
    mocker.patch.object(details, "show", return_value=0)
    said = mocker.patch.object(output, "progress")
    ctx = SimpleNamespace(name="staging", cfg=SimpleNamespace(version="d804ffd5af75", promote=None, servers={"web": 1}))
    assert deploy.run(ctx, SimpleNamespace()) == 0
    said.assert_called_once_with("staging stays on version d804ffd5af75: shipyard:version pins it (`shipyard "
                                 "rollback` does); `pulumi config rm --stack staging shipyard:version` deploys the "
                                 "app's commits again")
    ctx.cfg.version = None
    mocker.patch.object(deploy, "expected_version", return_value="a1b2c3")
    deploy.run(ctx, SimpleNamespace())
    said.assert_called_once()  # following the app's commits: nothing more to say


def test_maintenance_stops_every_proxied_route_or_one_roles_and_live_resumes(mocker):
    from types import SimpleNamespace

    from components.cli import maintenance
    cfg = config.load({**BASE, "servers": {**BASE["servers"], "admin": {"hosts": ["10.0.0.3"],
                                                                         "proxy": {"hosts": ["admin.shop.test"]}}}},
                      stack="staging")
    ctx = SimpleNamespace(cfg=cfg, name="staging", target=lambda h: h)
    calls = []
    mocker.patch("components.hosts.exec_in",
                 side_effect=lambda t, c, argv, timeout: calls.append((t, argv)) or (0, ""))
    maintenance.maintenance(ctx, SimpleNamespace(role=None, message="back soon", drain_timeout=None))
    assert sorted(calls) == sorted([
        (h, ["kamal-proxy", "stop", cfg.route_name(r), "--drain-timeout=30000ms", "--message=back soon"])
        for r, h in (("web", "10.0.0.2"), ("web", "10.0.0.3"), ("admin", "10.0.0.3"))])
    calls.clear()
    maintenance.live(ctx, SimpleNamespace(role="admin"))
    assert calls == [("10.0.0.3", ["kamal-proxy", "resume", cfg.route_name("admin")])]
    with pytest.raises(ConfigError, match="--role: 'jobs' has no route in stack staging: use one of web, admin"):
        maintenance.routes(ctx, "jobs")


def test_prune_keeps_each_roles_current_container_and_retention_on_every_host(mocker):
    from types import SimpleNamespace

    from components.cli import upkeep
    cfg = config.load(BASE, stack="staging")
    ctx = SimpleNamespace(cfg=cfg, name="staging", owner="o/p/staging", outputs=OUTPUTS,
                          target=lambda h: SSHTarget(host=h), label_filters=lambda: ["destination=staging"])
    mocker.patch("components.hosts.client")
    after = mocker.patch("components.cli.upkeep.after_rollout", return_value=set())
    pruned = mocker.patch("components.cli.upkeep.prune_images")
    upkeep.prune(ctx, SimpleNamespace())
    kept = sorted((call.args[1]["target"]["host"], call.args[1]["role"], call.args[2], call.args[1]["proxy"])
                  for call in after.call_args_list)
    assert kept == [("10.0.0.2", "web", "a1", True), ("10.0.0.3", "jobs", "a3", False), ("10.0.0.3", "web", "a2", True)]
    assert all(call.args[1]["retain"] == 5 for call in after.call_args_list) and pruned.call_count == 2


def test_kamal_aliases_expand_to_the_shipyard_command_that_does_the_same():
    from components.cli.aliases import expand
    assert expand("console", 'app exec -i --reuse "bin/rails console"', ["-s", "prod"]) == \
        ["exec", "--stack=prod", "-i", "--reuse", "bin/rails console"]
    assert expand("web-logs", "app logs --roles=web", []) == ["logs", "--role=web"]
    assert expand("back", "rollback", ["abc123"]) == ["rollback", "abc123"]
    with pytest.raises(ConfigError, match=r"^aliases.boot: `server bootstrap` is no Kamal command shipyard runs"):
        expand("boot", "server bootstrap", [])


def test_kamal_command_lines_typed_at_the_command_line_run_shipyards_counterpart(capsys):
    """A Kamal user's fingers: `shipyard app logs -r web -d staging` is `shipyard logs --role web -s staging`; a
    Kamal command with no counterpart is refused naming the ones that have one; a Kamal option given to shipyard's
    own command is named with shipyard's spelling."""
    from components.cli import run
    from components.cli.aliases import kamal_words
    for kamal, ours in [(["app", "logs", "-r", "web", "-d", "staging", "-f"], ["logs", "--stack=staging", "--role",
                                                                               "web", "-f"]),
                        (["app", "logs", "-s", "5m", "-g", "GET /up", "--stack=prod"],  # Kamal's -s: since
                         ["logs", "--stack=prod", "--since", "5m", "--grep", "GET /up"]),
                        (["accessory", "logs", "db", "--destination=prod"], ["logs", "--stack=prod", "--role", "db"]),
                        (["app", "exec", "-i", "--reuse", "bin/rails console", "-d", "prod"],
                         ["exec", "--stack=prod", "-i", "--reuse", "bin/rails console"]),
                        (["redeploy", "-d", "prod"], ["deploy", "--stack=prod"]),
                        (["app", "logs", "--hosts=10.0.0.2"], ["logs", "--host=10.0.0.2"]),
                        (["app", "containers"], ["versions"])]:
        assert kamal_words(kamal) == ours
        parser().parse_args(ours)
    assert kamal_words(["console"]) is None  # an alias, maybe
    from components.cli.aliases import as_shipyard
    commands = parser().commands
    assert as_shipyard(["accessory", "logs", "db", "-n", "5"], commands) == ["logs", "--role", "db", "-n", "5"]
    assert as_shipyard(["prune", "all", "-d", "prod"], commands) == ["prune", "--stack=prod"]
    assert as_shipyard(["accessory", "reboot", "db", "-d", "prod"], commands) == ["accessory", "reboot", "db", "-s",
                                                                                  "prod"]
    assert as_shipyard(["console", "-d", "prod"], commands) is None
    with pytest.raises(ConfigError, match=r"^COMMAND: `app boot` is a Kamal command shipyard has no counterpart "
                                          r"for; of Kamal's `app` commands it runs app exec, app logs"):
        run(["app", "boot"])
    # also where shipyard has a command of that name, and for Kamal's commands with no counterpart at all
    with pytest.raises(ConfigError, match=r"^COMMAND: `accessory exec` is a Kamal command shipyard has no "
                                          r"counterpart for; of Kamal's `accessory` commands it runs accessory reboot, "
                                          r"accessory logs \(see `shipyard --help` for its own\)$"):
        run(["accessory", "exec", "db", "ls /"])
    with pytest.raises(ConfigError, match=r"^COMMAND: `proxy logs` is a Kamal command shipyard has no counterpart "
                                          r"for; the Kamal commands it runs are app exec, "):
        run(["proxy", "logs", "-d", "staging"])
    # shipyard's own commands that Kamal has too take Kamal's destination; other Kamal options are named
    from components.cli.aliases import destination_as_stack
    assert destination_as_stack(["lock", "status", "-d", "prod", "-h"]) == ["lock", "status", "-s", "prod", "-h"]
    assert destination_as_stack(["rollback", "abc123", "--destination=prod"]) == ["rollback", "abc123",
                                                                                 "--stack=prod"]
    assert destination_as_stack(["versions", "-d", "x"]) == ["versions", "-s", "x"]
    assert destination_as_stack(["exec", "ls", "-d", "x"]) == ["exec", "ls", "-d", "x"]  # the command's words
    with pytest.raises(SystemExit):
        run(["logs", "-r", "web"])
    assert capsys.readouterr().err.splitlines()[-1] == ("shipyard: error: unrecognized arguments: -r web (Kamal's "
                                                        "-r is --role here)")


def test_a_stack_of_another_program_is_told_apart_from_one_with_nothing_deployed(mocker):
    """The shipyard command on a stack that a program of the user's own deployed (a Destination among its
    resources, other outputs): said so, with what to use instead - not "nothing is deployed"."""
    from components.cli.stack import StackContext, StackError
    ctx = StackContext.__new__(StackContext)
    ctx.name = "pystaging"
    ctx.stack = mocker.Mock()
    ctx.stack.outputs.return_value = {"url": mocker.Mock(value="http://myapp.test")}
    with pytest.raises(StackError, match=r"its outputs are not this project's program's \(no `service` output\)"):
        ctx.outputs
    ctx.stack.outputs.return_value = {}
    with pytest.raises(StackError, match="nothing is deployed: run `shipyard deploy` first"):
        ctx.outputs


def test_a_rollback_tells_the_program_so_for_the_run_alone(mocker):
    """`shipyard rollback`'s `up` runs the program with SHIPYARD_COMMAND=rollback (its hooks say KAMAL_COMMAND=
    rollback); the workspace is as before afterwards."""
    from components.cli.stack import StackContext
    ctx = StackContext.__new__(StackContext)
    ctx.name = "staging"
    ctx.stack = mocker.Mock()
    ctx.stack.workspace.env_vars = {"PULUMI_CONFIG_PASSPHRASE": "p"}
    mocker.patch.object(StackContext, "pending", return_value=[])
    mocker.patch.object(StackContext, "hosts", return_value=("h1",))
    seen = []
    ctx.stack.up.side_effect = lambda **kw: seen.append(dict(ctx.stack.workspace.env_vars))
    ctx.up(message="m", command="rollback")
    assert seen == [{"PULUMI_CONFIG_PASSPHRASE": "p", "SHIPYARD_COMMAND": "rollback"}]
    assert ctx.stack.workspace.env_vars == {"PULUMI_CONFIG_PASSPHRASE": "p"}


def test_the_stack_may_come_before_the_command_as_kamal_users_type_it():
    from components.cli import _options_last
    assert _options_last(["-s", "staging", "details"]) == ["details", "--stack=staging"]
    assert _options_last(["--stack=staging", "--json", "lock", "status"]) == ["lock", "status", "--stack=staging",
                                                                             "--json"]
    assert _options_last(["-s", "staging", "exec", "--", "ls", "-s"]) == ["exec", "--stack=staging", "--", "ls", "-s"]
    assert _options_last(["details", "-s", "staging"]) == ["details", "-s", "staging"]
    args = parser().parse_args(_options_last(["-s", "staging", "details"]))
    assert (args.command, args.stack) == ("details", "staging")


@pytest.mark.parametrize("argv, stack, command, interactive", [
    (["-s", "staging", "exec", "uptime"], "staging", ["uptime"], False),  # never `uptime -s staging` elsewhere
    (["-s", "staging", "exec", "ls", "-l"], "staging", ["ls", "-l"], False),
    (["exec", "cat /www/index.html", "-s", "staging"], "staging", ["cat /www/index.html"], False),  # Kamal's order
    (["exec", "bin/rails console", "-i", "--stack=prod"], "prod", ["bin/rails console"], True),
    (["exec", "ls", "-l", "/"], None, ["ls", "-l", "/"], False),  # words not all its options: all the command's
    (["exec", "ls", "-s"], None, ["ls", "-s"], False),
    (["exec", "--", "uptime", "-s", "staging"], None, ["--", "uptime", "-s", "staging"], False),
])
def test_exec_takes_its_options_before_or_after_one_quoted_command(argv, stack, command, interactive):
    from components.cli import _options_last
    args = parser().parse_args(_options_last(argv))
    assert (args.stack, args.command, args.interactive) == (stack, command, interactive)


def _shipyard_process(body: str) -> subprocess.CompletedProcess:
    """`body` run as a process of its own (signals are per process), from the project's root."""
    import sys
    from pathlib import Path
    return subprocess.run([sys.executable, "-c", body], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60)


def test_ctrl_c_while_the_command_loads_exits_130_with_no_traceback():
    done = _shipyard_process(
        "import os, signal, time\n"
        "from components.cli import interrupts\n"
        "with interrupts.exiting_on(signal.SIGINT):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n")
    assert (done.returncode, done.stderr) == (130, "")


def test_ctrl_c_ends_the_command_with_130_and_the_threads_it_tears_down_print_nothing():
    """As when Ctrl-C comes while the Automation API reads `pulumi stack output`: its reader thread meets the pipe
    closed by the interrupted call's unwinding and dies of it."""
    done = _shipyard_process(
        "import os, signal, sys, threading\n"
        "import components.cli as cli\n"
        "def run(argv):\n"
        "    torn_down = threading.Event()\n"
        "    def reader():\n"
        "        torn_down.wait()\n"
        "        raise ValueError('I/O operation on closed file')\n"
        "    t = threading.Thread(target=reader)\n"
        "    t.start()\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        t.join(30)\n"
        "    finally:\n"
        "        torn_down.set()\n"
        "cli.run = run\n"
        "sys.exit(cli.main([]))\n")
    assert (done.returncode, done.stderr) == (130, "")


def test_without_ctrl_c_the_command_leaves_signals_and_thread_errors_as_they_were():
    import signal
    import threading

    from components.cli import interrupts
    handler, hook = signal.getsignal(signal.SIGINT), threading.excepthook
    with interrupts.exiting_on(signal.SIGINT):
        assert signal.getsignal(signal.SIGINT) is not handler
    with interrupts.running():
        assert signal.getsignal(signal.SIGINT) is not handler
    assert (signal.getsignal(signal.SIGINT), threading.excepthook) == (handler, hook)
