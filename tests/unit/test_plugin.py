"""The `shipyard` plugin: its schema, its detailed diffs (what a preview prints), and its gRPC server's answers to
the engine's calls, with the providers faked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest
from pulumi.dynamic import DiffResult
from pulumi.output import Unknown
from google.protobuf import empty_pb2
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import engine_pb2_grpc

from components.errors import HostError
from components.plugin import schema, server
from components.providers import rollout
from components.resources import Container, Hook, Image, Network, Proxy, ProxyRoute, Rollout, Volume
from tests.conftest import REPO

KINDS = {c.kind: c for c in (Container, Hook, Image, Network, Proxy, ProxyRoute, Rollout, Volume)}


def test_the_schema_has_every_kind_with_its_provider_secrets_and_the_alias_of_its_dynamic_type():
    doc = json.loads(schema.as_json())
    assert doc["name"] == "shipyard" and doc["version"] == server.VERSION
    assert set(doc["resources"]) - {"shipyard:index:Destination"} == {f"shipyard:index:{k}" for k in KINDS} == {
        f"shipyard:index:{k}" for k in schema.PROVIDERS}
    for kind, cls in KINDS.items():
        res = doc["resources"][f"shipyard:index:{kind}"]
        assert res["aliases"] == [{"type": f"pulumi-python:dynamic/shipyard:{kind}"}]
        assert set(res["requiredInputs"]) <= set(res["inputProperties"])
        for key in cls.secret:  # what the program keeps secret, the schema marks secret
            assert res["properties"][key].get("secret") is True, (kind, key)
        # what the program reads back of a resource, the state records among its outputs (`server.beyond`), and
        # the schema says so: the inputs it does not read are not outputs
        read = {k for k, t in vars(cls).get("__annotations__", {}).items() if str(t).startswith("pulumi.Output")}
        assert {*cls.outputs, *read} <= set(res["properties"]) == schema.recorded_outputs(kind), (kind, read)
    assert doc["resources"]["shipyard:index:Container"]["inputProperties"]["target"]["$ref"] == \
        "#/types/shipyard:index:SshTarget"
    # the component takes the settings a user writes: not what a Kamal config sets inside (`kamal_app`)
    inputs = doc["resources"]["shipyard:index:Destination"]["inputProperties"]
    assert {"service", "servers", "proxy", "ssh", "project_dir"} <= set(inputs) and "kamal_app" not in inputs


def test_the_committed_python_sdk_is_what_pulumis_generator_makes_of_the_schema(tmp_path):
    subprocess.run([str(REPO / "scripts/gen-sdk.sh"), str(tmp_path)], check=True, capture_output=True)

    def files(root):
        found = {p.relative_to(root): p for p in root.rglob("*") if p.is_file()}
        return {str(rel): p.read_text() for rel, p in found.items()  # not what building or installing leaves
                if not {"__pycache__", "build"} & set(rel.parts) and not rel.parts[0].endswith(".egg-info")}
    generated, committed = files(tmp_path), files(REPO / "sdk/python")
    assert sorted(generated) == sorted(committed), "the schema changed: run `make sdk`"
    assert [f for f in generated if generated[f] != committed[f]] == [], "the schema changed: run `make sdk`"
    destination = generated["pulumi_shipyard/destination.py"]
    assert "service: pulumi.Input[_builtins.str]" in destination and "remote=True" in destination
    assert "def urls(self) -> pulumi.Output[Sequence[_builtins.str]]" in destination


def test_a_resource_type_resolves_to_its_provider_and_an_unknown_one_is_refused():
    assert type(schema.provider_for("shipyard:index:Container")).__name__ == "ContainerProvider"
    assert schema.provider_for("shipyard:index:Container") is schema.provider_for("shipyard:index:Container")
    with pytest.raises(KeyError, match="no resource type shipyard:index:Nope"):
        schema.provider_for("shipyard:index:Nope")


def kinds(d: dict) -> dict[str, str]:
    return {k: proto.PropertyDiff.Kind.Name(v.kind) for k, v in d.items()}


def test_a_detailed_diff_names_each_changed_path_and_what_replaces():
    target = {"host": "h1", "user": "deploy", "port": 22, "keys": ["/k"]}
    olds = {"env": {"A": "1", "B": "x"}, "target": target, "labels": {"a.b": "1"}, "container_id": "c1",
            "containers": [{"container_id": "c1", "role": "web"}, {"container_id": "c2", "role": "jobs"}],
            "__provider": "pickled"}
    news = {"env": {"A": "2", "B": "x", "C": "new"}, "target": {**target, "host": "h2", "user": "ops"},
            "labels": {"a.b": "2"}, "containers": [{"container_id": "c1", "role": "web"},
                                                   {"container_id": rpc.UNKNOWN, "role": "jobs"}]}
    assert kinds(server.detailed_diff(olds, news, ["env", "target", "labels"])) == {
        "env.A": "UPDATE_REPLACE", "env.C": "ADD_REPLACE",
        "target.host": "UPDATE_REPLACE", "target.user": "UPDATE",  # how a host is reached never replaces
        'labels["a.b"]': "UPDATE_REPLACE", "containers[1].container_id": "UPDATE"}
    # where the provider's diff looks at some keys only, the preview names those only
    assert kinds(server.detailed_diff(olds, news, [], compared=("containers",))) == {
        "containers[1].container_id": "UPDATE"}
    # a list that grew is named as a whole; an unchanged target is never named
    assert kinds(server.detailed_diff({"cmd": ["a"], "target": target}, {"cmd": ["a", "b"], "target": target},
                                      [])) == {"cmd": "UPDATE"}


class Context:
    """The gRPC context of one call: an abort ends it with the code and message the engine shows."""
    def __init__(self):
        self.aborted = None

    async def abort(self, code, message):
        self.aborted = (code, message)
        raise RuntimeError("aborted")


def call(method: str, request, context: Context | None = None):
    return asyncio.run(getattr(server.Servicer(), method)(request, context or Context()))


def struct(props: dict):
    return asyncio.run(rpc.serialize_properties(props, {}))


URN = "urn:pulumi:staging::shop::shipyard:deploy:DestinationService$shipyard:index:Container::shop-staging-web@h1"


def test_diff_through_the_server_names_the_secret_key_and_the_replacement(mocker):
    provider = mocker.Mock(compared=None, observed=lambda _id, olds: (olds, ""))  # the host shows what the state says
    provider.diff.return_value = DiffResult(changes=True, replaces=["secret_env"], delete_before_replace=False)
    mocker.patch.object(schema, "provider_for", return_value=provider)
    olds = {"secret_env": {"TOKEN": "old", "OTHER": "same"}, "name": "shop-web"}
    news = {"secret_env": {"TOKEN": "new", "OTHER": "same"}, "name": "shop-web"}
    resp = call("Diff", proto.DiffRequest(urn=URN, id="c1", olds=struct(olds), news=struct(news)))
    assert resp.changes == proto.DiffResponse.DIFF_SOME and list(resp.replaces) == ["secret_env"]
    assert resp.hasDetailedDiff and kinds(resp.detailedDiff) == {"secret_env.TOKEN": "UPDATE_REPLACE"}
    # the recorded state against the wanted inputs: what a refresh found shows as such
    assert not resp.detailedDiff["secret_env.TOKEN"].inputDiff
    assert list(resp.diffs) == ["secret_env"]
    schema.provider_for.assert_called_once_with("shipyard:index:Container")
    provider.diff.return_value = DiffResult(changes=False, replaces=[], delete_before_replace=False)
    assert call("Diff", proto.DiffRequest(urn=URN, id="c1", olds=struct(olds), news=struct(olds))).changes == \
        proto.DiffResponse.DIFF_NONE


def test_a_diff_against_what_the_host_shows_says_why_beside_the_resource(mocker):
    """The preview prints the recorded value (`running: true => true` for an accessory a failed run stopped again):
    the line the provider gives for what its host shows goes to the engine's log, which the CLI prints beside the
    resource."""
    why = "host h1: container shop-db is stopped (...): this update starts it"
    provider = mocker.Mock(compared=None, observed=lambda _id, olds: ({**olds, "running": False}, why))
    provider.diff.return_value = DiffResult(changes=True, replaces=[], delete_before_replace=False)
    mocker.patch.object(schema, "provider_for", return_value=provider)
    logged = []

    class Engine(engine_pb2_grpc.EngineServicer):
        async def Log(self, request, context):
            logged.append((proto.LogSeverity.Name(request.severity), request.message, request.urn))
            return empty_pb2.Empty()

    props = struct({"name": "shop-db", "running": True})

    async def diff() -> proto.DiffResponse:
        engine = grpc.aio.server()
        engine_pb2_grpc.add_EngineServicer_to_server(Engine(), engine)
        port = engine.add_insecure_port("127.0.0.1:0")
        await engine.start()
        try:
            return await server.Servicer(f"127.0.0.1:{port}").Diff(
                proto.DiffRequest(urn=URN, id="c1", olds=props, news=props), Context())
        finally:
            await engine.stop(None)
    resp = asyncio.run(diff())
    assert kinds(resp.detailedDiff) == {"running": "UPDATE"}
    assert logged == [("INFO", why, URN)]


def test_check_keeps_unknowns_and_drops_the_serialized_provider_of_earlier_states(mocker):
    mocker.patch.object(rollout, "abandon")
    seen = {}

    def check(olds, news):
        seen.update(olds=olds, news=news)
        return mocker.Mock(inputs=news, failures=[mocker.Mock(property="ports", reason="port 80 is taken"),
                                                  mocker.Mock(property="tag", reason="v1 names another build")])
    mocker.patch.object(schema, "provider_for", return_value=mocker.Mock(check=check))
    resp = call("Check", proto.CheckRequest(urn=URN, olds=struct({"__provider": "p", "image": "sha256:a"}),
                                            news=struct({"image": rpc.UNKNOWN, "ports": ["80"], "tag": "v1"})))
    # as the dynamic-provider server gave them: an unknown value as the SDK's Unknown
    assert seen["olds"] == {"image": "sha256:a"} and seen["news"]["ports"] == ["80"]
    assert isinstance(seen["news"]["image"], Unknown)
    # the engine quotes a named property's value before the reason: a list or map is named in the reason instead
    assert [(f.property, f.reason) for f in resp.failures] == [("", "ports: port 80 is taken"),
                                                               ("tag", "v1 names another build")]
    rollout.abandon.assert_called_once_with()  # a refused input ends the run as a failed operation does


def test_a_replacements_second_check_is_against_what_it_replaces_where_its_kind_asks(mocker):
    """The engine checks a replacement again with no olds, just after its check with them: a container's second
    check compares with what it replaces (so an unchanged proxy looks at no host); another kind's gets no olds."""
    seen = []

    def check(olds, news):
        seen.append(olds)
        return mocker.Mock(inputs=news, failures=[])
    provider = mocker.Mock(check=check, recheck_against_olds=True)
    mocker.patch.object(schema, "provider_for", return_value=provider)
    servicer, olds, news = server.Servicer(), {"name": "shop-web-v1"}, {"name": "shop-web-v2"}
    for before in (olds, {}):
        asyncio.run(servicer.Check(proto.CheckRequest(urn=URN, olds=struct(before), news=struct(news)), Context()))
    assert seen == [olds, olds]
    asyncio.run(servicer.Check(proto.CheckRequest(urn=URN + "2", news=struct(news)), Context()))
    assert seen[-1] == {}  # a new resource: nothing it replaces
    provider.recheck_against_olds = False
    asyncio.run(servicer.Check(proto.CheckRequest(urn=URN, news=struct(news)), Context()))
    assert seen[-1] == {}


