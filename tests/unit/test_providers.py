"""Provider logic against a fake Docker client. The fake is autospecced from docker.APIClient, so a call with a
wrong signature fails here as it would on a real host."""

from __future__ import annotations

import docker
import pytest

from components import providers
from components.errors import HealthCheckFailed, OwnershipConflict

OWNER = "organization/shipyard/staging"
OURS = {"shipyard.stack": OWNER, "destination": "staging", "service": "hello", "role": "web"}


@pytest.fixture
def client(mocker):
    c = mocker.create_autospec(docker.APIClient, instance=True)
    mocker.patch("components.hosts.client", return_value=c)
    c.containers.return_value = []
    c.create_container.return_value = {"Id": "new" * 8}
    c.create_host_config.return_value = {}
    c.inspect_container.return_value = {"State": {"Running": True, "ExitCode": 0}}
    mocker.patch("components.providers.time.sleep")
    return c


def container_props(**over):
    return {"owner": OWNER, "destination": "staging", "role": "web",
            "target": {"host": "h1", "port": 22, "user": "root", "keys": [], "known_hosts": None,
                       "host_key_policy": "strict"},
            "name": "hello-web-staging-v1", "labels": {**OURS, "version": "v1"}, "image": "sha256:" + "a" * 64,
            "cmd": None, "env": {"A": "1"}, "secret_env": {"S": "s3cret"},
            "ports": [{"host_ip": None, "host_port": 8080.0, "container_port": 80.0, "protocol": "tcp"}],
            "volumes": [], "restart": "unless-stopped", "running": True, **over}


def test_create_refuses_a_name_another_destination_owns_and_changes_nothing(client):
    client.containers.return_value = [{"Id": "x" * 64, "Names": ["/hello-web-staging-v1"],
                                       "Labels": {"destination": "production", "shipyard.stack": "o/p/production"}}]
    with pytest.raises(OwnershipConflict, match="belongs to stack o/p/production .destination production.; "
                                                "nothing was changed"):
        providers.ContainerProvider().create(container_props())
    client.rename.assert_not_called()
    client.create_container.assert_not_called()
    client.remove_container.assert_not_called()
    client.stop.assert_not_called()


def test_create_pins_the_image_id_and_passes_the_runtime_settings(client):
    result = providers.ContainerProvider().create(container_props())
    kwargs = client.create_container.call_args.kwargs
    assert kwargs["image"] == "sha256:" + "a" * 64
    assert kwargs["name"] == "hello-web-staging-v1"
    assert kwargs["environment"] == ["A=1", "S=s3cret"]
    assert kwargs["labels"]["destination"] == "staging"
    assert client.create_host_config.call_args.kwargs["port_bindings"] == {"80/tcp": [8080]}
    assert client.create_host_config.call_args.kwargs["restart_policy"]["Name"] == "unless-stopped"
    client.start.assert_called_once_with("new" * 8)
    assert result.id == "new" * 8


def test_same_name_of_our_own_is_renamed_aside_and_restored_if_the_new_one_dies(client):
    old = {"Id": "o" * 64, "Names": ["/hello-web-staging-v1"], "Labels": {**OURS, "version": "v1"}}
    holder = {"Id": "o" * 64, "Ports": [{"PublicPort": 8080}]}
    client.containers.side_effect = lambda **kw: [holder] if kw.get("filters", {}).get("status") else [old]
    client.inspect_container.return_value = {"State": {"Running": False, "ExitCode": 3}}
    client.logs.return_value = b"boom"
    with pytest.raises(HealthCheckFailed, match="exited with code 3 right after starting; it was removed"):
        providers.ContainerProvider().create(container_props())
    assert client.rename.call_args_list[0].args == ("o" * 64, "hello-web-staging-v1_replaced_oooooooooooo")
    assert client.rename.call_args_list[-1].args == ("o" * 64, "hello-web-staging-v1")  # put back
    client.stop.assert_called_once_with("o" * 64, timeout=providers.STOP_TIMEOUT_S)  # port handed over...
    client.start.assert_any_call("o" * 64)  # ...and back
    client.remove_container.assert_called_once_with("new" * 8, force=True)


def test_container_diff_is_exact():
    p = providers.ContainerProvider()
    olds = {**container_props(), "container_id": "c1", "__provider": "old"}
    assert not p.diff("c1", olds, {**container_props(), "__provider": "new"}).changes
    d = p.diff("c1", olds, container_props(image="sha256:" + "b" * 64))
    assert d.changes and d.replaces == ["image"]
    d = p.diff("c1", {**olds, "running": False}, container_props())
    assert d.changes and d.replaces == []
    d = p.diff("c1", olds, container_props(secret_env={"S": "rotated"}))
    assert d.replaces == ["secret_env"]


def test_delete_never_touches_a_container_that_is_not_ours(client):
    client.inspect_container.return_value = {"Config": {"Labels": {"destination": "production"}}}
    with pytest.raises(OwnershipConflict, match="left alone"):
        providers.ContainerProvider().delete("c1", container_props())
    client.stop.assert_not_called()
    client.remove_container.assert_not_called()


def test_read_reports_drift(client):
    client.inspect_container.return_value = {"Image": "sha256:" + "b" * 64, "State": {"Running": False},
                                             "Name": "/hello-web-staging-v1",
                                             "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}}}
    r = providers.ContainerProvider().read("c1", container_props())
    assert r.outs["image"] == "sha256:" + "b" * 64 and r.outs["running"] is False
    client.inspect_container.side_effect = docker.errors.NotFound("gone")
    assert providers.ContainerProvider().read("c1", container_props()).id == ""


def image_props(**over):
    t = {"host": "h1", "port": 22, "user": "root", "keys": [], "known_hosts": None, "host_key_policy": "strict"}
    return {"owner": OWNER, "destination": "staging", "build_host": t, "ship_to": [t], "tag": "acme/hello:v1-staging",
            "labels": {"destination": "staging", "service": "hello", "shipyard.stack": OWNER},
            "context_hash": "sha256:1",
            "registry_server": None, **over}


def test_image_diff_replaces_on_build_inputs_and_updates_on_new_hosts():
    p = providers.ImageProvider()
    olds = {**image_props(), "image_id": "sha256:i", "hosts": ["h1"]}
    assert not p.diff("i", olds, image_props()).changes
    assert p.diff("i", olds, image_props(context_hash="sha256:2")).replaces == ["context_hash"]
    assert p.diff("i", olds, image_props(tag="acme/hello:v2-staging")).replaces == ["tag"]
    more = image_props(ship_to=[image_props()["build_host"], {**image_props()["build_host"], "host": "h2"}])
    d = p.diff("i", olds, more)
    assert d.changes and d.replaces == []
    d = p.diff("i", {**olds, "hosts": []}, image_props())  # refresh found it missing
    assert d.changes and d.replaces == []


def test_image_delete_leaves_other_destinations_images_alone(client):
    client.inspect_image.return_value = {"Config": {"Labels": {"destination": "production",
                                                               "shipyard.stack": "o/shipyard/production"}},
                                         "RepoTags": ["acme/hello:v1-staging"]}
    providers.ImageProvider().delete("sha256:i", image_props())
    client.remove_image.assert_not_called()


def test_image_create_refuses_a_tag_someone_else_owns(client):
    client.inspect_image.return_value = {"Config": {"Labels": {"destination": "production"}}}
    with pytest.raises(OwnershipConflict, match="image tag acme/hello:v1-staging belongs to destination production"):
        providers.ImageProvider().create(image_props())
    client.build.assert_not_called()
