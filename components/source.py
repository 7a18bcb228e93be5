"""The app's source on the deploying machine: the build context (what is sent, its hash, its tar) and the default
version (git).

Reads the local filesystem and git only; no host is touched here. `build_context` checks everything a build needs
up front (context directory, Dockerfile, `.dockerignore`, readable files) and says what is wrong in one line.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from . import dockerignore
from .errors import ConfigError

CONTEXT, DOCKERFILE = "builder.context", "builder.dockerfile"
IGNORE_FILE = ".dockerignore"

HASH_PREFIX = "tar-sha256:"  # what context hashes start with (those of earlier releases: "sha256:")


@dataclass(frozen=True)
class BuildContext:
    """A checked build context: `entries` are the paths sent to the builder (relative, `/`-separated, parents
    before children, with whether each is a directory), chosen by `.dockerignore` as `docker build` chooses them."""

    directory: Path
    dockerfile: str  # relative to `directory`, `/`-separated, inside it
    entries: tuple[tuple[str, bool], ...]
    patterns: tuple[dockerignore.Pattern, ...] = field(repr=False)

    @property
    def files(self) -> list[str]:
        """Sent paths that are not directories (files, symlinks...), sorted."""
        return sorted(p for p, is_dir in self.entries if not is_dir)

    @cached_property
    def hash(self) -> str:
        """sha256 of the exact tar sent to the builder: any change to a sent path, its content or mode changes it;
        a change to an ignored file does not."""
        h = _HashWriter()
        self._write_tar(h)
        return HASH_PREFIX + h.sha.hexdigest()

    def tar(self) -> bytes:
        """The context as a reproducible tar (owner root, time 0, modes as on disk), the way the builder gets it."""
        buf = io.BytesIO()
        self._write_tar(buf)
        return buf.getvalue()

    def warnings(self) -> list[str]:
        """Things that are allowed but probably not meant."""
        if any(p == ".git" for p, _ in self.entries):
            return [f"{CONTEXT}: {self.directory / '.git'} is sent to the builder, as `docker build` would send it, "
                    f"so every git operation changes the context; add `.git` to {IGNORE_FILE} unless the build "
                    f"needs it"]
        return []

    def _write_tar(self, out: BinaryIO | _HashWriter) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for rel, _ in self.entries:
                ti, data = _tar_entry(self.directory, rel)
                if ti is not None:
                    tf.addfile(ti, io.BytesIO(data) if data is not None else None)


class _HashWriter:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return len(data)


def _unreadable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(CONTEXT, f"cannot read {path} ({exc.strerror or exc}): make it readable by this user or "
                                f"exclude it in {IGNORE_FILE}")


def _tar_entry(directory: Path, rel: str) -> tuple[tarfile.TarInfo | None, bytes | None]:
    """The tar header (and content) of one sent path; None for what a tar cannot hold (sockets)."""
    full = directory / rel
    try:
        st = os.lstat(full)
        ti = tarfile.TarInfo(rel)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 0
        data = None
        if stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(full)
        elif stat.S_ISREG(st.st_mode):
            data = full.read_bytes()
            ti.size = len(data)
        elif stat.S_ISFIFO(st.st_mode):
            ti.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return None, None  # a socket: docker build leaves it out too
    except FileNotFoundError:
        raise ConfigError(CONTEXT, f"{full} disappeared while the context was being read: run again once the "
                                   f"files stop changing") from None
    except OSError as exc:
        raise _unreadable(full, exc) from None
    return ti, data


def _resolve_dockerfile(directory: Path, dockerfile: str) -> str:
    given = directory / dockerfile  # an absolute `dockerfile` stays absolute
    if not os.path.lexists(given):
        raise ConfigError(DOCKERFILE, f"{dockerfile} not found in {directory}: create it, or set {DOCKERFILE} to "
                                      f"its path relative to {CONTEXT}")
    real = given.resolve()
    if not real.is_relative_to(directory):
        raise ConfigError(DOCKERFILE, f"{dockerfile} is outside {CONTEXT} ({directory}); the builder only gets "
                                      f"the context: move the Dockerfile into it, or set {CONTEXT} to a directory "
                                      f"that holds both")
    if not real.is_file():
        raise ConfigError(DOCKERFILE, f"{real} is not a file: set {DOCKERFILE} to the Dockerfile's path relative to "
                                      f"{CONTEXT}")
    return real.relative_to(directory).as_posix()


def _list_dir(directory: Path):
    def list_dir(rel: str) -> list[tuple[str, bool]]:
        path = directory / rel if rel else directory
        try:
            with os.scandir(path) as it:
                return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError as exc:
            raise _unreadable(path, exc) from None
    return list_dir


def read_patterns(directory: Path) -> list[dockerignore.Pattern]:
    """The context's `.dockerignore` patterns (none without one)."""
    path = directory / IGNORE_FILE
    if not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        return dockerignore.compile_patterns(dockerignore.parse(text))
    except dockerignore.IgnoreFileError as exc:
        raise ConfigError(CONTEXT, f"{path} line {exc.line}: {exc.pattern!r} {exc.reason}; fix or remove that "
                                   f"line") from None


