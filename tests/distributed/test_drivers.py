"""One pipeline, two drivers: the same inputs through ``LightMemory`` (in this process, SQLite state)
and through the queues (real Redis, real Celery worker processes, the scripted LLM server process)
leave identical entries (ids, texts, provenance, time stamps, topics) and identical update history.

Each scenario runs on workers started with its own configuration; both drivers talk to the same
scripted LLM server, which answers update prompts with a repeatable mix of update, delete and ignore.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from lightmem_core import LightMemory, parse_config
from lightmem_core.factory import build_components, build_history
from producers.datasets import Conversation, DatasetSession, load_locomo
from tests.distributed.conftest import ROLES, Cluster, control_llm, running_cluster
from workers.launch import LocalCluster
from workers.settings import deep_merge

pytestmark = pytest.mark.integration
M = "LIGHTMEM_MEMORY__"
SEGMENTED = {f"{M}TOPIC_SEGMENT": "true", f"{M}TOPIC_SEGMENTER__MODEL_NAME": "embedding",
             f"{M}TOPIC_SEGMENTER__CONFIGS__SENSORY_BUFFER_TOKENS": "256",
             # A short retry budget, for the test in which Celery's retries run out.
             f"{M}MEMORY_MANAGER__CONFIGS__MAX_RETRIES": "1", "LIGHTMEM_MAX_RETRIES": "2",
             "LIGHTMEM_RETRY_BACKOFF_MAX_S": "1",
             # Topic summaries indexed in their own collection and searched first (summary_retriever).
             f"{M}TEXT_SUMMARY": "true", f"{M}SUMMARY_RETRIEVER__CONFIGS__TOP_TOPICS": "1"}
ONLINE_HYBRID = {f"{M}MESSAGES_USE": "hybrid", f"{M}UPDATE": "online"}
MARKER = "zanzibarite"  # a word no real conversation uses: the LLM fails every prompt that contains it


# --- the two drivers ----------------------------------------------------------------------------------
class Driver(Protocol):
    def add(self, conversation: Conversation) -> None: ...
    def retry(self, user_id: str) -> None: ...
    def offline_update(self, user_ids: list[str]) -> None: ...
    def entries(self, user_id: str) -> list[dict[str, Any]]: ...
    def history(self, user_id: str) -> list[dict[str, Any]]: ...


class Library:
    """``LightMemory`` on the workers' configuration, with its own folders."""

    def __init__(self, cluster: Cluster, workdir: Path, embedder: Any) -> None:
        base = cluster.settings.memory_cfg.model_dump(exclude_none=True)
        paths = {"history_db_path": str(workdir / "lib.db"), "embedding_retriever": {"configs": {"path": str(workdir / "q")}}}
        config = parse_config(deep_merge(base, paths))
        self.memory = LightMemory(config, build_components(config, embedder=embedder))
        self.settings = cluster.settings

    def add(self, conversation: Conversation) -> None:
        for session in conversation.sessions:  # each enqueue ends a sensory chunk: force_segment per session
            self.memory.add_memory(session.messages, force_segment=True, user_id=conversation.user_id,
                                   session_id=session.session_id)
        self.memory.flush(conversation.user_id)

    def retry(self, user_id: str) -> None:
        self.memory.retry_failed(user_id)

    def offline_update(self, user_ids: list[str]) -> None:
        s = self.settings
        for user_id in user_ids:
            self.memory.construct_update_queue_all_entries(s.update_top_k, s.update_keep_top_n, user_id=user_id)
            self.memory.offline_update_all_entries(s.update_score_threshold, user_id=user_id)

    def entries(self, user_id: str) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in self.memory.get_all(user_id)]

    def history(self, user_id: str) -> list[dict[str, Any]]:
        return self.memory.history.user_history(user_id)

    def close(self) -> None:
        self.memory.close()