def test_a_failed_operation_reaches_the_engine_as_one_line_and_a_bug_says_so(mocker):
    mocker.patch.object(rollout, "abandon")
    provider = mocker.Mock()
    provider.create.side_effect = HostError("h1", "container shop-web did not become healthy within 8s")
    mocker.patch.object(schema, "provider_for", return_value=provider)
    ctx = Context()
    with pytest.raises(RuntimeError, match="aborted"):
        call("Create", proto.CreateRequest(urn=URN, properties=struct({"name": "shop-web"})), ctx)
    assert ctx.aborted == (grpc.StatusCode.UNKNOWN, "host h1: container shop-web did not become healthy within 8s")
    provider.create.side_effect = KeyError("registry_password")
    with pytest.raises(RuntimeError):
        call("Create", proto.CreateRequest(urn=URN, properties=struct({"name": "shop-web"})), ctx)
    assert ctx.aborted[1].startswith("unexpected KeyError: 'registry_password' - this is a bug in shipyard")
    # each failure ends the run: the proxied containers made ready for a rollout that never starts stop first
    assert rollout.abandon.call_count == 2


def test_the_engines_cancel_ends_the_run_as_an_interruption_before_it_answers(mocker):
    """Ctrl-C (and the engine's end of the plugin) sends `Cancel`: what waits for a step that will not come goes
    back, as on a failure, and is said to be an interruption."""
    mocker.patch.object(rollout, "abandon")
    call("Cancel", server.empty_pb2.Empty())
    rollout.abandon.assert_called_once_with(rollout.INTERRUPTED)


