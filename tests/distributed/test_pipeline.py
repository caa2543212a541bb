"""The pipeline through real worker processes: equal to LightMemory, idempotent, ordered, failures kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.factory import build_components
from producers.datasets import add_conversation, load_locomo
from tests.distributed.conftest import Cluster
from workers.settings import deep_merge

pytestmark = pytest.mark.integration
LOCOMO_USERS = 3


def _cli(cluster: Cluster, *args: str, timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.env}
    done = subprocess.run([sys.executable, "-m", "producers.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _reference(cluster: Cluster, tmp_path: Path, embedder: Any) -> LightMemory:
    """``LightMemory`` in this process, on the workers' configuration with its own folders."""
    base = cluster.settings.memory_cfg.model_dump(exclude_none=True)
    paths = {"history_db_path": str(tmp_path / "ref.db"), "embedding_retriever": {"configs": {"path": str(tmp_path / "q")}}}
    from lightmem_core import parse_config

    cfg = parse_config(deep_merge(base, paths))
    return LightMemory(cfg, build_components(cfg, embedder=embedder))


def _key(entry: dict[str, Any]) -> tuple[str, str, int, tuple[str, ...], str]:
    return (entry["id"], entry["memory"], entry["topic_id"], tuple(entry["source_ids"]), entry["session_id"])


@pytest.fixture(scope="module")
def locomo_indexed(cluster: Cluster, data_dir: Path) -> list[Any]:
    """Three LoCoMo conversations enqueued through the command line, waited on until indexed."""
    ids_file = cluster.workdir / "tracking-ids.tsv"
    done = _cli(cluster, "enqueue", str(data_dir / "locomo10.json"), "--format", "locomo", "--limit", str(LOCOMO_USERS),
                "--wait", "360", "--ids-file", str(ids_file))
    assert "failed 0" in done.stdout, done.stdout
    rows = [line.split("\t") for line in ids_file.read_text(encoding="utf-8").splitlines()]
    sessions = sum(len(c.sessions) for c in load_locomo(data_dir / "locomo10.json")[:LOCOMO_USERS])
    assert len(rows) == sessions and all(len(row) == 3 for row in rows)
    assert {cluster.producer.status(row[0])["state"] for row in rows} == {"indexed"}
    return load_locomo(data_dir / "locomo10.json")[:LOCOMO_USERS]


def test_locomo_through_the_queues_equals_lightmemory(cluster: Cluster, locomo_indexed: list[Any], tmp_path: Path,
                                                      minilm_embedder: Any) -> None:
    reference = _reference(cluster, tmp_path, minilm_embedder)
    try:
        for conversation in locomo_indexed:
            add_conversation(reference, conversation, force_segment=True)
            expected = {_key(e.model_dump(mode="json")) for e in reference.get_all(conversation.user_id)}
            got = {_key(e) for e in cluster.producer.entries(conversation.user_id)}
            assert len(got) == len(expected) > 100
            assert got == expected
    finally:
        reference.close()
    # Nothing of these users is left in a buffer (other tests of the session may hold buffered turns).
    assert all(cluster.producer.state.info(c.user_id).turns == 0 for c in locomo_indexed)


def test_enqueueing_the_same_sessions_again_adds_no_entry(cluster: Cluster, locomo_indexed: list[Any],
                                                          data_dir: Path) -> None:
    users = [c.user_id for c in locomo_indexed]
    before = {u: sorted(e["id"] for e in cluster.producer.entries(u)) for u in users}
    _cli(cluster, "enqueue", str(data_dir / "locomo10.json"), "--format", "locomo", "--limit", str(LOCOMO_USERS),
         "--wait", "120")
    after = {u: sorted(e["id"] for e in cluster.producer.entries(u)) for u in users}
    assert after == before


def _sessions(user: str) -> list[dict[str, Any]]:
    return [
        {"session_id": f"{user}-s{i}", "time_stamp": f"2025-03-0{i}T10:00:00Z",
         "turns": [{"role": "user", "content": f"On day {i} I planted {n} tomato seedlings."},
                   {"role": "assistant", "content": "Nice."},
                   {"role": "user", "content": f"Day {i}: the greenhouse thermometer read {20 + i} degrees."}]}
        for i, n in ((1, 3), (2, 5), (3, 8), (4, 13))
    ]


def test_sessions_enqueued_in_reverse_order_are_applied_in_time_order(cluster: Cluster, tmp_path: Path,
                                                                      minilm_embedder: Any) -> None:
    user = "reverse-user"
    ids = [cluster.producer.enqueue_session(user, s) for s in reversed(_sessions(user))]
    cluster.producer.flush(user)
    assert set(cluster.producer.wait_indexed(ids, timeout_s=120).values()) == {"indexed"}
    got = sorted(cluster.producer.entries(user), key=lambda e: e["topic_id"])
    assert [e["session_id"] for e in got] == sorted(e["session_id"] for e in got)  # topics follow time
    reference = _reference(cluster, tmp_path, minilm_embedder)
    try:
        for s in _sessions(user):
            turns = [dict(t, time_stamp=s["time_stamp"]) for t in s["turns"]]
            reference.add_memory(turns, force_segment=True, user_id=user, session_id=s["session_id"])
        reference.flush(user)
        assert {_key(e) for e in got} == {_key(e.model_dump(mode="json")) for e in reference.get_all(user)}
    finally:
        reference.close()


