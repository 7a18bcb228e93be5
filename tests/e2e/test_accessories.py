"""Accessories, networks, env and secrets, volumes - each kept per destination - with the real CLI on one host.

The tests share one deployed pair (module fixture); each starts from both destinations at their base config and
secrets (`at_base`), so every test runs alone and in any order.
"""

from __future__ import annotations

from typing import Any

import pytest

from components import hostfiles
from components.hosts import SSHTarget
from tests.conftest import Project, host_docker, http_get, make_project, pulumi_env, requests_during, ssh_config

pytestmark = pytest.mark.e2e

PORTS = {"staging": 8121, "production": 8122}
SECRET = {"staging": "st4ging-s3cret-value", "production": "pr0duction-s3cret-value"}


def config(bench, dest: str, version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "service": "acc", "image": "acme/acc", "version": version, "builder": {"context": "app"},
        "servers": {"web": {"hosts": [bench.hosts[0].address], "ports": [f"{PORTS[dest]}:80"]}},
        "env": {"clear": {"DB_HOST": "db"}, "secret": ["GREETING"]},
        "accessories": {"db": {
            "image": "busybox:latest", "host": bench.hosts[0].address,
            "cmd": "mkdir -p /data && echo db-of-$SHIPYARD_DEST > /data/index.html && httpd -p 80 -h /data && "
                   "trap 'exit 0' TERM && while :; do sleep 1; done",  # stops when asked, as a database does
            "env": {"clear": {"SHIPYARD_DEST": dest}},
            "volumes": ["data:/data"], "files": ["app/db.conf:/etc/db.conf"], "directories": ["logs:/var/log/db"],
        }},
        "ssh": ssh_config(bench), **extra,
    }