def test_create_gets_secrets_plain_and_returns_them_secret_and_the_plugin_has_no_preview_calls(mocker):
    provider = mocker.Mock()
    provider.create.return_value = mocker.Mock(id="c9", outs={"name": "shop-web", "container_id": "c9",
                                                              "secret_env": {"TOKEN": "t0ken"}})
    mocker.patch.object(schema, "provider_for", return_value=provider)
    props = {"name": "shop-web", "secret_env": rpc.wrap_rpc_secret({"TOKEN": "t0ken"})}
    resp = call("Create", proto.CreateRequest(urn=URN, properties=struct(props)))
    provider.create.assert_called_once_with({"name": "shop-web", "secret_env": {"TOKEN": "t0ken"}})
    outs = rpc.deserialize_properties(resp.properties)
    # the state records what the provider computed, not the inputs again; a secret as it was, wrapped
    assert resp.id == "c9" and outs.keys() == {"name", "container_id", "secret_env"} and outs["container_id"] == "c9"
    assert rpc.is_rpc_secret(outs["secret_env"]) and rpc.unwrap_rpc_secret(outs["secret_env"]) == {"TOKEN": "t0ken"}
    configured = call("Configure", proto.ConfigureRequest())
    assert configured.acceptSecrets and not configured.supportsPreview
    assert call("DiffConfig", proto.DiffRequest()).changes == proto.DiffResponse.DIFF_NONE
    assert json.loads(call("GetSchema", proto.GetSchemaRequest()).schema)["name"] == "shipyard"


