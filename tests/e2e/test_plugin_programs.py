"""The `shipyard` plugin from programs of their own: a Python program (through the generated SDK) whose host address
comes from another resource (unknown at the first preview, which still says what goes where), and a Pulumi YAML
program. Both deploy the example app to a bench host through `shipyard:index:Destination`, serve it, and then have
nothing to change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from components.plugin.destination import UNDECLARED
from tests.bench import AUTH_REGISTRY_USER
from tests.conftest import REPO, Project, app_head, host_docker, http_get, make_project, pulumi_env, ssh_config

pytestmark = pytest.mark.e2e

GREETING = "from-the-secret-store"
PLUGIN = {"plugins": {"providers": [{"name": "shipyard", "path": "./components/plugin"}]}}

PROGRAM = '''
import json
import subprocess
from pathlib import Path

import pulumi
import pulumi_shipyard as shipyard
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


class Handout(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=f"{props['given']}-{props['generation']}", outs={**props, "address": props["given"]})

    def diff(self, _id, olds, news):
        changed = [k for k in ("given", "generation") if olds.get(k) != news[k]]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class Server(Resource):
    """Stands for a cloud VM: its address is known once it exists (a new generation replaces it)."""
    address: pulumi.Output[str]

    def __init__(self, name, given, generation):
        super().__init__(Handout(), name, {"given": given, "generation": generation, "address": None})


class Keep(ResourceProvider):
    def create(self, props):
        return CreateResult(id_="entry", outs={"value": props["value"]})


class Entry(Resource):
    """Stands for a secret store's entry: its value is an output, and a secret."""
    value: pulumi.Output[str]

    def __init__(self, name, value):
        super().__init__(Keep(), name, {"value": pulumi.Output.secret(value)})


settings = json.loads(Path("settings.json").read_text())
server = Server("vm", settings.pop("host"), settings.pop("generation", 1))
password, greeting = Entry("registry-password", settings.pop("password")), Entry("greeting", settings.pop("greeting"))
app = shipyard.Destination("staging", servers={"web": {"hosts": [server.address]}}, project_dir=str(Path.cwd()),
                           registry={**settings.pop("registry"), "password": password.value},
                           env={"secret": ["GREETING"]}, secrets={"GREETING": greeting.value}, **settings)
