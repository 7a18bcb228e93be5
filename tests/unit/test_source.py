"""The build context on disk (what is sent, its tar and hash, the checks) and the default version, against real
files and real git repositories in temporary directories."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from components import source
from components.errors import ConfigError


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}


# --- what is sent ------------------------------------------------------------------------------------------------

def test_the_issues_dockerignore_cases_on_disk(tmp_path):
    write(tmp_path, {"Dockerfile": "FROM busybox\n", "secret.env": "X=1\n", "conf/db.env": "Y=2\n", "app.sh": "",
                     "tmp/cache": "", "log/app.log": "", "src/tmp/keep": "", "src/log/keep": "",
                     ".dockerignore": "**/*.env\n/tmp\n./log\n"})
    ctx = source.build_context(tmp_path, "Dockerfile")
    assert ctx.files == [".dockerignore", "Dockerfile", "app.sh", "src/log/keep", "src/tmp/keep"]
    assert sorted(tar_members(ctx.tar())) == [".dockerignore", "Dockerfile", "app.sh", "conf", "src", "src/log",
                                              "src/log/keep", "src/tmp", "src/tmp/keep"]


def test_the_tar_is_reproducible_and_keeps_modes_links_and_empty_directories(tmp_path):
    write(tmp_path, {"Dockerfile": "FROM busybox\n", "bin/run": "#!/bin/sh\n", "data/x": "x"})
    (tmp_path / "bin/run").chmod(0o755)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("bin/run")
    (tmp_path / "dirlink").symlink_to("data")
    ctx = source.build_context(tmp_path, "Dockerfile")
    data = ctx.tar()
    assert data == source.build_context(tmp_path, "Dockerfile").tar()
    members = tar_members(data)
    assert sorted(members) == ["Dockerfile", "bin", "bin/run", "data", "data/x", "dirlink", "empty", "link"]
    assert members["bin/run"].mode == 0o755 and members["Dockerfile"].mode == 0o644
    assert members["empty"].isdir() and members["dirlink"].issym() and members["dirlink"].linkname == "data"
    assert members["link"].linkname == "bin/run"
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}
    assert ctx.hash == source.HASH_PREFIX + hashlib.sha256(data).hexdigest()


def test_the_hash_follows_what_is_sent_and_only_that(tmp_path):
    write(tmp_path, {"Dockerfile": "FROM busybox\n", "app.sh": "echo hi\n", "secret.env": "X=1\n",
                     ".dockerignore": "*.env\n"})
    h1 = source.context_hash(tmp_path, "Dockerfile")
    (tmp_path / "secret.env").write_text("X=2\n")
    assert source.context_hash(tmp_path, "Dockerfile") == h1  # an ignored file does not count
    (tmp_path / "app.sh").chmod(0o755)
    h2 = source.context_hash(tmp_path, "Dockerfile")
    assert h2 != h1  # a mode does
    (tmp_path / "new").mkdir()
    assert source.context_hash(tmp_path, "Dockerfile") != h2  # so does an empty directory


def test_a_dockerfile_in_an_excluded_directory_is_still_sent_and_paths_are_normalised(tmp_path):
    write(tmp_path, {"docker/Dockerfile.prod": "FROM busybox\n", "docker/notes": "", "app.sh": "",
                     ".dockerignore": "docker\n"})
    ctx = source.build_context(tmp_path, "./docker//Dockerfile.prod")
    assert ctx.dockerfile == "docker/Dockerfile.prod"
    assert ctx.files == [".dockerignore", "app.sh", "docker/Dockerfile.prod"]
    assert source.build_context(tmp_path, str(tmp_path / "docker/Dockerfile.prod")).dockerfile == \
        "docker/Dockerfile.prod"


def test_context_tar_refuses_a_context_that_changed_since_it_was_planned(tmp_path):
    write(tmp_path, {"Dockerfile": "FROM busybox\n"})
    planned = source.context_hash(tmp_path, "Dockerfile")
    assert source.context_tar(tmp_path, "Dockerfile", expect_hash=planned)
    (tmp_path / "Dockerfile").write_text("FROM busybox:other\n")
    with pytest.raises(ConfigError, match="^builder.context: .* changed while this deploy was running"):
        source.context_tar(tmp_path, "Dockerfile", expect_hash=planned)


# --- one-line errors up front ------------------------------------------------------------------------------------

@pytest.mark.parametrize("setup,context,dockerfile,expected", [
    (lambda d: None, "missing", "Dockerfile",
     r"^builder.context: directory .*/missing does not exist: set builder.context to the app's directory"),
    (lambda d: write(d, {"afile": ""}), "afile", "Dockerfile",
     r"^builder.context: .*/afile is not a directory"),
    (lambda d: write(d, {"app/x": ""}), "app", "Dockerfile",
     r"^builder.dockerfile: Dockerfile not found in .*/app: create it, or set builder.dockerfile to its path "
     r"relative to builder.context$"),
    (lambda d: write(d, {"Dockerfile": "FROM x\n", "app/x": ""}), "app", "../Dockerfile",
     r"^builder.dockerfile: ../Dockerfile is outside builder.context \(.*/app\); the builder only gets the "
     r"context: move the Dockerfile into it"),
    (lambda d: (write(d, {"Dockerfile": "FROM x\n"}), (d / "app").mkdir(), (d / "app/Dockerfile").symlink_to(
        d / "Dockerfile")), "app", "Dockerfile", r"^builder.dockerfile: Dockerfile is outside builder.context"),
    (lambda d: write(d, {"app/Dockerfile/x": ""}), "app", "Dockerfile",
     r"^builder.dockerfile: .*/app/Dockerfile is not a file"),
    (lambda d: write(d, {"app/Dockerfile": "FROM x\n", "app/.dockerignore": "ok\n[oops\n"}), "app", "Dockerfile",
     r"^builder.context: .*/app/.dockerignore line 2: '\[oops' is not a valid pattern .*; fix or remove that "
     r"line$"),
])
def test_a_bad_context_is_one_line_naming_the_key(tmp_path, setup, context, dockerfile, expected):
    setup(tmp_path)
    with pytest.raises(ConfigError) as err:
        source.build_context(tmp_path / context, dockerfile)
    assert "\n" not in str(err.value)
    assert err.value.path in ("builder.context", "builder.dockerfile")
    assert re.search(expected, str(err.value)), str(err.value)


def test_an_unreadable_file_is_named_when_the_context_is_read(tmp_path, mocker):
    write(tmp_path, {"Dockerfile": "FROM busybox\n", "keys/locked.pem": "k"})
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.pem":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    mocker.patch.object(Path, "read_bytes", autospec=True, side_effect=read_bytes)
    ctx = source.build_context(tmp_path, "Dockerfile")
    with pytest.raises(ConfigError, match=r"^builder.context: cannot read .*/keys/locked.pem \(Permission denied\): "
                                          r"make it readable by this user or exclude it in .dockerignore$"):
        ctx.hash
    (tmp_path / ".dockerignore").write_text("keys/\n")
    assert source.build_context(tmp_path, "Dockerfile").hash  # excluded: never read


def test_an_unreadable_directory_is_named(tmp_path, mocker):
    write(tmp_path, {"Dockerfile": "FROM busybox\n", "private/x": ""})
    real = os.scandir

    def scandir(path):
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    mocker.patch("components.source.os.scandir", side_effect=scandir)
    with pytest.raises(ConfigError, match=r"^builder.context: cannot read .*/private \(Permission denied\)"):
        source.build_context(tmp_path, "Dockerfile")


# --- the default version -----------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(repo), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def repo_with(root: Path, files: dict[str, str]) -> str:
    """A git repository at `root` holding `files`, committed; returns the short commit."""
    write(root, files)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "c")
    return git(root, "rev-parse", "--short=12", "HEAD")


def version(context: Path, dockerfile: str = "Dockerfile") -> str:
    return source.git_version(source.build_context(context, dockerfile))


APP = {"Dockerfile": "FROM busybox\nCOPY . /app\n", "app.sh": "echo hi\n", ".dockerignore": ".git\n"}


def test_not_a_git_checkout_asks_for_a_version(tmp_path):
    write(tmp_path, APP)
    with pytest.raises(ConfigError, match="^version: not set, and .* is not a git checkout with a commit: set it "
                                          r"with `pulumi config set shipyard:version VERSION` \(from a program: "
                                          r"the `version` input\)$"):
        version(tmp_path)


def test_a_context_that_is_exactly_the_commit_is_the_bare_commit(tmp_path):
    head = repo_with(tmp_path, {**APP, "lib/util.sh": "", "link": ""})
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to("app.sh")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "link")
    head = git(tmp_path, "rev-parse", "--short=12", "HEAD")
    assert version(tmp_path) == head
    assert version(tmp_path) == head  # and stays so


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: (d / "app.sh").write_text("echo changed\n"), id="a tracked file changed"),
    pytest.param(lambda d: (d / "notes.txt").write_text("new\n"), id="an untracked file"),
    pytest.param(lambda d: (d / "app.sh").unlink(), id="a tracked file deleted"),
    pytest.param(lambda d: (d / "app.sh").chmod(0o755), id="a mode changed"),
    pytest.param(lambda d: (d / "app.sh").chmod(0o664), id="a group-writable checkout"),
    pytest.param(lambda d: (d / "cache").mkdir(), id="an empty directory"),
    pytest.param(lambda d: (d / ".dockerignore").write_text("*.md\n"), id="the .dockerignore changed (.git sent)"),
])
def test_anything_the_commit_does_not_hold_makes_it_dirty(tmp_path, change):
    head = repo_with(tmp_path, APP)
    change(tmp_path)
    ctx = source.build_context(tmp_path, "Dockerfile")
    assert source.git_version(ctx) == f"{head}-dirty-{ctx.hash.split(':')[-1][:8]}"


def test_git_ignored_files_in_the_context_make_it_dirty_although_git_status_is_clean(tmp_path):
    head = repo_with(tmp_path, {**APP, ".gitignore": "local.cfg\nbuild/\n"})
    write(tmp_path, {"local.cfg": "token=abc\n"})
    assert git(tmp_path, "status", "--porcelain") == ""
    v1 = version(tmp_path)
    assert v1.startswith(f"{head}-dirty-")
    (tmp_path / "local.cfg").write_text("token=xyz\n")
    assert version(tmp_path) not in (head, v1)  # other content, other version
    (tmp_path / "local.cfg").write_text("token=abc\n")
    assert version(tmp_path) == v1  # the same tree, the same version
    (tmp_path / "local.cfg").unlink()
    write(tmp_path, {"build/out.bin": "x"})
    assert version(tmp_path) != head
    (tmp_path / ".dockerignore").write_text(".git\nbuild/\n")  # excluded from the context: it no longer counts...
    assert version(tmp_path).startswith(f"{head}-dirty-")  # ...but the changed .dockerignore itself does
    git(tmp_path, "commit", "-qam", "ignore build")
    assert version(tmp_path) == git(tmp_path, "rev-parse", "--short=12", "HEAD")


def test_a_sent_git_directory_makes_it_dirty_and_warns(tmp_path):
    head = repo_with(tmp_path, {"Dockerfile": "FROM busybox\n"})
    ctx = source.build_context(tmp_path, "Dockerfile")
    assert source.git_version(ctx).startswith(f"{head}-dirty-")
    assert ctx.warnings() and "add `.git` to .dockerignore" in ctx.warnings()[0]
    assert source.build_context(tmp_path, "Dockerfile").warnings() == ctx.warnings()


def test_changes_to_files_that_are_not_sent_do_not_count(tmp_path):
    head = repo_with(tmp_path, {**APP, "docs/guide.md": "v1\n", ".dockerignore": ".git\ndocs\n"})
    (tmp_path / "docs/guide.md").write_text("v2\n")
    (tmp_path / "docs/draft.md").write_text("new\n")
    assert version(tmp_path) == head


def test_a_context_in_a_subdirectory_is_compared_with_that_part_of_the_commit(tmp_path):
    head = repo_with(tmp_path, {"README.md": "x\n", "services/web/Dockerfile": "FROM busybox\n",
                                "services/web/app.sh": "echo\n", "services/api/app.sh": "echo\n"})
    web = tmp_path / "services/web"
    assert version(web) == head  # the repository's .git is outside this context
    (tmp_path / "README.md").write_text("changed\n")
    (tmp_path / "services/api/app.sh").write_text("changed\n")
    assert version(web) == head
    (web / "extra.txt").write_text("x\n")
    assert version(web).startswith(f"{head}-dirty-")
    untracked = tmp_path / "services/new"
    write(untracked, {"Dockerfile": "FROM busybox\n"})
    assert version(untracked).startswith(f"{head}-dirty-")  # a directory the commit does not have at all


def test_the_same_dirty_tree_in_two_checkouts_gets_the_same_version(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    head = repo_with(a, APP)
    git(tmp_path, "clone", "-q", str(a), str(b))
    for d in (a, b):
        (d / "app.sh").write_text("echo local\n")
    assert version(a) == version(b) != head


def test_shipyard_deploy_expects_the_version_the_program_computes(tmp_path):
    """`shipyard deploy` names in the history the version the program will deploy: with none pinned, the builder
    context's git commit."""
    from types import SimpleNamespace

    from components import config
    from components.cli import deploy
    head = repo_with(tmp_path / "app", APP)
    cfg = config.load({"service": "s", "image": "acme/s", "builder": {"context": "app"},
                       "servers": {"web": {"hosts": ["10.0.0.2"]}}}, stack="staging")
    ctx = SimpleNamespace(cfg=cfg, project_dir=tmp_path)
    assert deploy.expected_version(ctx) == head == version(tmp_path / "app")
    write(tmp_path / "app", {"app.sh": "echo changed\n"})
    assert deploy.expected_version(ctx) == version(tmp_path / "app") != head


