"""The app's source on the deploying machine: build context (files, hash, tar) and the default version (git).

Reads the local filesystem and git only; no host is touched here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from .errors import ConfigError


def _ignore_patterns(context: Path) -> list[str]:
    f = context / ".dockerignore"
    if not f.exists():
        return []
    return [ln.strip().rstrip("/") for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        if fnmatch.fnmatch(rel, pat) or any(fnmatch.fnmatch(p, pat) for p in _parents(rel)):
            ignored = not negate
    return ignored


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def context_files(context: Path) -> list[str]:
    """Relative paths of the files sent to the builder, sorted; honours .dockerignore (the Dockerfile always goes)."""
    patterns = _ignore_patterns(context)
    out = []
    for root, dirs, files in os.walk(context):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), context)
            if not _ignored(rel, patterns):
                out.append(rel)
    return sorted(out)


def context_hash(context: Path, dockerfile: str) -> str:
    """sha256 over every file's path, mode and content, and the Dockerfile: a change to any of them rebuilds."""
    h = hashlib.sha256()
    files = context_files(context)
    if dockerfile not in files and (context / dockerfile).exists():
        files.append(dockerfile)
    for rel in files:
        p = context / rel
        h.update(rel.encode() + b"\0" + oct(p.stat().st_mode & 0o777).encode() + b"\0")
        h.update(p.read_bytes() if not p.is_symlink() else os.readlink(p).encode())
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def context_tar(context: Path, dockerfile: str) -> bytes:
    """The build context as a reproducible tar (fixed owners and times)."""
    buf = io.BytesIO()
    files = context_files(context)
    if dockerfile not in files:
        files.append(dockerfile)
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for rel in files:
            ti = tf.gettarinfo(str(context / rel), arcname=rel)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = 0
            if ti.isfile():
                with open(context / rel, "rb") as fh:
                    tf.addfile(ti, fh)
            else:
                tf.addfile(ti)
    return buf.getvalue()


def dockerfile_tar(text: str) -> bytes:
    """A context holding only a generated Dockerfile (promotion images)."""
    buf = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def git_version(context: Path, content_hash: str) -> str:
    """The app's commit (12 hex digits); a dirty tree adds `-dirty-` and 8 digits of the context hash, so every
    different build gets a different version, and the same tree the same one."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(context), *args], capture_output=True, text=True)
    head = git("rev-parse", "--short=12", "HEAD")
    if head.returncode != 0:
        raise ConfigError("version", f"not set, and {context} is not a git checkout with a commit: set it with "
                                     f"`pulumi config set shipyard:version VERSION`")
    dirty = git("status", "--porcelain", "--untracked-files=normal", "--", ".").stdout.strip()
    version = head.stdout.strip()
    return f"{version}-dirty-{content_hash.split(':')[-1][:8]}" if dirty else version


def file_hash(path: Path) -> str:
    """sha256 of a local file uploaded to hosts (accessory files): a change re-creates the accessory."""
    if not path.is_file():
        raise ConfigError("accessories", f"file {path} does not exist")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