pulumi.export("urls", app.urls)
pulumi.export("version", app.version)
pulumi.export("plan", app.plan)
pulumi.export("containers", app.containers)
'''


def settings(bench, name: str) -> dict:
    return {"service": name, "image": f"acme/{name}", "builder": {"context": "app"},
            "registry": {"server": bench.registry}, "ssh": ssh_config(bench),
            "proxy": {"hosts": [f"{name}.test"], "healthcheck": {"interval": 0.3, "timeout": 2},
                      "deploy_timeout": 10, "drain_timeout": 1}}


def program(tmp_path: Path, name: str, runtime: dict | str, **more) -> Project:
    """A project of its own (the example app, `components/` linked) whose Pulumi.yaml names the plugin."""
    (tmp_path / "state").mkdir()
    proj = Project(make_project(tmp_path), pulumi_env(tmp_path / "state"))
    (proj.dir / "__main__.py").unlink()
    (proj.dir / "Pulumi.yaml").write_text(yaml.safe_dump({"name": name, "runtime": runtime, **PLUGIN, **more},
                                                         sort_keys=False))
    return proj


def serves(bench, name: str) -> str:
    return http_get(f"http://{bench.hosts[0].address}/", host_header=f"{name}.test")


def test_a_python_program_deploys_to_a_host_that_another_resource_hands_out(bench, tmp_path):
    """The host address, the registry password and a secret env value all come from other resources' outputs (a
    VM, a secret store's entries): the secrets stay secrets. A VM replaced later hides its address from the
    preview, which says why it lists the destination's resources as deletes; the `up` keeps them."""
    proj = program(tmp_path, "compose", "python")  # as the README's: PULUMI_PYTHON_CMD names the Python
    (proj.dir / "__main__.py").write_text(PROGRAM)
    host = bench.hosts[0].address
    (proj.dir / "settings.json").write_text(json.dumps({
        **settings(bench, "compose"), "host": host, "registry": {"server": bench.auth_registry,
                                                                 "username": AUTH_REGISTRY_USER},
        "password": bench.auth_registry_password, "greeting": GREETING}))
    proj.run("stack", "init", "staging")
    try:
        # the first preview: the server does not exist yet, so neither does its address
        preview = proj.run("preview", stack="staging").out
        assert "+  shipyard:index:Destination staging create destination staging: image acme/compose, web on a host " \
            "known once it exists" in preview, preview
        assert "shipyard:index:Destination" in preview and "create" in preview
        proj.up("staging")
        out = proj.outputs("staging")
        assert out["plan"] == f"destination staging: image acme/compose, web on {host}"
        assert out["version"] == app_head(proj.dir), out
        answer = serves(bench, "compose")
        assert answer.startswith("service=compose destination=staging") and f"greeting={GREETING}" in answer, answer
        preview = proj.run("preview", "--diff", "--expect-no-changes", stack="staging").out
        state = proj.run("stack", "export", stack="staging").out
        for value in (GREETING, bench.auth_registry_password):
            assert value not in state + preview

        saved = json.loads((proj.dir / "settings.json").read_text())
        (proj.dir / "settings.json").write_text(json.dumps({**saved, "generation": 2}))
        preview = proj.run("preview", stack="staging").out
        assert f"web on a host known once it exists - {UNDECLARED}" in preview and "to delete" in preview, preview
        proj.up("staging")
        assert proj.outputs("staging")["containers"] == out["containers"]  # the same host: nothing moved
        assert serves(bench, "compose").startswith("service=compose destination=staging")
        proj.run("preview", "--expect-no-changes", stack="staging")
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)
    assert not host_docker(bench.hosts[0]).containers(all=True, filters={"label": "service=compose"})


def test_a_yaml_program_deploys_the_example_app(bench, tmp_path):
    props = {**settings(bench, "yamlapp"), "servers": {"web": {"hosts": [bench.hosts[0].address]}},
             "project_dir": "${pulumi.cwd}"}
    proj = program(tmp_path, "yamlapp", "yaml",
                   resources={"app": {"type": "shipyard:index:Destination", "properties": props}},
                   outputs={"urls": "${app.urls}", "containers": "${app.containers}"})
    proj.run("stack", "init", "staging")
    try:
        proj.up("staging")
        out = proj.outputs("staging")
        assert out["urls"] == ["http://yamlapp.test"], out
        assert list(out["containers"][bench.hosts[0].address]) == ["web"], out
        assert serves(bench, "yamlapp").startswith("service=yamlapp destination=staging"), serves(bench, "yamlapp")
        proj.run("preview", "--expect-no-changes", stack="staging")
    finally:
        proj.run("destroy", "--yes", stack="staging", check=False)


def test_a_bad_setting_from_a_program_is_one_line_naming_the_property(bench, tmp_path):
    props = {**settings(bench, "Bad_Name"), "servers": {"web": {"hosts": [bench.hosts[0].address]}}}
    proj = program(tmp_path, "yamlbad", "yaml",
                   resources={"app": {"type": "shipyard:index:Destination", "properties": props}})
    proj.run("stack", "init", "staging")
    out = proj.run("preview", stack="staging", check=False)
    assert not out.ok
    # named as the destination it deploys (the stack's), not as the resource `app`
    assert "- property service with value \"Bad_Name\" has a problem: destination staging: 'Bad_Name' is not " \
           "allowed here" in out.out, out.out
    assert "Traceback" not in out.out and "Unexpected" not in out.out, out.out


def test_a_yaml_programs_misspelt_setting_is_refused_by_the_schemas_types(bench, tmp_path):
    """The schema types the component's settings as the stack's config takes them, so Pulumi YAML checks a program
    before anything runs: a misspelt key is named with its line, and nothing reaches a host."""
    props = {**settings(bench, "yamltypo"), "servers": {"web": {"hosts": [bench.hosts[0].address]}}}
    props["proxy"] = {"hostz": props["proxy"]["hosts"]}
    proj = program(tmp_path, "yamltypo", "yaml",
                   resources={"app": {"type": "shipyard:index:Destination", "properties": props}})
    proj.run("stack", "init", "staging")
    out = proj.run("up", "--yes", stack="staging", check=False)
    assert not out.ok
    assert "Property hostz does not exist on 'shipyard:index:ProxySettings'" in out.out, out.out
    assert "Existing properties are: hosts" in out.out, out.out
    assert not host_docker(bench.hosts[0]).containers(all=True, filters={"label": "service=yamltypo"})


def test_the_cli_reads_the_plugins_schema(tmp_path):
    (tmp_path / "state").mkdir()
    env = pulumi_env(tmp_path / "state")
    proc = subprocess.run(["pulumi", "package", "get-schema", str(REPO / "components/plugin/pulumi-resource-shipyard")],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(proc.stdout)
    assert doc["name"] == "shipyard"
    assert doc["resources"]["shipyard:index:Destination"]["isComponent"] is True
    assert doc["resources"]["shipyard:index:Container"]["properties"]["secret_env"]["secret"] is True