@pytest.fixture(scope="module")
def pair(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("accessories")
    (root / "state").mkdir()
    proj = Project(make_project(root, {"db.conf": "max_connections=7\n"}), pulumi_env(root / "state"))
    for dest in PORTS:
        proj.init(dest, config(bench, dest), secrets={"shipyard:secrets.GREETING": SECRET[dest]})
        proj.up(dest)
    yield proj
    for dest in PORTS:
        proj.run("destroy", "--yes", stack=dest, check=False)


@pytest.fixture(autouse=True)
def at_base(bench, pair):
    for dest in PORTS:
        pair.converge(dest, config(bench, dest), {"shipyard:secrets.GREETING": SECRET[dest]})


def docker(bench):
    return host_docker(bench.hosts[0])


def exec_(bench, container: str, cmd: str) -> tuple[int, str]:
    d = docker(bench)
    eid = d.exec_create(container, ["sh", "-c", cmd])["Id"]
    out = d.exec_start(eid).decode()
    return d.exec_inspect(eid)["ExitCode"], out


def test_each_destination_runs_its_own_accessory_with_its_own_data(bench, pair):
    out = {d: pair.outputs(d) for d in PORTS}
    host = bench.hosts[0].address
    for dest in PORTS:
        acc = out[dest]["accessories"]["db"][host]
        assert acc["container"] == f"acc-{dest}-db" and acc["hostname"] == "db" and acc["network"] == f"acc-{dest}"
        info = docker(bench).inspect_container(acc["id"])
        assert info["Config"]["Labels"]["destination"] == dest and info["Config"]["Labels"]["accessory"] == "db"
        assert f"acc-{dest}-data" in [m.get("Name") for m in info["Mounts"]]
        assert exec_(bench, acc["container"], "cat /etc/db.conf") == (0, "max_connections=7\n")
        assert exec_(bench, acc["container"], "test -d /var/log/db")[0] == 0
    assert exec_(bench, "acc-staging-db", "echo written-by-staging > /data/row")[0] == 0
    assert exec_(bench, "acc-staging-db", "cat /data/row") == (0, "written-by-staging\n")
    assert exec_(bench, "acc-production-db", "test -e /data/row")[0] != 0


# busybox-static's wget crashes (static glibc lookups); nslookup and nc work: resolve, then speak HTTP with nc.
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80"
FETCH = "ip=$(nslookup {name} 2>/dev/null | awk '/^Address: /{{print $2}}' | tail -1) && [ -n \"$ip\" ] && " + \
        GET.replace("{ip}", "$ip")


def test_the_app_reaches_its_own_accessory_and_not_the_other_destinations(bench, pair):
    host = bench.hosts[0].address
    web = {d: pair.outputs(d)["containers"][host]["web"]["name"] for d in PORTS}
    for dest in PORTS:
        code, out = exec_(bench, web[dest], FETCH.format(name="db"))
        assert code == 0 and out.endswith(f"\r\n\r\ndb-of-{dest}\n")
    prod_db_ip = docker(bench).inspect_container("acc-production-db")["NetworkSettings"]["Networks"][
        "acc-production"]["IPAddress"]
    code, out = exec_(bench, web["production"], GET.format(ip=prod_db_ip))
    assert code == 0 and "db-of-production" in out  # it serves...
    code, out = exec_(bench, web["staging"], GET.format(ip=prod_db_ip))
    assert code != 0 and "db-of-production" not in out  # ...but not to staging: unreachable from its network
    code, out = exec_(bench, web["staging"], FETCH.format(name="acc-production-db"))
    assert code != 0 and "db-of-production" not in out  # and not even resolvable


def test_secrets_never_show_and_are_not_copied_to_files_on_the_host(bench, pair):
    for dest in PORTS:
        assert f"greeting={SECRET[dest]}" in http_get(f"http://{bench.hosts[0].address}:{PORTS[dest]}/")
    state = "".join(p.read_text() for p in (pair.dir.parent / "state").rglob("*.json"))
    preview = pair.run("preview", "--diff", stack="staging").out
    outputs = pair.run("stack", "output", "--json", stack="staging").out
    # everything the CLI printed, but for the `config set --secret` commands that typed the values in
    printed = "".join(h for h in pair.history if not h.startswith("$ pulumi config set"))
    everything = state + preview + outputs + printed
    for value in SECRET.values():
        assert value not in everything
    # the container gets its environment through the Docker API; no second copy of the secrets lies on the host
    t = SSHTarget(host=bench.hosts[0].address, keys=(bench.identity_file,), known_hosts=bench.known_hosts)
    assert hostfiles.file_mode(t, ".shipyard/acc-staging/web.env") is None
    assert hostfiles.file_mode(t, ".shipyard/acc-staging/accessory.db.env") is None


def test_changing_a_secret_rolls_the_app_out_and_preview_hides_the_value(bench, pair):
    host = bench.hosts[0].address
    before = pair.outputs("staging")
    pair.run("config", "set", "--secret", "--path", "shipyard:secrets.GREETING", "r0tated-s3cret", stack="staging")
    preview = pair.run("preview", "--diff", stack="staging").out
    assert "r0tated-s3cret" not in preview and SECRET["staging"] not in preview
    assert "[secret]" in preview and "+-shipyard:index:Container: (replace)" in preview
    up = pair.up("staging")
    assert "r0tated-s3cret" not in up.out
    after = pair.outputs("staging")
    assert after["containers"][host]["web"]["id"] != before["containers"][host]["web"]["id"]
    assert "greeting=r0tated-s3cret" in http_get(f"http://{host}:{PORTS['staging']}/")


def test_an_app_deploy_leaves_accessories_alone(bench, pair):
    host = bench.hosts[0].address
    ids = {d: pair.outputs(d)["accessories"]["db"][host]["id"] for d in PORTS}
    started = {d: docker(bench).inspect_container(ids[d])["State"]["StartedAt"] for d in PORTS}
    pair.set_config("staging", config(bench, "staging", version="v2"))
    pair.up("staging")
    assert "version=v2" in http_get(f"http://{host}:{PORTS['staging']}/")
    for d in PORTS:
        assert pair.outputs(d)["accessories"]["db"][host]["id"] == ids[d]
        assert docker(bench).inspect_container(ids[d])["State"]["StartedAt"] == started[d]  # not even restarted


def test_changing_an_accessory_replaces_only_it(bench, pair):
    host = bench.hosts[0].address
    assert exec_(bench, "acc-staging-db", "echo written-by-staging > /data/row")[0] == 0
    before = pair.outputs("staging")
    cfg = config(bench, "staging")
    cfg["accessories"]["db"]["env"]["clear"]["EXTRA"] = "1"
    pair.set_config("staging", cfg)
    pair.up("staging")
    after = pair.outputs("staging")
    assert after["accessories"]["db"][host]["id"] != before["accessories"]["db"][host]["id"]
    assert after["containers"][host]["web"]["id"] == before["containers"][host]["web"]["id"]
    assert exec_(bench, "acc-staging-db", "cat /data/row") == (0, "written-by-staging\n")  # the volume kept its data


def test_an_accessory_change_that_fails_leaves_the_old_one_running_with_its_data(bench, pair):
    """The new db crashes at start: the old one was stopped (not removed) just before, and runs again - same
    container, same data - while the app kept answering."""
    host = bench.hosts[0].address
    assert exec_(bench, "acc-staging-db", "echo kept > /data/row")[0] == 0
    before = docker(bench).inspect_container("acc-staging-db")["Id"]
    cfg = config(bench, "staging")
    cfg["accessories"]["db"]["cmd"] = "echo db cannot start; exit 3"
    pair.set_config("staging", cfg)
    with requests_during(lambda: http_get(f"http://{host}:{PORTS['staging']}/"), most=1000, pause=0.02) as seen:
        failed = pair.up("staging", check=False)
    assert not failed.ok and "Traceback" not in failed.out
    assert (f"host {host}: container acc-staging-db (role accessory.db) of destination staging exited with code 3 "
            f"right after starting; it was removed and the previous version keeps running. Last output: db cannot "
            f"start") in failed.out, failed.out
    db = docker(bench).inspect_container("acc-staging-db")
    assert db["Id"] == before and db["State"]["Running"]
    assert exec_(bench, "acc-staging-db", "cat /data/row") == (0, "kept\n")
    answers = [answer for _, answer in seen]
    assert len(answers) > 10 and all(a and "destination=staging" in a for a in answers), answers[-3:]
    pair.set_config("staging", config(bench, "staging"))
    pair.run("preview", "--expect-no-changes", stack="staging")  # the state still says what runs


def test_a_failed_deploy_puts_back_the_accessory_it_replaced_and_the_fixed_one_runs_the_new_one(bench, pair):
    """One `up` changes the db's env and adds a worker that cannot start: the new db took over, then the run failed.
    It ends with the old db - same container, same data - running under its name and serving the app, which
    answered throughout; the new one is stopped beside it. The state records the new db: preview says it starts
    again (`running`), and the fixed `up` runs it, on the same data, and removes the old one."""
    host = bench.hosts[0].address
    assert exec_(bench, "acc-staging-db", "echo kept > /data/row")[0] == 0
    before = docker(bench).inspect_container("acc-staging-db")["Id"]
    cfg = config(bench, "staging")
    cfg["accessories"]["db"]["env"]["clear"]["EXTRA"] = "1"
    pair.set_config("staging", {**cfg, "servers": {**cfg["servers"], "jobs": {
        "hosts": [host], "cmd": "echo jobs cannot start; exit 3"}}})
    with requests_during(lambda: http_get(f"http://{host}:{PORTS['staging']}/"), most=1000, pause=0.02) as seen:
        failed = pair.up("staging", check=False)
    assert not failed.ok and "Traceback" not in failed.out
    assert "exited with code 3" in failed.out and "jobs cannot start" in failed.out, failed.out
    answers = [answer for _, answer in seen]
    assert len(answers) > 10 and all(a and "destination=staging" in a for a in answers), answers[-3:]

    def dbs() -> dict[str, dict[str, Any]]:
        return {i["Id"]: i for i in docker(bench).containers(all=True, filters={"label": [
            "destination=staging", "accessory=db"]})}
    db = docker(bench).inspect_container("acc-staging-db")
    assert db["Id"] == before and db["State"]["Running"]
    assert exec_(bench, "acc-staging-db", "cat /data/row") == (0, "kept\n")
    web = pair.outputs("staging")["containers"][host]["web"]["name"]
    code, out = exec_(bench, web, FETCH.format(name="db"))
    assert code == 0 and out.endswith("\r\n\r\ndb-of-staging\n")  # the app reaches it by its name
    (new,) = [cid for cid in dbs() if cid != before]
    assert dbs()[new]["State"] == "exited"

    pair.set_config("staging", cfg)
    preview = pair.run("preview", "--diff", stack="staging").out
    assert "running" in preview and (f"host {host}: container acc-staging-db is stopped (a failed deploy put "
                                     f"back the one it replaced, or it was stopped by hand): this update starts "
                                     f"it") in preview, preview
    pair.up("staging")
    assert list(dbs()) == [new]
    db = docker(bench).inspect_container("acc-staging-db")
    assert db["Id"] == new and db["State"]["Running"] and "EXTRA=1" in db["Config"]["Env"]
    assert exec_(bench, "acc-staging-db", "cat /data/row") == (0, "kept\n")
    pair.run("preview", "--expect-no-changes", stack="staging")


def test_an_accessory_port_held_on_the_host_is_refused_before_the_accessory_is_touched(bench, pair):
    """Its published port moved to one production's web role holds: refused in one line before anything changes -
    the running accessory is not removed first - while production keeps answering there."""
    host = bench.hosts[0].address
    before = docker(bench).inspect_container("acc-staging-db")["Id"]
    cfg = config(bench, "staging")
    cfg["accessories"]["db"]["port"] = f"{PORTS['production']}:80"
    pair.set_config("staging", cfg)
    with requests_during(lambda: http_get(f"http://{host}:{PORTS['production']}/"), most=1000,
                         pause=0.02) as seen:
        failed = pair.up("staging", check=False)
    assert not failed.ok and "Traceback" not in failed.out
    assert (f"host {host}: port {PORTS['production']} is already published by container acc-web-production-v1 of "
            f"stack ") in failed.out, failed.out
    db = docker(bench).inspect_container("acc-staging-db")
    assert db["Id"] == before and db["State"]["Running"]  # the accessory runs as it did
    answers = [answer for _, answer in seen]
    assert len(answers) > 10 and all(a and "destination=production" in a for a in answers), answers[-3:]


def test_destroy_keeps_named_volumes_unless_the_stack_opts_in(bench, pair):
    d = docker(bench)
    preview = pair.run("destroy", "--preview-only", "--diff", stack="staging").out
    assert "shipyard:index:Volume: (delete[retain])" in preview  # the preview says it is kept
    pair.run("destroy", "--yes", stack="staging")
    assert d.inspect_volume("acc-staging-data")["Labels"]["destination"] == "staging"  # kept, with its data
    assert not d.containers(all=True, filters={"label": ["service=acc", "destination=staging"]})
    pair.set_config("production", config(bench, "production", delete_volumes_on_destroy=True))
    pair.up("production")
    pair.run("destroy", "--yes", stack="production")
    assert not d.volumes(filters={"name": "acc-production-data"})["Volumes"]
    d.remove_volume("acc-staging-data")