def test_bad_payload_is_failed_with_its_reason_and_other_users_go_on(cluster: Cluster) -> None:
    bad = {"v": 2, "sessions": [{"tracking_id": "t-bad", "user_id": "bad-user", "session_id": "x", "messages": []}]}
    cluster.producer.app.send_task("lightmem.compress.sessions", args=[bad])
    good = cluster.producer.enqueue_session("good-user", _sessions("good-user")[0])
    cluster.producer.flush("good-user")
    assert cluster.producer.wait_indexed([good], timeout_s=60) == {good: "indexed"}
    deadline = time.monotonic() + 30
    while True:
        failures = [f for f in cluster.producer.status()["recent_failures"] if f["task"] == "lightmem.compress.sessions"]
        if failures or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert failures, "the bad payload was not recorded as failed"
    assert "PayloadError" in failures[0]["reason"] and "v" in failures[0]["reason"]
    assert failures[0]["payload"] == bad  # the raw payload is kept
    assert len(cluster.producer.entries("good-user")) == 2


def test_command_line_status_search_and_stats(cluster: Cluster, locomo_indexed: list[Any]) -> None:
    user = locomo_indexed[0].user_id
    lines = _cli(cluster, "search", user, "LGBTQ support group", "--limit", "3").stdout.splitlines()
    found = [line for line in lines if not line.startswith(" ")]  # each memory, then its original messages indented
    # The memory is compressed ("went LGBTQ support yesterday"); the words asked about are in what was said.
    assert len(found) == 3 and any("support group" in line for line in lines)
    originals = [line.strip() for line in lines if line.startswith(" ")]
    assert originals and all(line.split(" (")[0] in ("Caroline", "Melanie") for line in originals)
    env = {**os.environ, **cluster.env}
    unknown = subprocess.run([sys.executable, "-m", "producers.cli", "search", "nobody-ever", "anything"], env=env,
                             capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert unknown.returncode == 1 and "unknown user 'nobody-ever'" in unknown.stderr
    status = json.loads(_cli(cluster, "status", "--json").stdout)
    assert "backlog" in status and "failures" in status
    table = _cli(cluster, "status").stdout
    assert "Queues (messages waiting):" in table and cluster.settings.queue("extract") in table
    assert "Batches in flight:" in table and "Dead letters:" in table
    ids = [line.split("\t")[0] for line in (cluster.workdir / "tracking-ids.tsv").read_text().splitlines()]
    item = _cli(cluster, "status", ids[0]).stdout
    assert "state" in item and "indexed" in item and " UTC" in item  # times as dates
    stats = _cli(cluster, "stats").stdout
    assert "compression ratio" in stats and "LLM calls per 1,000 turns" in stats


def test_no_user_text_in_worker_logs_or_task_results(cluster: Cluster) -> None:
    """A full ingest and search at INFO: the message, the query and the memories appear in no worker's
    log and in no task result left in Redis (search and listing answers leave the desk's keys at once)."""
    secret, query = "quokka-marmalade-7731", "which marmalade does the quokka like"
    tracking_id = cluster.producer.enqueue_session("privacy-user", {
        "session_id": "p1", "time_stamp": "2025-09-01T10:00:00Z",
        "turns": [{"role": "user", "content": f"My secret jam is {secret}, keep it safe."}]})
    cluster.producer.flush("privacy-user")
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}
    hits = cluster.producer.search("privacy-user", query, limit=3)
    assert any(secret in h["memory"] for h in hits)  # the caller gets the memories...
    assert any(secret in e["memory"] for e in cluster.producer.entries("privacy-user"))
    logs = {role: cluster.procs.log(role) for role in ("compress", "extract", "store", "update")}
    assert all("INFO" in text for text in logs.values())  # the logs are there, at INFO
    for role, text in logs.items():  # ...and nobody else does
        assert secret not in text and "quokka" not in text, f"user text in the {role} worker's log"
    r = cluster.producer.state.r
    for key in r.scan_iter(match="celery-task-meta-*", count=1000):
        assert b"quokka" not in (r.get(key) or b""), f"user text in the task result {key!r}"
    assert not list(r.scan_iter(match=f"{cluster.settings.key_prefix}:desk*"))  # requests and answers taken once


@pytest.mark.parametrize("user", ["team:alice", "team:alice}:meta:{x"], ids=["colon", "braces"])
def test_user_ids_with_colons_and_braces_work_end_to_end(cluster: Cluster, user: str) -> None:
    tracking_id = cluster.producer.enqueue_session(user, _sessions(user)[0])
    cluster.producer.flush(user)
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}
    assert [e["user_id"] for e in cluster.producer.entries(user)] == [user, user]
    assert cluster.producer.search(user, "tomato seedlings", limit=2)
