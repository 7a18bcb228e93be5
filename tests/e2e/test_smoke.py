"""The real Pulumi engine, offline, with the file backend: up / preview / destroy of a tiny program holding one
Python dynamic resource."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Project, pulumi_env

pytestmark = pytest.mark.e2e

PROGRAM = '''
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider
from note import NoteProvider

class Note(Resource, module="smoke", name="Note"):
    def __init__(self, name, text):
        super().__init__(NoteProvider(), name, {"text": text, "path": None})

note = Note("note", pulumi.Config().require("text"))
pulumi.export("path", note.path)
'''

PROVIDER = '''
import os, tempfile
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

class NoteProvider(ResourceProvider):
    def create(self, props):
        fd, path = tempfile.mkstemp(prefix="smoke-note-")
        with os.fdopen(fd, "w") as fh:
            fh.write(props["text"])
        return CreateResult(path, {**props, "path": path})

    def diff(self, _id, olds, news):
        return DiffResult(changes=olds["text"] != news["text"])

    def update(self, _id, olds, news):
        with open(olds["path"], "w") as fh:
            fh.write(news["text"])
        return UpdateResult({**news, "path": olds["path"]})

    def delete(self, _id, props):
        os.unlink(props["path"])
'''


def test_up_preview_destroy_offline(tmp_path: Path):
    proj = tmp_path / "smoke"
    proj.mkdir()
    (proj / "Pulumi.yaml").write_text("name: smoke\nruntime: python\n")
    (proj / "__main__.py").write_text(PROGRAM)
    (proj / "note.py").write_text(PROVIDER)
    state = tmp_path / "state"
    state.mkdir()
    p = Project(proj, pulumi_env(state))

    assert p.run("version").out.strip().startswith("v3.")
    p.run("stack", "init", "dev")
    p.run("config", "set", "text", "hello", stack="dev")
    p.run("up", "--yes", stack="dev")
    path = Path(json.loads(p.run("stack", "output", "--json", stack="dev").out)["path"])
    assert path.read_text() == "hello"

    assert "2 unchanged" in p.run("preview", "--expect-no-changes", stack="dev").out
    p.run("config", "set", "text", "changed", stack="dev")
    preview = p.run("preview", "--diff", stack="dev").out
    assert "~ 1 to update" in preview and '"hello" => "changed"' in preview
    p.run("up", "--yes", stack="dev")
    assert path.read_text() == "changed"

    p.run("destroy", "--yes", stack="dev")
    assert not path.exists()
    # the state lives in the file backend we pointed at, nowhere else
    assert any(state.rglob("dev.json"))
