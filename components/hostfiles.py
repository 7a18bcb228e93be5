"""Files on hosts, over SFTP on the host's one SSH connection (`components.hosts`): env files, accessory files and
directories. Part of the host layer; errors are translated there."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from .hosts import SSHTarget, sftp

if TYPE_CHECKING:
    import paramiko


def home(target: SSHTarget) -> str:
    """The SSH user's home directory on the host: where relative state paths live."""
    with sftp(target, "finding the home directory") as s:
        return s.normalize(".")


def _makedirs(s: paramiko.SFTPClient, path: str, mode: int) -> None:
    parts = [p for p in path.split("/") if p]
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = f"{current}{part}" if current in ("", "/") else f"{current}/{part}"
        try:
            s.stat(current)
        except FileNotFoundError:
            try:
                s.mkdir(current, mode)
            except OSError:
                s.stat(current)  # made at the same moment by another deploy: fine; anything else re-raises


def write_file(target: SSHTarget, path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file on the host (parent directories 0700), readable per `mode` only: created with the mode before
    any byte is written, so a secret is never readable by others, not even for a moment. Written to a temporary
    name of its own and renamed over the file, so two writers never mix their bytes."""
    with sftp(target, f"writing {path}") as s:
        _makedirs(s, path.rsplit("/", 1)[0], 0o700)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with s.open(tmp, "wb") as fh:
                fh.chmod(mode)
                fh.write(data)
            s.posix_rename(tmp, path)
        except BaseException:
            try:
                s.remove(tmp)
            except OSError:
                pass
            raise


def make_dir(target: SSHTarget, path: str, mode: int = 0o755) -> None:
    with sftp(target, f"creating {path}") as s:
        _makedirs(s, path, mode)


def remove_file(target: SSHTarget, path: str) -> None:
    with sftp(target, f"removing {path}") as s:
        try:
            s.remove(path)
        except FileNotFoundError:
            pass


def file_mode(target: SSHTarget, path: str) -> int | None:
    with sftp(target, f"inspecting {path}") as s:
        try:
            return s.stat(path).st_mode & 0o777
        except FileNotFoundError:
            return None
