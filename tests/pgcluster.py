"""A private PostgreSQL cluster for the team-state tests: Debian's `postgresql` binaries, `initdb` into a temporary
directory, listening on loopback only on a free port, password authentication. Used as Pulumi's `postgres://`
state backend. Started and removed by a test fixture; nothing here is product code."""

from __future__ import annotations

import base64
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "shipyard"
DATABASE = "shipyard_state"


class PGError(RuntimeError):
    pass


def _bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or [shutil.which(tool) or ""]
    if not found[-1]:
        raise PGError(f"PostgreSQL's {tool} is missing: run `make setup` (it installs Debian's postgresql)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="shipyard-pg-"))
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        # initdb and postgres refuse to run as root: the cluster belongs to Debian's `postgres` user
        self.owner = "postgres" if os.geteuid() == 0 else None

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *argv] if self.owner else argv

    def _run(self, argv: list[str]) -> str:
        proc = subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise PGError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def start(self) -> "Cluster":
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self.owner:
            os.chown(pwfile, pwd.getpwnam(self.owner).pw_uid, -1)
        self._run([_bin("initdb"), "-D", str(self.dir / "data"), "-U", USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8"])
        pwfile.unlink()
        self._run([_bin("pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                   f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}", "start"])
        self.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        return self

    def stop(self) -> None:
        subprocess.run(self._as_owner([_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        """Pulumi's backend URL (lib/pq syntax); the backend creates its table on first use."""
        return f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}?sslmode=disable"

    def sql(self, query: str, database: str = DATABASE) -> str:
        proc = subprocess.run(self._psql(database, "-At", "-c", query), capture_output=True, text=True, timeout=60,
                              env=self._env())
        if proc.returncode != 0:
            raise PGError(f"psql: {proc.stderr.strip()}")
        return proc.stdout

    def _psql(self, database: str, *args: str) -> list[str]:
        return [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database, *args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def psql(self, args: list[str]) -> subprocess.Popen:
        """psql on the state's database, running in the background: another process writing the backend."""
        return subprocess.Popen(self._psql(DATABASE, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self._env())

    def blobs(self) -> dict[str, bytes]:
        """Every object the Pulumi backend stored (key -> content): its table holds {"data": base64} per key."""
        out = {}
        for line in self.sql("SELECT key || ' ' || (data->>'data') FROM pulumi_state").splitlines():
            key, _, data = line.partition(" ")
            out[key] = base64.b64decode(data)
        return out

    def locks(self) -> list[str]:
        return [k for k in self.sql("SELECT key FROM pulumi_state WHERE key LIKE '%/.pulumi/locks/%'").splitlines()]