def build_context(directory: Path | str, dockerfile: str) -> BuildContext:
    """Check the context and choose what is sent. Raises `ConfigError` (`builder.context`/`builder.dockerfile`)
    for a missing context or Dockerfile, a Dockerfile outside the context, a bad `.dockerignore` or an
    unreadable directory; unreadable files are reported by `hash`/`tar`, which read them."""
    directory = Path(directory)
    if not directory.exists():
        raise ConfigError(CONTEXT, f"directory {directory} does not exist: set {CONTEXT} to the app's directory "
                                   f"(relative to the project, where Pulumi.yaml is)")
    if not directory.is_dir():
        raise ConfigError(CONTEXT, f"{directory} is not a directory: set {CONTEXT} to the app's directory")
    directory = directory.resolve()
    rel_dockerfile = _resolve_dockerfile(directory, dockerfile)
    patterns = read_patterns(directory)
    entries = dockerignore.select(_list_dir(directory), patterns, always=(IGNORE_FILE, rel_dockerfile))
    return BuildContext(directory, rel_dockerfile, tuple(entries), tuple(patterns))


def context_hash(context: Path, dockerfile: str) -> str:
    return build_context(context, dockerfile).hash


def same_hash_kind(a: str | None, b: str | None) -> bool:
    """Whether two context hashes can be compared: earlier releases hashed the files, not the tar."""
    return bool(a and b) and a.startswith(HASH_PREFIX) == b.startswith(HASH_PREFIX)


def context_tar(context: Path, dockerfile: str, expect_hash: str | None = None) -> bytes:
    """The tar to send. With `expect_hash` (the hash the deploy planned with), a context that changed since is
    refused rather than built under a version that names other content."""
    ctx = build_context(context, dockerfile)
    data = ctx.tar()
    if expect_hash is not None and HASH_PREFIX + hashlib.sha256(data).hexdigest() != expect_hash:
        raise ConfigError(CONTEXT, f"{ctx.directory} changed while this deploy was running: run it again")
    return data


def dockerfile_tar(text: str) -> bytes:
    """A context holding only a generated Dockerfile (promotion images)."""
    buf = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# --- the default version ---------------------------------------------------------------------------------------