class Queues:
    """The producer SDK on a running cluster; every step waits until the workers are done with it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.producer = cluster, cluster.producer
        self.tracking: dict[str, list[str]] = {}

    def add(self, conversation: Conversation) -> None:
        ids = [self.producer.enqueue_session(conversation.user_id, s) for s in conversation.sessions]
        self.producer.flush(conversation.user_id)
        self.tracking[conversation.user_id] = ids
        self.producer.wait_indexed(ids, timeout_s=300)
        self.settle()

    def settle(self) -> None:
        """Until the workers hold and queue nothing: a batch is ``indexed`` before its online update runs
        (in the same store task), and searches no longer queue behind store tasks (the search desk)."""
        r, queues = self.producer.state.r, [self.cluster.settings.queue(role) for role in ROLES]

        def idle() -> bool:
            held = [json.loads(raw)[2] for raw in r.hvals("unacked")]
            return not any(r.llen(q) for q in queues) and not any(q in queues for q in held)

        _until(lambda: idle() and (time.sleep(0.3) or idle()), 300, "workers idle")

    def retry(self, user_id: str) -> None:
        assert self.producer.retry_failed([user_id]) == [user_id]
        ids = self.tracking[user_id]
        _until(lambda: {self.producer.status(t)["state"] for t in ids} == {"indexed"}, 120, "retried batches stored")
        self.settle()

    def offline_update(self, user_ids: list[str]) -> None:
        before = self.producer.state.update_runs()
        assert set(self.producer.update_now()) >= set(user_ids)
        _until(lambda: all(self.producer.state.update_runs().get(u, 0) > before.get(u, 0) for u in user_ids),
               300, "offline update of every user")
        self.settle()

    def entries(self, user_id: str) -> list[dict[str, Any]]:
        return self.producer.entries(user_id)  # from the store worker's search desk

    def history(self, user_id: str) -> list[dict[str, Any]]:
        history = build_history(self.cluster.settings.memory_cfg)
        try:
            return history.user_history(user_id)
        finally:
            history.close()

    def close(self) -> None:
        pass


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s")
        time.sleep(0.2)


# --- what is compared ---------------------------------------------------------------------------------
ENTRY_FIELDS = ("id", "memory", "time_stamp", "weekday", "topic_id", "session_id", "source_ids", "speaker",
                "keywords", "category", "summary")
CHANGE_FIELDS = ("entry_id", "action", "old_text", "new_text", "reason")


def snapshot(driver: Driver, user_ids: list[str]) -> dict[str, Any]:
    """Entries (wall-clock fields left out) and the history of each user: the entries added (the queues
    store independent batches of a user in any order), then every update decision in the order made."""
    out = {}
    for u in user_ids:
        entries = driver.entries(u)
        changes = [tuple(c[f] for f in CHANGE_FIELDS) for c in driver.history(u)]
        out[u] = {"entries": sorted(tuple(json.dumps(e[f]) for f in ENTRY_FIELDS) for e in entries),
                  "added": sorted(c for c in changes if c[1] == "ADD"),
                  "updates": [c for c in changes if c[1] != "ADD"]}
    return out


# --- scenarios ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    cluster: str  # the fixture whose workers run this configuration
    run: Callable[[Driver, Cluster, list[Conversation]], list[str]]  # returns the users to compare
    updates: bool = False  # the scenario must lead to update decisions (else the comparison proves little)


def _renamed(conversation: Conversation, tag: str, sessions: int | None = None) -> Conversation:
    """The conversation under its own user id (scenarios share a cluster), optionally its first sessions."""
    user_id = f"{tag}-{conversation.user_id}"
    kept = conversation.sessions[:sessions] if sessions else conversation.sessions
    return replace(conversation, user_id=user_id, sessions=[replace(s, user_id=user_id) for s in kept])


def three_locomo_conversations(driver: Driver, cluster: Cluster, locomo: list[Conversation]) -> list[str]:
    """Compression and topic segmentation on; then the offline update (mixed decisions)."""
    conversations = [_renamed(c, "l3") for c in locomo[:3]]
    for conversation in conversations:
        driver.add(conversation)
    users = [c.user_id for c in conversations]
    driver.offline_update(users)
    return users


def online_update_hybrid(driver: Driver, cluster: Cluster, locomo: list[Conversation]) -> list[str]:
    """``update: online`` and ``messages_use: hybrid`` on one LoCoMo conversation's first sessions."""
    conversation = _renamed(locomo[3], "on", sessions=6)
    driver.add(conversation)
    return [conversation.user_id]