def test_the_state_records_outputs_beyond_the_inputs_and_the_providers_get_both_merged(mocker):
    """A fleet's state was half inputs repeated as outputs, and the engine writes it whole after each step: outputs
    now keep only what differs from the inputs. Each call that reads the recorded state gets the outputs over the
    inputs - the same as a state written before (outputs and inputs both) gives."""
    provider = mocker.Mock(compared=None, observed=lambda _id, olds: (olds, ""))  # the host shows what the state says
    mocker.patch.object(schema, "provider_for", return_value=provider)
    ins = {"name": "shop-web", "running": True, "retain": 5, "labels": {"role": "web"}}  # `name` is read back
    provider.update.return_value = mocker.Mock(outs={**ins, "container_id": "c2", "retain": True})
    resp = call("Update", proto.UpdateRequest(urn=URN, id="c1", olds=struct({"container_id": "c1"}),
                                              old_inputs=struct(ins), news=struct(ins)))
    provider.update.assert_called_once_with("c1", {**ins, "container_id": "c1"}, ins)
    # the same value of another type (`True` is not `5`, nor would it be `1`) stays recorded
    assert rpc.deserialize_properties(resp.properties) == {"name": "shop-web", "container_id": "c2", "retain": True}

    # a refresh's drift stays in the recorded outputs: the next diff sees what is there now
    provider.read.return_value = mocker.Mock(id="c2", outs={**ins, "container_id": "c2", "running": False},
                                             inputs=None)
    resp = call("Read", proto.ReadRequest(urn=URN, id="c2", properties=struct({"container_id": "c2"}),
                                          inputs=struct(ins)))
    provider.read.assert_called_once_with("c2", {**ins, "container_id": "c2"})
    assert rpc.deserialize_properties(resp.properties) == {"name": "shop-web", "container_id": "c2", "running": False}
    provider.diff.return_value = DiffResult(changes=True, replaces=[], delete_before_replace=False)
    resp = call("Diff", proto.DiffRequest(urn=URN, id="c2", olds=resp.properties, old_inputs=struct(ins),
                                          news=struct(ins)))
    provider.diff.assert_called_once_with("c2", {**ins, "container_id": "c2", "running": False}, ins)
    assert kinds(resp.detailedDiff) == {"running": "UPDATE"}
    assert not resp.detailedDiff["running"].inputDiff  # shown against the recorded outputs: what is there now
    # a changed input the outputs leave out shows against the recorded inputs: `~ labels.role`, not `+ labels`
    resp = call("Diff", proto.DiffRequest(urn=URN, id="c2", olds=struct({"container_id": "c2"}),
                                          old_inputs=struct(ins), news=struct({**ins, "labels": {"role": "jobs"}})))
    assert kinds(resp.detailedDiff) == {"labels.role": "UPDATE"} and resp.detailedDiff["labels.role"].inputDiff

    # a state written before (every input repeated among the outputs) reads the same
    call("Delete", proto.DeleteRequest(urn=URN, id="c2", properties=struct({**ins, "container_id": "c2"}),
                                       old_inputs=struct(ins)))
    provider.delete.assert_called_once_with("c2", {**ins, "container_id": "c2"})


