"""The app's source on the deploying machine: the build context (what is sent, its hash, its tar) and the default
version (git).

Reads the local filesystem and git only; no host is touched here. `build_context` checks everything a build needs
up front (context directory, Dockerfile, `.dockerignore`, readable files) and says what is wrong in one line.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
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


def context_tar(context: Path, dockerfile: str, expect_hash: str | None = None, commit: str | None = None) -> bytes:
    """The tar to send (`commit`: as that commit holds the context). With `expect_hash` (the hash the deploy
    planned with), a context that changed since is refused rather than built under a version that names other
    content."""
    ctx = commit_context(context, dockerfile, commit) if commit else build_context(context, dockerfile)
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


def checkout_commit(ctx: BuildContext | CommitContext) -> str | None:
    """The version the context would get unpinned (`git_version`), or None where it is no git checkout."""
    try:
        return git_version(ctx)
    except ConfigError:
        return None


def commit_messages(directory: Path, commit: str) -> tuple[str, ...]:
    """A commit's message as `pulumi up` may record it (whole, and its first line); none where git knows no such
    commit there."""
    try:
        found = _git(directory, "log", "-1", "--format=%B", commit) if Path(directory).is_dir() else None
    except ConfigError:  # no git here: nothing to compare with
        return ()
    if found is None or found.returncode != 0:
        return ()
    text = found.stdout.decode(errors="replace").strip()
    return (text, text.splitlines()[0]) if text else ()


def same_checkout(a: Path, b: Path) -> bool:
    """Whether two directories are in one git checkout (the same top level); False where either is in none."""
    tops = [_git(d, "rev-parse", "--show-toplevel") if Path(d).is_dir() else None for d in (a, b)]
    return all(t is not None and t.returncode == 0 for t in tops) and tops[0].stdout == tops[1].stdout


def git_version(ctx: BuildContext | CommitContext) -> str:
    """The context's commit (12 hex digits) when the context sent is exactly what that commit holds; otherwise
    the commit, `-dirty-` and 8 digits of the context hash. Ignored or untracked files that are sent, changed
    modes, an empty directory, a `.git` sent along: all make it dirty. So a version names one content, and the
    same tree always gets the same version. A commit's content is its commit's version."""
    if isinstance(ctx, CommitContext):
        return ctx.commit[:12]
    head = _git(ctx.directory, "rev-parse", "--short=12", "HEAD")
    if head.returncode != 0:
        err = head.stderr.decode(errors="replace")
        if "dubious ownership" in err:
            raise ConfigError("version", f"not set, and git refuses {ctx.directory} (owned by another user): run "
                                         f"`git config --global --add safe.directory {ctx.directory}` or set it "
                                         f"with `pulumi config set shipyard:version VERSION`")
        raise ConfigError("version", f"not set, and {ctx.directory} is not a git checkout with a commit: set it "
                                     f"with `pulumi config set shipyard:version VERSION` (from a program: the "
                                     f"`version` input)")
    version = head.stdout.decode().strip()
    return version if _is_commit_content(ctx) else f"{version}-dirty-{ctx.hash.split(':')[-1][:8]}"


def _head_tree(ctx: BuildContext) -> dict[str, tuple[str, str, int]] | None:
    return _tree(ctx.directory, "HEAD")


def _tree(directory: Path, commit: str) -> dict[str, tuple[str, str, int]] | None:
    """The commit's entries under `directory`: relative path -> (mode, object id, size)."""
    prefix = _git(directory, "rev-parse", "--show-prefix")
    if prefix.returncode != 0:
        return None
    # `<commit>:<dir>` is the directory's own tree, so paths come relative to it
    listing = _git(directory, "ls-tree", "-r", "-z", "-l", "--full-tree",
                   commit.encode() + b":" + prefix.stdout.rstrip(b"\n"))
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


# --- a commit's content: Kamal's clean clone of HEAD ---------------------------------------------------------------

@dataclass(frozen=True)
class CommitContext:
    """The build context as a commit holds it, read from git's objects - never from the working tree - the way
    Kamal builds from a clean clone of HEAD: uncommitted and ignored files never reach the image, an edit that is
    not committed builds nothing new, and the version is the commit. Submodules are not sent."""

    directory: Path  # the context directory in the checkout
    dockerfile: str  # relative to `directory`, `/`-separated
    commit: str  # the commit's full object id
    entries: tuple[tuple[str, bool], ...]
    tree: dict[str, tuple[str, str, int]] = field(repr=False, compare=False)
    patterns: tuple[dockerignore.Pattern, ...] = field(repr=False, default=())

    @property
    def files(self) -> list[str]:
        return sorted(p for p, is_dir in self.entries if not is_dir)

    @cached_property
    def hash(self) -> str:
        return HASH_PREFIX + hashlib.sha256(self.tar()).hexdigest()

    def tar(self) -> bytes:
        blobs = _blobs(self.directory, [self.tree[p][1] for p, is_dir in self.entries if not is_dir])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for rel, is_dir in self.entries:
                ti = tarfile.TarInfo(rel)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = 0
                if is_dir:
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(ti)
                    continue
                mode, oid, _ = self.tree[rel]
                data = blobs[oid]
                if mode == "120000":
                    ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, os.fsdecode(data)
                    tf.addfile(ti)
                else:
                    ti.mode, ti.size = (0o755 if mode == "100755" else 0o644), len(data)
                    tf.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    def warnings(self) -> list[str]:
        modules = sorted(p for p, (mode, _, _) in self.tree.items() if mode == "160000")
        if modules:
            return [f"{CONTEXT}: submodules are not sent to the builder (they are not in the commit): "
                    f"{', '.join(modules)}"]
        return []


