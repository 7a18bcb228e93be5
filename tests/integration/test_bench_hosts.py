"""The bench's hosts are separate machines as far as SSH sessions can tell: each has its own home and /tmp."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from components import hostfiles, hosts
from tests.conftest import pulled
from tests.integration.test_hosts import target

pytestmark = pytest.mark.integration


def test_a_file_written_over_sftp_to_host1_is_on_host1_only(bench):
    one, two = target(bench, 0), target(bench, 1)
    home = hostfiles.home(one)
    assert hostfiles.home(two) == home  # the same user and path on both hosts...
    name = f"probe-{uuid.uuid4().hex[:8]}"
    for path in (f"{home}/.shipyard-probe/{name}", f"/tmp/{name}"):
        hostfiles.write_file(one, path, b"written to host1", mode=0o640)
        try:
            assert hostfiles.file_mode(one, path) == 0o640
            assert hostfiles.file_mode(two, path) is None  # ...but not the same disk
            assert not Path(path).exists()  # nor this machine's
            assert bench.hosts[0].local_path(path).read_bytes() == b"written to host1"
        finally:
            hostfiles.remove_file(one, path)


def test_a_container_on_host1_sees_the_files_sftp_wrote_there(bench):
    # dockerd shares its host's filesystem with SSH sessions: what the deployer uploads, a bind mount finds
    one = target(bench, 0)
    path = f"{hostfiles.home(one)}/.shipyard-probe/{uuid.uuid4().hex[:8]}.txt"
    hostfiles.write_file(one, path, b"uploaded to host1\n", mode=0o644)
    c = hosts.client(one)
    cid = c.create_container(pulled(c, "busybox:latest"), command=["cat", "/probe.txt"],
                             host_config=c.create_host_config(binds=[f"{path}:/probe.txt:ro"]))["Id"]
    try:
        c.start(cid)
        assert c.wait(cid, timeout=30)["StatusCode"] == 0
        assert c.logs(cid).decode() == "uploaded to host1\n"
    finally:
        c.remove_container(cid, force=True)
        hostfiles.remove_file(one, path)



def test_the_bench_names_what_runs_on_its_hosts_by_stack(bench_ctl, bench):
    """`make demo-down` stops the bench only when nothing else runs there (`python -m tests.bench in-use`): a
    running container is named by the stack that owns it, or by its name; a stopped one is not, nor is kamal-proxy."""
    c = hosts.client(target(bench, 2))
    image = pulled(c, "busybox:latest")
    owner = f"mine/{uuid.uuid4().hex[:8]}"
    made = [c.create_container(image, command=["sleep", "60"], name=name, labels=labels)["Id"]
            for name, labels in ((f"app-{owner[5:]}", {"shipyard.stack": owner}), (f"plain-{owner[5:]}", {}),
                                 (f"stopped-{owner[5:]}", {"shipyard.stack": f"{owner}-stopped"}))]
    try:
        for cid in made[:2]:
            c.start(cid)
        found = bench_ctl.in_use()
        assert found[f"stack {owner}"] == ["host3"], found
        assert found[f"container plain-{owner[5:]}"] == ["host3"], found
        assert f"stack {owner}-stopped" not in found and "container kamal-proxy" not in found, found
    finally:
        for cid in made:
            c.remove_container(cid, force=True)
    assert f"stack {owner}" not in bench_ctl.in_use()
