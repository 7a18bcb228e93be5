"""The pure decisions, tested with data: facts as the daemon or kamal-proxy report them in, actions out."""

from __future__ import annotations

import pytest

from components import decisions
from components.decisions import Actions, Seen


def seen(cid: str, version: str, created: int, running: bool = False, name: str | None = None,
         started: bool = True) -> Seen:
    return Seen(id=cid, name=name or f"svc-web-staging-{version}", version=version, created=created,
                running=running, started=started)


# (what runs on the host, the new container, retain) -> what to stop and remove
AFTER_ROLLOUT = [
    ("first deploy", [seen("v1", "v1", 1, True)], "v1", 5, Actions()),
    ("the predecessor is stopped and kept",
     [seen("v2", "v2", 2, True), seen("v1", "v1", 1, True)], "v2", 5, Actions(stop=("v1",))),
    ("beyond retention the oldest go",
     [seen("v4", "v4", 4, True), seen("v3", "v3", 3, True), seen("v2", "v2", 2), seen("v1", "v1", 1)], "v4", 2,
     Actions(stop=("v3",), remove=("v1",))),
    ("an orphan of an interrupted run that still runs is stopped too",
     [seen("v3", "v3", 3, True), seen("x", "v9", 2, True), seen("v1", "v1", 1, True)], "v3", 5,
     Actions(stop=("x", "v1"))),
    ("containers moved aside or of the same version go",
     [seen("n", "v2", 3, True), seen("a", "v2", 2, True, name="svc-web-staging-v2_replaced_abc"),
      seen("old", "v2", 1)], "n", 5, Actions(remove=("a", "old"))),
]


@pytest.mark.parametrize("case,containers,current,retain,expected", AFTER_ROLLOUT, ids=[c[0] for c in AFTER_ROLLOUT])
def test_after_rollout(case, containers, current, retain, expected):
    assert decisions.after_rollout(containers, current, retain) == expected


def test_a_proxied_predecessor_keeps_serving_until_its_route_switched():
    containers = [seen("v2", "v2", 2, True), seen("v1", "v1", 1, True),
                  seen("a", "v1", 1, True, name="svc-web-staging-v1_replaced_abc")]
    assert decisions.after_rollout(containers, "v2", 5, stop_running=False) == Actions()


ON_DELETE = [
    ("replaced: kept, stopped", [seen("v2", "v2", 2, True), seen("v1", "v1", 1, True)], "v1", 5,
     Actions(stop=("v1",))),
    ("the role left the config: everything of it goes", [seen("v2", "v2", 2, True), seen("v1", "v1", 1)], "v2", 5,
     Actions(remove=("v2", "v1"))),
    ("already gone: nothing", [seen("v2", "v2", 2, True)], "v1", 5, Actions()),
    ("moved aside by a same-version replacement: removed",
     [seen("n", "v2", 3, True), seen("a", "v2", 2, True, name="svc-web-staging-v2_replaced_abc")], "a", 5,
     Actions(remove=("a",))),
    ("a crashed successor still counts: nothing retained is lost",
     [seen("v3", "v3", 3, False), seen("v2", "v2", 2, True), seen("v1", "v1", 1)], "v2", 5, Actions(stop=("v2",))),
    ("a successor never started (its rollout failed in another role): this one still runs the role",
     [seen("v3", "v3", 3, False, started=False), seen("v2", "v2", 2, True), seen("v1", "v1", 1)], "v2", 5,
     Actions()),
    ("put back in place of its newer successor, moved aside (a failed run's, an accessory's): this one serves",
     [seen("n", "v1", 2, False, name="svc-db_replaced_n"), seen("o", "v1", 1, True, name="svc-db")], "o", 1,
     Actions()),
    ("...and the successor's own delete (a destroy) removes both",
     [seen("n", "v1", 2, False, name="svc-db_replaced_n"), seen("o", "v1", 1, True, name="svc-db")], "n", 1,
     Actions(remove=("n", "o"))),
    ("a newer one left under a pending name (an interrupted create) is no successor: everything goes",
     [seen("p", "v1", 2, True, name="svc-db_pending_1234"), seen("o", "v1", 1, True, name="svc-db")], "o", 1,
     Actions(remove=("p", "o"))),
]