def _blobs(directory: Path, oids: list[str]) -> dict[str, bytes]:
    """The content of git objects, read in one `git cat-file --batch`."""
    wanted = list(dict.fromkeys(oids))
    if not wanted:
        return {}
    proc = subprocess.run(["git", "-C", os.fsencode(directory), "cat-file", "--batch"],
                          input="".join(f"{o}\n" for o in wanted).encode(), capture_output=True)
    out, pos, blobs = proc.stdout, 0, {}
    for oid in wanted:
        header_end = out.index(b"\n", pos)
        name, kind, size = out[pos:header_end].split()
        if kind != b"blob" or name.decode() != oid:
            raise ConfigError(CONTEXT, f"git could not read {oid} in {directory}: run `git fsck` there")
        start = header_end + 1
        blobs[oid] = out[start:start + int(size)]
        pos = start + int(size) + 1
    return blobs


def commit_context(directory: Path | str, dockerfile: str, commit: str | None = None) -> CommitContext:
    """The context as `commit` (default: HEAD) holds it. Raises ConfigError where there is no such commit or the
    Dockerfile is not in it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(CONTEXT, f"directory {directory} does not exist: set {CONTEXT} to the app's directory")
    directory = directory.resolve()
    found = _git(directory, "rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}")
    if found.returncode != 0:
        raise ConfigError(CONTEXT, f"{directory} is not a git checkout with a commit: the build takes what HEAD "
                                   f"holds, as Kamal's clean clone does; commit the app, or set {CONTEXT} to build "
                                   f"the directory as it is")
    commit = found.stdout.decode().strip()
    tree = _tree(directory, commit) or {}
    dockerfile = Path(dockerfile).as_posix().removeprefix("./")
    if tree.get(dockerfile, ("",))[0] not in ("100644", "100755"):
        raise ConfigError(DOCKERFILE, f"{dockerfile} is not in commit {commit[:12]} of {directory}: the build takes "
                                      f"what HEAD holds, as Kamal's clean clone does; commit it")
    patterns: list[dockerignore.Pattern] = []
    if IGNORE_FILE in tree:
        text = _blobs(directory, [tree[IGNORE_FILE][1]])[tree[IGNORE_FILE][1]].decode("utf-8", "surrogateescape")
        try:
            patterns = dockerignore.compile_patterns(dockerignore.parse(text))
        except dockerignore.IgnoreFileError as exc:
            raise ConfigError(CONTEXT, f"{IGNORE_FILE} of commit {commit[:12]} line {exc.line}: {exc.pattern!r} "
                                       f"{exc.reason}; fix or remove that line") from None
    children: dict[str, set[tuple[str, bool]]] = {}
    for rel, (mode, _, _) in tree.items():
        if mode == "160000":
            continue  # a submodule: not in the commit's objects
        parts = rel.split("/")
        for k in range(len(parts)):
            children.setdefault("/".join(parts[:k]), set()).add((parts[k], k < len(parts) - 1))
    entries = dockerignore.select(lambda d: sorted(children.get(d, ())), patterns, always=(IGNORE_FILE, dockerfile))
    return CommitContext(directory, dockerfile, commit, tuple(entries), tree, tuple(patterns))


def context_for(directory: Path | str, dockerfile: str, *, clean: bool) -> BuildContext | CommitContext:
    """What a builder sends: the commit's content (`clean`, a Kamal app without builder.context) or the
    directory's."""
    return commit_context(directory, dockerfile) if clean else build_context(directory, dockerfile)


ERROR_PAGE = re.compile(r"^[45]\d\d\.html$")  # Kamal's {4??.html,5??.html}


def error_pages(directory: Path) -> dict[str, bytes]:
    """The error pages kamal-proxy serves for a route (`404.html`, `503.html`, ...) from `directory`, by name."""
    if not directory.is_dir():
        raise ConfigError("error_pages", f"directory {directory} does not exist: create it with 4xx.html/5xx.html "
                                         f"pages, or drop error_pages")
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if ERROR_PAGE.match(p.name) and p.is_file()}


def pages_hash(pages: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(pages.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return "sha256:" + h.hexdigest()


def file_hash(path: Path) -> str:
    """sha256 of a local file uploaded to hosts (accessory files): a change re-creates the accessory."""
    if not path.is_file():
        raise ConfigError("accessories", f"file {path} does not exist")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