def test_ssh_settings_that_do_not_work_are_never_recorded_and_a_removal_reaches_the_host_as_the_program_does(mocker):
    """A failed `up` with a wrong `ssh.user`: an update whose work needs no host (an image not built again) connects
    with the new settings first, so it fails and the state keeps the user that worked. The next run's program puts
    the user right elsewhere (or changes it): a delete reaches the host as that program does, not as recorded."""
    mocker.patch.object(rollout, "abandon")
    provider = mocker.Mock()
    provider.check.side_effect = lambda olds, news: mocker.Mock(inputs=news, failures=[])
    provider.update.side_effect = lambda _id, olds, news: mocker.Mock(outs=news)
    mocker.patch.object(schema, "provider_for", return_value=provider)
    refused = HostError("h1", "SSH login as nobodyhere was refused")
    connect = mocker.patch.object(server.hosts, "connection", side_effect=refused)
    h1 = {"host": "h1", "port": 22, "user": "deploy", "keys": [], "known_hosts": None, "host_key_policy": "strict"}
    olds = {"tag": "v1", "build_host": h1, "ship_to": [h1, {**h1, "host": "h2"}]}
    news = {"tag": "v1", "build_host": {**h1, "user": "nobodyhere"}, "ship_to": [{**h1, "user": "nobodyhere"},
                                                                                {**h1, "host": "h2"}]}
    servicer, ctx = server.Servicer(), Context()
    with pytest.raises(RuntimeError, match="aborted"):
        asyncio.run(servicer.Update(proto.UpdateRequest(urn=URN, id="i1", olds=struct(olds), news=struct(news)), ctx))
    assert ctx.aborted[1] == "host h1: SSH login as nobodyhere was refused"
    provider.update.assert_not_called()
    assert [t.user for t in connect.call_args_list[0].args] == ["nobodyhere"]  # once for h1's one new way

    connect.side_effect, connect.return_value = None, mocker.Mock()
    asyncio.run(servicer.Update(proto.UpdateRequest(urn=URN, id="i1", olds=struct(olds), news=struct(olds)), ctx))
    connect.assert_called_once()  # nothing new to reach: no extra connection
    provider.update.assert_called_once()

    servicer = server.Servicer()  # the next run: its program reaches h1 as `admin`, h2 through a preview's unknown
    asyncio.run(servicer.Check(proto.CheckRequest(urn=URN, olds=struct({}), news=struct(
        {"target": {**h1, "user": "admin"}, "ship_to": [{**h1, "host": "h2", "user": rpc.UNKNOWN}]})), Context()))
    asyncio.run(servicer.Delete(proto.DeleteRequest(urn=URN, id="i1", properties=struct(olds)), Context()))
    removed = provider.delete.call_args.args[1]
    assert removed["build_host"]["user"] == "admin" and [t["user"] for t in removed["ship_to"]] == ["admin", "deploy"]