def failed_extraction_retried_later(driver: Driver, cluster: Cluster, locomo: list[Conversation]) -> list[str]:
    """One session's batch fails (its prompt gets invalid JSON twice); the rest goes on; once the LLM is
    healthy the retry stores it."""
    conversation = _renamed(locomo[4], "fr", sessions=6)
    sessions = conversation.sessions
    poisoned = replace(sessions[1], messages=[dict(m, content=f"{m['content']} {MARKER}") if i == 0 else m
                                              for i, m in enumerate(sessions[1].messages)])
    conversation = replace(conversation, sessions=[sessions[0], poisoned, *sessions[2:]])
    control_llm(cluster, fail_marker=MARKER)
    try:
        driver.add(conversation)
    finally:
        control_llm(cluster, fail_marker=None)
    stored = {e["id"] for e in driver.entries(conversation.user_id)}
    assert stored, "the batches without the marker were stored"
    assert not any(MARKER in e["memory"] for e in driver.entries(conversation.user_id))
    driver.retry(conversation.user_id)
    assert any(MARKER in e["memory"] for e in driver.entries(conversation.user_id)), "the failed batch came back"
    return [conversation.user_id]


SCENARIOS = [
    Scenario("locomo3_compressed_segmented", "segmented_cluster", three_locomo_conversations, updates=True),
    Scenario("online_update_hybrid", "online_cluster", online_update_hybrid, updates=True),
    Scenario("failed_extraction_retried", "segmented_cluster", failed_extraction_retried_later),
]


@pytest.fixture(scope="module")
def segmented_cluster(redis_cluster: LocalCluster) -> Iterator[Cluster]:
    with running_cluster(redis_cluster, "seg", SEGMENTED) as running:
        yield running


@pytest.fixture(scope="module")
def online_cluster(redis_cluster: LocalCluster) -> Iterator[Cluster]:
    with running_cluster(redis_cluster, "onl", ONLINE_HYBRID) as running:
        yield running


@contextmanager
def _driver(kind: str, cluster: Cluster, workdir: Path, embedder: Any) -> Iterator[Driver]:
    driver: Library | Queues = Library(cluster, workdir, embedder) if kind == "library" else Queues(cluster)
    try:
        yield driver
    finally:
        driver.close()


# Three LoCoMo conversations through LLMLingua-2, twice (library, then queues), with the offline update:
# a few minutes alone, over 600 s when the two cores are shared. The workers log their progress.
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_both_drivers_leave_the_same_memory(scenario: Scenario, request: pytest.FixtureRequest, tmp_path: Path,
                                            minilm_embedder: Any, data_dir: Path) -> None:
    cluster: Cluster = request.getfixturevalue(scenario.cluster)
    locomo = load_locomo(data_dir / "locomo10.json")
    control_llm(cluster, update_actions="mixed")
    try:
        results = {}
        for kind in ("library", "queues"):  # separate stores: the same user ids in both
            with _driver(kind, cluster, tmp_path, minilm_embedder) as driver:
                users = scenario.run(driver, cluster, locomo)
                results[kind] = snapshot(driver, users)
    finally:
        control_llm(cluster, update_actions="ignore")
    library, queues = results["library"], results["queues"]
    assert library.keys() == queues.keys()
    if scenario.updates:
        decided = [c[1] for user in library for c in library[user]["updates"]]
        assert "UPDATE" in decided and "DELETE" in decided, decided
    for user in library:
        assert len(library[user]["entries"]) > 0
        assert queues[user]["entries"] == library[user]["entries"], f"{scenario.name}: entries of {user} differ"
        assert queues[user]["added"] == library[user]["added"], f"{scenario.name}: entries added to {user} differ"
        assert queues[user]["updates"] == library[user]["updates"], f"{scenario.name}: updates of {user} differ"