@pytest.mark.parametrize("case,containers,deleted,retain,expected", ON_DELETE, ids=[c[0] for c in ON_DELETE])
def test_on_delete(case, containers, deleted, retain, expected):
    assert decisions.on_delete(containers, deleted, retain) == expected


def test_a_container_a_route_targets_is_never_stopped_or_removed_by_a_delete():
    replaced = [seen("v2", "v2", 2, True), seen("v1", "v1", 1, True)]
    assert decisions.on_delete(replaced, "v1", 5, serving=("v1",)) == Actions()
    assert decisions.on_delete(replaced, "v2", 5, serving=("v1",)) == Actions(remove=("v2",))


def test_routed_finds_the_containers_routes_target_by_id_prefix_or_name():
    role = [seen("0123456789ab" + "c" * 52, "v2", 2, True), seen("fedcba987654" + "0" * 52, "v1", 1, True)]
    routes = [{"target": "0123456789ab:80"}, {"target": "svc-web-staging-v1:80,other:80"}, {"target": ""}]
    assert decisions.routed(routes, role) == tuple(s.id for s in role)
    assert decisions.routed([{"target": "0123456789ab:80"}], role) == (role[0].id,)
    assert decisions.routed([], role) == ()


def test_leftovers_are_the_pending_ones():
    containers = [seen("p", "v2", 3, True, name="svc-web-staging-v2_pending_1a2b3c4d"), seen("v1", "v1", 1, True)]
    assert decisions.leftovers(containers) == ("p",)
    # besides this run's own creates (its nonce starts the name's)
    containers.append(seen("q", "v3", 4, False, name="svc-db-staging_pending_5e6f7a8b9c0d"))
    assert decisions.leftovers(containers, besides_run="5e6f7a8b") == ("p",)


VERDICTS = [
    ({"Running": True, "RestartCount": 0}, "running"),
    ({"Running": False, "ExitCode": 1}, "crashed"),
    ({"Running": True, "Restarting": True, "ExitCode": 1, "RestartCount": 1}, "crashed"),
    ({"Running": True, "RestartCount": 2, "ExitCode": 1}, "crashed"),  # came back, but it died on the way
    ({"Running": True, "Health": {"Status": "starting"}}, "starting"),
    ({"Running": True, "Health": {"Status": "healthy"}}, "healthy"),
    ({"Running": True, "Health": {"Status": "unhealthy", "Log": [{"Output": "no db\n"}]}}, "unhealthy"),
]


@pytest.mark.parametrize("state,status", VERDICTS)
def test_container_verdict(state, status):
    assert decisions.container_verdict(state).status == status


def test_a_crash_verdict_says_the_exit_code_and_restarts():
    v = decisions.container_verdict({"Running": True, "Restarting": True, "ExitCode": 137, "RestartCount": 3})
    assert v.detail == "exited with code 137, restarted 3 times"


def test_port_holders():
    items = [{"Id": "a", "State": "running", "Ports": [{"PublicPort": 8080}]},
             {"Id": "b", "State": "exited", "Ports": [{"PublicPort": 8080}]},
             {"Id": "c", "State": "running", "Ports": [{"PublicPort": 9090}]},
             {"Id": "new", "State": "running", "Ports": [{"PublicPort": 8080}]}]
    assert decisions.port_holders(items, {8080}, exclude="new") == ["a"]
    assert decisions.port_holders(items, set(), exclude="new") == []


