import subprocess
import tarfile
import io

import pytest

from components import source
from components.errors import ConfigError


def test_context_honours_dockerignore_and_hash_tracks_content(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    (tmp_path / "app.sh").write_text("echo hi\n")
    (tmp_path / "secret.env").write_text("X=1\n")
    (tmp_path / ".dockerignore").write_text("*.env\n")
    assert source.context_files(tmp_path) == [".dockerignore", "Dockerfile", "app.sh"]
    h1 = source.context_hash(tmp_path, "Dockerfile")
    (tmp_path / "secret.env").write_text("X=2\n")
    assert source.context_hash(tmp_path, "Dockerfile") == h1  # ignored files do not count
    (tmp_path / "app.sh").write_text("echo bye\n")
    assert source.context_hash(tmp_path, "Dockerfile") != h1
    names = tarfile.open(fileobj=io.BytesIO(source.context_tar(tmp_path, "Dockerfile"))).getnames()
    assert sorted(names) == [".dockerignore", "Dockerfile", "app.sh"]
    assert source.context_tar(tmp_path, "Dockerfile") == source.context_tar(tmp_path, "Dockerfile")


def test_version_is_the_commit_and_marks_a_dirty_tree(tmp_path):
    with pytest.raises(ConfigError, match="^version: not set"):
        source.git_version(tmp_path, "sha256:00")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(tmp_path)]
    (tmp_path / "a").write_text("1")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source.git_version(tmp_path, "sha256:abcdef0123") == head
    (tmp_path / "a").write_text("2")
    assert source.git_version(tmp_path, "sha256:abcdef0123") == f"{head}-dirty-abcdef01"