def test_when_celery_retries_run_out_the_batch_is_failed_with_its_reason(segmented_cluster: Cluster) -> None:
    """An LLM outage longer than the client's and Celery's retries: the batch is recorded failed with its
    reason, nothing stays in flight, and ``lightmem retry`` stores it once the LLM answers again."""
    cluster, user = segmented_cluster, "outage-user"
    session = {"session_id": "o1", "time_stamp": "2025-05-01T09:00:00Z",
               "turns": [{"role": "user", "content": f"My {MARKER} collection grew to forty stones."}]}
    control_llm(cluster, fail_marker=MARKER, fail_status=500)
    try:
        tracking_id = cluster.producer.enqueue_session(user, session)
        cluster.producer.flush(user)
        assert cluster.producer.wait_indexed([tracking_id], timeout_s=120) == {tracking_id: "failed"}
    finally:
        control_llm(cluster, fail_marker=None)
    state = cluster.producer.state
    assert state.in_flight(user) == []
    [failed] = state.failed(user)
    assert failed.reason is not None and "TransientError" in failed.reason and "500" in failed.reason
    assert len(failed.messages) == 1 and failed.tracking  # the batch, kept whole, still knows its tracking id
    records = [f for f in cluster.producer.status()["recent_failures"] if f["user_id"] == user]
    assert records and records[0]["task"] == "lightmem.extract.drain" and "500" in records[0]["reason"]
    assert cluster.producer.status()["failed_batches"] >= 1
    cluster.producer.retry_failed([user])
    _until(lambda: cluster.producer.status(tracking_id)["state"] == "indexed", 60, "the retried batch stored")
    assert state.failed(user) == [] and state.in_flight(user) == []
    assert [MARKER in e["memory"] for e in cluster.producer.entries(user)] == [True]


def test_summary_retrieval_answers_the_same_in_both_drivers(segmented_cluster: Cluster, tmp_path: Path,
                                                            minilm_embedder: Any) -> None:
    """``summary_retriever``: the store worker indexes the topic summaries and its search desk searches
    them first, as ``LightMemory`` does: the same hits, from the topic the question is about."""
    from tests.llm.test_summary_retrieval import QUESTION, TRIP, WORK

    def session(user_id: str, session_id: str, day: str, texts: list[str]) -> DatasetSession:
        return DatasetSession(user_id=user_id, session_id=session_id, time_stamp=datetime.fromisoformat(f"{day}T10:00:00+00:00"),
                              messages=[{"role": "user", "content": t, "time_stamp": f"{day}T10:0{i}:00Z"}
                                        for i, t in enumerate(texts)])

    user = "sum-ann"
    conversation = Conversation(user, [session(user, "trip", "2025-03-01", TRIP), session(user, "work", "2025-03-02", WORK)])
    library, queues = Library(segmented_cluster, tmp_path, minilm_embedder), Queues(segmented_cluster)
    try:
        for driver in (library, queues):
            driver.add(conversation)
        found = library.memory.retrieve(QUESTION, limit=3, user_id=user)
        assert isinstance(found, list)
        lib = [(h.id, h.entry.topic_id, h.memory) for h in found]
        assert lib == [(h["id"], h["topic_id"], h["memory"]) for h in queues.producer.search(user, QUESTION, limit=3)]
        summaries = library.memory.components.summaries
        assert summaries is not None and summaries.store.count(user) == len({e["topic_id"] for e in library.entries(user)})
        best = lib[0][1]
        assert any("Kyoto" in text for _, topic, text in lib if topic == best), lib  # the trip topic came first
    finally:
        library.close()