# --- a commit's content (a Kamal app without builder.context) ----------------------------------------------------

def test_a_clean_checkout_builds_what_head_holds_whatever_the_working_tree_holds(tmp_path):
    """Kamal builds from a clean clone of HEAD: edits, untracked and ignored files never reach the image, and an
    edit that is not committed changes neither the content nor the version."""
    app = tmp_path / "repo" / "app"
    head = repo_with(tmp_path / "repo", {"app/" + k: v for k, v in {**APP, "bin/run": "run\n", "lib/x.sh": "x\n",
                                                                   "secret.key": "k\n"}.items()}
                     | {"README": "outside the context\n", ".gitignore": "app/local.env\n"})
    (tmp_path / "repo" / "app" / "bin" / "run").chmod(0o755)
    (app / "bin" / "link").symlink_to("run")
    git(tmp_path / "repo", "add", "-A")
    git(tmp_path / "repo", "commit", "-qm", "exec and link")
    head = git(tmp_path / "repo", "rev-parse", "--short=12", "HEAD")
    ctx = source.commit_context(app, "Dockerfile")
    members = tar_members(ctx.tar())
    assert sorted(members) == [".dockerignore", "Dockerfile", "app.sh", "bin", "bin/link", "bin/run", "lib",
                               "lib/x.sh", "secret.key"]
    assert members["bin/run"].mode == 0o755 and members["app.sh"].mode == 0o644
    assert members["bin/link"].issym() and members["bin/link"].linkname == "run"
    assert source.git_version(ctx) == head and ctx.commit.startswith(head)

    (app / "app.sh").write_text("echo uncommitted\n")
    (app / "untracked.txt").write_text("u\n")
    (app / "local.env").write_text("TOKEN=ignored-by-git\n")
    (app / "secret.key").unlink()
    again = source.commit_context(app, "Dockerfile")
    assert again.hash == ctx.hash and source.git_version(again) == head
    data = tarfile.open(fileobj=io.BytesIO(again.tar())).extractfile("app.sh").read()
    assert data == APP["app.sh"].encode()
    assert source.context_tar(app, "Dockerfile", expect_hash=ctx.hash, commit=ctx.commit) == ctx.tar()
    assert source.git_version(source.build_context(app, "Dockerfile")) != head  # the working tree is dirty


def test_a_clean_checkout_honours_the_commits_dockerignore_and_names_what_is_missing(tmp_path):
    repo_with(tmp_path / "repo", {**APP, ".dockerignore": "*.log\n", "a.log": "l\n"})
    assert "a.log" not in source.commit_context(tmp_path / "repo", "Dockerfile").files
    with pytest.raises(ConfigError, match=r"^builder.dockerfile: Dockerfile.prod is not in commit [0-9a-f]{12} of "
                                          r".*: the build takes what HEAD holds, as Kamal's clean clone does; "
                                          r"commit it$"):
        source.commit_context(tmp_path / "repo", "Dockerfile.prod")
    write(tmp_path / "plain", APP)
    with pytest.raises(ConfigError, match=r"^builder.context: .*plain is not a git checkout with a commit"):
        source.commit_context(tmp_path / "plain", "Dockerfile")