IMAGES = [
    ("same build settings, other checkout: a rollback, reused",
     {"shipyard.build": "b1", "shipyard.source": "old"}, {"shipyard.build": "b1", "shipyard.source": "new"}, None),
    ("other builder settings under one version: refused",
     {"shipyard.build": "b1"}, {"shipyard.build": "b2"}, "other builder settings"),
    ("built by an earlier release from the same source: reused",
     {"shipyard.source": "s"}, {"shipyard.build": "b1", "shipyard.source": "s"}, None),
    ("built by an earlier release from another source: refused",
     {"shipyard.source": "sha256:s"}, {"shipyard.build": "b1", "shipyard.source": "sha256:t"}, "other sources"),
    ("built by an earlier release, its source hashed another way: not comparable, reused",
     {"shipyard.source": "sha256:files"}, {"shipyard.build": "b1", "shipyard.source": "tar-sha256:tar"}, None),
]


@pytest.mark.parametrize("case,existing,wanted,refusal", IMAGES, ids=[c[0] for c in IMAGES])
def test_image_conflict(case, existing, wanted, refusal):
    got = decisions.image_conflict(existing, wanted, "v1")
    assert (got is None) if refusal is None else (refusal in got)


E = "\x1b[{}m{}\x1b[0m"


def row(*cells, header=False):
    style = "3;94" if header else "0"
    return "".join(E.format("1;34" if i == 0 and not header else style, c) + "  " for i, c in enumerate(cells))


def test_parse_proxy_list_reads_cells_exactly_whatever_their_width():
    long = "a-very-long-service-name-over-thirty-characters-web-staging"
    listing = "\n".join([row("Service", "Host", "Path", "Target", "State", "TLS", header=True),
                         row(long, "staging.shop.test", "", "0123456789ab:80", "running", "no"),
                         row("shop-web-production", "shop.test", "/api", "fedcba987654:80", "running", "yes")])
    routes = decisions.parse_proxy_list(listing)
    assert set(routes) == {long, "shop-web-production"}
    assert routes[long]["target"] == "0123456789ab:80" and routes[long]["path"] == ""
    assert routes["shop-web-production"]["path"] == "/api" and routes["shop-web-production"]["tls"] == "yes"
    assert decisions.upstream_container(routes[long]["target"]) == "0123456789ab"


def test_parse_proxy_list_without_escapes_and_when_empty():
    assert decisions.parse_proxy_list("Service  Host  Path  Target  State  TLS\n") == {}
    plain = "Service  Host  Path  Target  State  TLS\nweb-st  a.test  t1:80  running  no\n"
    assert decisions.parse_proxy_list(plain)["web-st"]["target"] == "t1:80"


CID = "0123456789ab" + "c" * 52
IN_SYNC = [
    ("targets the recorded container by ID", "0123456789ab:80", CID, "shop-web-staging-v2:80", True),
    ("an earlier release routed by name", "shop-web-staging-v2:80", None, "shop-web-staging-v2:80", True),
    ("pointed at another container by hand", "fedcba987654:80", CID, "shop-web-staging-v2:80", False),
    ("pointed by name at another one", "busybox-httpd:80", CID, "shop-web-staging-v2:80", False),
    ("a name is never an ID prefix", "0123", CID, "shop-web-staging-v2:80", False),
    ("no target", "", CID, "shop-web-staging-v2:80", False),
]


@pytest.mark.parametrize("case,live,container_id,upstream,expected", IN_SYNC, ids=[c[0] for c in IN_SYNC])
def test_route_in_sync(case, live, container_id, upstream, expected):
    assert decisions.route_in_sync(live, container_id, upstream) is expected


def test_a_hand_made_target_is_reclaimable_unless_another_stack_owns_it():
    assert decisions.reclaimable({})
    assert decisions.reclaimable({"service": "shop", "role": "web", "destination": ""})  # Kamal's rollback
    assert not decisions.reclaimable({"shipyard.stack": "shipyard/production", "destination": "production"})
    assert decisions.upstream_port("0123456789ab:3000") == "3000" and decisions.upstream_port("x") == ""


ROUTES = {"shop-web-staging": {"host": "shop.test,www.shop.test", "path": "", "tls": "no"},
          "shop-api-staging": {"host": "shop.test", "path": "/api", "tls": "no"},
          "blog-web-staging": {"host": "*", "path": "", "tls": "no"}}
