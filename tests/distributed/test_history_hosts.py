"""Workers that share no disk but one PostgreSQL history: two extract worker processes, each with its own
working folder (its own ``history_db_path`` and store folder, neither ever written), one Redis, one
PostgreSQL (``history_db_url``) and the store worker that owns the embedded store folder. They store
the same entries, and the history holds the same messages and changes, as ``LightMemory`` in one
process on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory, parse_config
from lightmem_core.factory import build_components
from lightmem_core.history import HistoryStore
from lightmem_core.history.postgres import PostgresDatabase
from producers.datasets import Conversation, add_conversation, load_locomo
from tests.distributed.conftest import Cluster, running_cluster
from tests.support.postgres import PostgresServer
from workers.launch import LocalCluster, free_port, process_argv, wait_for_workers
from workers.settings import deep_merge

pytestmark = pytest.mark.integration
M = "LIGHTMEM_MEMORY__"
SECOND = "pgh-extract-b"
CHANGE_FIELDS = ("entry_id", "action", "old_text", "new_text", "reason")


def _own_folder(folder: Path) -> dict[str, str]:
    """A worker's settings for a host of its own: nothing on the other workers' disk."""
    return {f"{M}HISTORY_DB_PATH": str(folder / "history.db"),
            f"{M}EMBEDDING_RETRIEVER__CONFIGS__PATH": str(folder / "qdrant")}


@pytest.fixture(scope="module")
def postgres_cluster(redis_cluster: LocalCluster, postgres_server: PostgresServer) -> Iterator[tuple[Cluster, str]]:
    """The cluster with its history on PostgreSQL; its extract worker moved to a folder of its own, and a
    second extract worker, in another folder, on the same queue (one task at a time each, so both work)."""
    url = postgres_server.new_database()
    with running_cluster(redis_cluster, tag="pgh", env={f"{M}HISTORY_DB_URL": url}) as cluster:
        _, env = cluster.commands["extract"]
        cluster.procs.stop_process(cluster.names["extract"])
        first = process_argv("extract", cluster.settings, name=cluster.names["extract"], concurrency=1)
        cluster.commands["extract"] = (first, {**env, **_own_folder(cluster.workdir / "host-a")})
        cluster.restart("extract")
        second = process_argv("extract", cluster.settings, name=SECOND, concurrency=1)
        cluster.procs.start(SECOND, second, env={**env, **_own_folder(cluster.workdir / "host-b"),
                                                 "LIGHTMEM_METRICS_PORT": str(free_port())})
        try:
            wait_for_workers(cluster.producer.app, [SECOND], timeout_s=120)
            yield cluster, url
        finally:
            cluster.procs.stop_process(SECOND)


def _conversations(data_dir: Path) -> list[Conversation]:
    """Three LoCoMo conversations' first sessions, under user ids of their own."""
    out = []
    for conversation in load_locomo(data_dir / "locomo10.json")[5:8]:
        user_id = f"pgh-{conversation.user_id}"
        sessions = [replace(s, user_id=user_id) for s in conversation.sessions[:4]]
        out.append(replace(conversation, user_id=user_id, sessions=sessions))
    return out


def _reference(cluster: Cluster, folder: Path, embedder: Any) -> LightMemory:
    """``LightMemory`` in this process on the workers' configuration, with SQLite and a store of its own."""
    base = cluster.settings.memory_cfg.model_dump(exclude_none=True)
    base.pop("history_db_url")
    paths = {"history_db_path": str(folder / "ref.db"), "embedding_retriever": {"configs": {"path": str(folder / "q")}}}
    config = parse_config(deep_merge(base, paths))
    return LightMemory(config, build_components(config, embedder=embedder))


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["id"], entry["memory"], entry["topic_id"], tuple(entry["source_ids"]), entry["session_id"],
            entry["time_stamp"])


def _history(history: HistoryStore, user_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    messages = sorted((m["id"], m["session_id"], m["turn_index"], m["content"], m["compressed"], m["state"])
                      for m in history.messages(user_id))
    changes = sorted(tuple(c[f] for f in CHANGE_FIELDS) for c in history.user_history(user_id))
    return messages, changes


def test_extract_workers_without_a_shared_disk_equal_one_process(postgres_cluster: tuple[Cluster, str], data_dir: Path,
                                                                 tmp_path: Path, minilm_embedder: Any) -> None:
    cluster, url = postgres_cluster
    conversations = _conversations(data_dir)
    ids = [cluster.producer.enqueue_session(c.user_id, s) for c in conversations for s in c.sessions]
    for conversation in conversations:
        cluster.producer.flush(conversation.user_id)
    states = cluster.producer.wait_indexed(ids, timeout_s=400)
    assert set(states.values()) == {"indexed"}

    reference = _reference(cluster, tmp_path, minilm_embedder)
    shared = HistoryStore(PostgresDatabase(url))
    try:
        for conversation in conversations:
            add_conversation(reference, conversation, force_segment=True)
            expected = {_key(e.model_dump(mode="json")) for e in reference.get_all(conversation.user_id)}
            got = {_key(e) for e in cluster.producer.entries(conversation.user_id)}
            assert len(got) == len(expected) > 10
            assert got == expected
            messages, changes = _history(shared, conversation.user_id)
            assert (messages, changes) == _history(reference.history, conversation.user_id)
            assert len(messages) == sum(len(s.messages) for s in conversation.sessions)
    finally:
        shared.close()
        reference.close()
    # No worker wrote a SQLite history anywhere, and the extract workers' folders stayed empty.
    assert sorted(cluster.workdir.rglob("history.db*")) == []
    assert not any(p.is_file() for host in ("host-a", "host-b") for p in (cluster.workdir / host).rglob("*"))
    for name in (cluster.names["extract"], SECOND):  # both extract workers took batches
        assert "lightmem.extract.drain[" in cluster.procs.log(name) and "succeeded" in cluster.procs.log(name), name