def _git(cwd: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run([b"git", b"-C", os.fsencode(cwd), *(os.fsencode(a) for a in args)], capture_output=True)
    except FileNotFoundError:
        raise ConfigError("version", "not set, and git is not installed to find the commit: install git or set "
                                     "it with `pulumi config set shipyard:version VERSION`") from None


def checkout_commit(ctx: BuildContext) -> str | None:
    """The version the context would get unpinned (`git_version`), or None where it is no git checkout."""
    try:
        return git_version(ctx)
    except ConfigError:
        return None


def git_version(ctx: BuildContext) -> str:
    """The context's commit (12 hex digits) when the context sent is exactly what that commit holds; otherwise
    the commit, `-dirty-` and 8 digits of the context hash. Ignored or untracked files that are sent, changed
    modes, an empty directory, a `.git` sent along: all make it dirty. So a version names one content, and the
    same tree always gets the same version."""
    head = _git(ctx.directory, "rev-parse", "--short=12", "HEAD")
    if head.returncode != 0:
        err = head.stderr.decode(errors="replace")
        if "dubious ownership" in err:
            raise ConfigError("version", f"not set, and git refuses {ctx.directory} (owned by another user): run "
                                         f"`git config --global --add safe.directory {ctx.directory}` or set it "
                                         f"with `pulumi config set shipyard:version VERSION`")
        raise ConfigError("version", f"not set, and {ctx.directory} is not a git checkout with a commit: set it "
                                     f"with `pulumi config set shipyard:version VERSION`")
    version = head.stdout.decode().strip()
    return version if _is_commit_content(ctx) else f"{version}-dirty-{ctx.hash.split(':')[-1][:8]}"


def _head_tree(ctx: BuildContext) -> dict[str, tuple[str, str, int]] | None:
    """HEAD's entries under the context: relative path -> (mode, object id, size)."""
    prefix = _git(ctx.directory, "rev-parse", "--show-prefix")
    if prefix.returncode != 0:
        return None
    # `HEAD:<dir>` is the context's own tree, so paths come relative to the context
    listing = _git(ctx.directory, "ls-tree", "-r", "-z", "-l", "--full-tree",
                   b"HEAD:" + prefix.stdout.rstrip(b"\n"))
    if listing.returncode != 0:
        return None  # the context directory is not in the commit at all
    tree = {}
    for record in listing.stdout.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, _kind, oid, size = meta.split()
        rel = os.fsdecode(path)
        tree[rel] = (mode.decode(), oid.decode(), int(size) if size != b"-" else -1)
    return tree


def _is_commit_content(ctx: BuildContext) -> bool:
    tree = _head_tree(ctx)
    if tree is None:
        return False
    fmt = _git(ctx.directory, "rev-parse", "--show-object-format").stdout.decode().strip() or "sha1"
    children: dict[str, set[tuple[str, bool]]] = {}
    for rel in tree:
        parts = rel.split("/")
        for k in range(len(parts)):
            children.setdefault("/".join(parts[:k]), set()).add((parts[k], k < len(parts) - 1))
    expected = dockerignore.select(lambda d: children.get(d, ()), list(ctx.patterns),
                                   always=(IGNORE_FILE, ctx.dockerfile))
    if sorted(expected) != sorted(ctx.entries):
        return False
    for rel, is_dir in ctx.entries:
        full = ctx.directory / rel
        try:
            st = os.lstat(full)
            if is_dir:
                if stat.S_IMODE(st.st_mode) != 0o755:
                    return False
                continue
            mode, oid, size = tree[rel]
            if mode == "120000" and stat.S_ISLNK(st.st_mode):
                data = os.fsencode(os.readlink(full))
            elif stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == {"100644": 0o644, "100755": 0o755}.get(mode):
                if st.st_size != size:
                    return False
                data = full.read_bytes()
            else:
                return False  # type or mode differs, or a submodule
        except OSError as exc:
            raise _unreadable(full, exc) from None
        if hashlib.new(fmt, b"blob %d\0" % len(data) + data).hexdigest() != oid:
            return False
    return True


def file_hash(path: Path) -> str:
    """sha256 of a local file uploaded to hosts (accessory files): a change re-creates the accessory."""
    if not path.is_file():
        raise ConfigError("accessories", f"file {path} does not exist")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