def test_the_destination_says_in_one_line_what_goes_where(mocker):
    """Named as what it deploys: its `destination` input, else the stack (not the component's resource name)."""
    from pulumi import Output

    from components.plugin.destination import _plan

    async def outlined(settings: dict) -> str:
        return await _plan(Output.from_input(settings), None)

    def plan(settings: dict) -> str:
        return asyncio.run(outlined(settings))
    mocker.patch("pulumi.get_stack", return_value="staging")
    assert plan({"image": "acme/shop", "servers": {"web": {"hosts": ["h1", "h2"]}, "jobs": ["h2"]},
                 "accessories": {"db": {"host": "h3"}, "cache": {"hosts": ["h1"]}}}) == \
        "destination staging: image acme/shop, web on h1, h2; jobs on h2; accessory db on h3; accessory cache on h1"
    assert plan({"image": "acme/shop", "servers": ["h1"], "destination": "review"}) == \
        "destination review: image acme/shop, web on h1"


@pytest.mark.parametrize("settings, line", [
    ({"servers": [Unknown()]}, "destination staging: image acme/shop, web on a host known once it exists"),
    ({"servers": ["h1"], "registry": {"password": Unknown()}}, "destination staging: image acme/shop, web on h1"),
])
def test_a_preview_with_a_setting_not_known_yet_says_why_it_lists_none_of_the_destinations_resources(
        mocker, settings, line):
    """A server not created yet, or whose update changes its address; a password an update of its store changes:
    the resources are declared at `up`, so a preview shows those deployed before as deletes - and says why."""
    from pulumi import Output

    from components.plugin.destination import UNDECLARED, _plan
    mocker.patch("pulumi.get_stack", return_value="staging")
    info = mocker.patch("pulumi.log.info")

    async def outlined() -> str:
        return await _plan(Output.from_input({"image": "acme/shop", **settings}), None)
    assert asyncio.run(outlined()) == line
    info.assert_called_once_with(f"{line} - {UNDECLARED}", resource=None)


def test_a_connection_that_broke_where_no_step_said_so_is_named_with_its_host_not_called_a_bug():
    from components.plugin.server import message
    props = {"target": {"host": "10.0.0.5", "user": "deploy"}, "name": "shop-web-staging-v2"}
    said = message(EOFError(), "creating shop-web-staging-v2@10.0.0.5", props)
    assert said.startswith("host 10.0.0.5: the connection broke while creating shop-web-staging-v2@10.0.0.5 "
                           "(EOFError: EOFError); nothing after that point was done: run `pulumi up` again"), said
    assert "bug" in message(KeyError("x"), "creating it", props)  # not about the host: still a bug
    assert "bug" in message(EOFError(), "creating it", {})  # no host to name


@pytest.mark.parametrize("module, never", [
    # the plugin serves the resource kinds without the config's models or the program, which only the
    # `Destination` component's schema needs
    ("components.plugin.server", ("pydantic", "components.config", "components.program")),
    # the program declares resources; what is behind them runs in the plugin's process
    ("components.program", ("components.providers", "docker", "paramiko")),
])
def test_every_run_starts_its_program_and_plugin_without_what_they_never_use(module, never):
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules for n in {never!r} " \
            f"if m == n or m.startswith(n + '.')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
