"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary folder (trust auth), the
server on a free local port with its unix socket in that folder, stopped and removed at the end.

``initdb`` refuses to run as root, so as root the cluster is created and run as ``nobody`` (through
``runuser``). ``PostgresServer.unavailable()`` says why no cluster can start here, or ``None``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Debian's packages put the binaries in a versioned folder that is not on PATH.
_SEARCH = [os.environ.get("PATH", ""), *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)]
USER = "lightmem"
RUN_AS = "nobody"


def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join(_SEARCH))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One running cluster; ``new_database()`` gives each test its own empty database."""

    folder: Path
    port: int
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @staticmethod
    def unavailable() -> str | None:
        """Why a cluster cannot start on this machine (the tests that need one skip with it), or ``None``."""
        missing = [t for t in ("initdb", "pg_ctl", "postgres") if _tool(t) is None]
        if missing:
            return f"PostgreSQL is not installed ({', '.join(missing)} not found; make test installs Debian's postgresql)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root and runuser is missing: initdb refuses root"
        return None

    @classmethod
    def start(cls) -> PostgresServer:
        folder = Path(tempfile.mkdtemp(prefix="lightmem-pg-"))  # short: a socket path has ~100 bytes
        server = cls(folder=folder, port=_free_port())
        if os.geteuid() == 0:
            shutil.chown(folder, RUN_AS)
        server._as_owner([str(_tool("initdb")), "-D", str(folder / "data"), "-A", "trust", "-U", USER, "-E", "UTF8",
                          "--no-sync", "--no-instructions"])
        options = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        server._as_owner([str(_tool("pg_ctl")), "-D", str(folder / "data"), "-o", options, "-l", str(folder / "log"),
                          "-w", "-t", "60", "start"])
        return server

    def _as_owner(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", RUN_AS, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if done.returncode != 0:
            log = (self.folder / "log").read_text() if (self.folder / "log").is_file() else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr or done.stdout}\n{log[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._as_owner([str(_tool("pg_ctl")), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