HOLDERS = [
    ("a renamed route needs the old one's host names", "shop-web", ["www.shop.test"], [], ("shop-web-staging",)),
    ("another path prefix on the same host is free", "shop-web", ["shop.test"], ["/admin"], ()),
    ("the same path prefix is not", "x", ["shop.test"], ["api"], ("shop-api-staging",)),
    ("nor is it as one of several", "x", ["shop.test"], ["/admin", "/api"], ("shop-api-staging",)),
    ("no host names: the catch-all route holds them", "x", [], [], ("blog-web-staging",)),
    ("its own name never holds", "shop-web-staging", ["shop.test"], [], ()),
]


@pytest.mark.parametrize("case,service,hosts,path,expected", HOLDERS, ids=[c[0] for c in HOLDERS])
def test_host_holders(case, service, hosts, path, expected):
    assert decisions.host_holders(ROUTES, service, hosts, path) == expected


def test_route_binding_is_what_a_listed_route_serves():
    assert decisions.route_binding(ROUTES["shop-web-staging"]) == {
        "hosts": ["shop.test", "www.shop.test"], "path_prefix": None, "ssl": False}
    assert decisions.route_binding({"host": "*", "path": "/api", "tls": "yes"}) == {
        "hosts": [], "path_prefix": "/api", "ssl": True}
    assert decisions.route_binding({"host": "shop.test", "path": "/api,/admin", "tls": "no"})["path_prefix"] == [
        "/api", "/admin"]


def test_port_conflicts_name_what_else_publishes_a_wanted_host_port():
    proxy = {"Id": "p", "Names": ["/kamal-proxy"], "State": "running",
             "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 80, "Type": "tcp"}]}
    mine = {"Id": "m", "Names": ["/acc-staging-db"], "State": "running", "Labels": {"role": "db"},
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 5432, "PublicPort": 5432, "Type": "tcp"}]}
    stopped = {**proxy, "Id": "s", "State": "exited"}
    wanted = [{"host_ip": None, "host_port": 80, "container_port": 80, "protocol": "tcp"},
              {"host_ip": None, "host_port": 5432, "container_port": 5432, "protocol": "tcp"},
              {"host_ip": None, "host_port": 53, "container_port": 53, "protocol": "udp"},
              {"host_ip": None, "host_port": None, "container_port": 9000, "protocol": "tcp"}]
    replaced = lambda item: item["Labels"].get("role") == "db" if item.get("Labels") else False  # noqa: E731
    assert decisions.port_conflicts([proxy, mine, stopped], wanted, replaced) == [(80, proxy)]
    assert decisions.port_conflicts([proxy], [{**wanted[0], "protocol": "udp"}], replaced) == []
    assert decisions.port_conflicts([proxy], [{**wanted[0], "host_ip": "127.0.0.1"}], replaced) == [(80, proxy)]


def test_what_an_interrupted_rollout_left_running_is_told_from_what_the_last_whole_one_runs():
    # a worker: all but the one running longest (nanoseconds with their trailing zeros cut, as Docker writes them)
    started = {"old": "2026-11-30T05:01:15.1234Z", "new": "2026-11-30T05:01:15.12345Z"}
    assert decisions.unfinished(started) == ("new",)
    assert decisions.unfinished({"old": "2026-11-30T05:01:15Z", "new": "2026-11-30T05:02:01.5Z"}) == ("new",)
    assert decisions.unfinished({"only": "2026-11-30T05:01:15Z"}) == ()
    # ... unless the destination's routes serve the other one's version (the interrupted run got past its routes)
    assert decisions.unfinished(started, served=["new"]) == ("old",)
    # a proxied role: every one its route does not target - and nothing where the route targets none of them
    both = {"routed": "2026-11-30T05:03:00Z", "unrouted": "2026-11-30T05:01:00Z"}
    assert decisions.unfinished(both, routed=["routed"]) == ("unrouted",)
    assert decisions.unfinished(both, routed=[]) == ()
