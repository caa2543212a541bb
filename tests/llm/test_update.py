"""Offline and online update with the LLM deciding, through the real ``openai`` client."""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.errors import TransientError
from producers.scripted_llm import ScriptedLLMServer, Step

MakeMemory = Callable[..., LightMemory]

PARIS = "I live in Paris near the old river."
GUITAR = "I play the guitar every evening after work."
TEA = "I drink green tea every single morning."
NEWER = {PARIS: "I live in Paris near the old river, in a bigger flat now.",
         GUITAR: "I play the guitar every evening after work with my band.",
         TEA: "I drink green tea every single morning with honey."}
UPDATED = "Ann lives in a bigger flat in Paris near the old river."


def said(text: str) -> str:
    return f"Ann said: {text}"  # how the scripted server's automatic extraction words a fact


def judge(text: str, cands: dict[str, str]) -> dict[str, str]:
    """The scripted model's decision about one target memory."""
    if text == said(PARIS):
        return {"action": "update", "new_text": UPDATED, "reason": "Ann moved to a bigger flat"}
    if text == said(GUITAR):
        band = next(ref for ref, t in cands.items() if "band" in t)
        return {"action": "delete", "merge_into": band, "reason": "the newer memory says more"}
    return {"action": "ignore", "reason": "both stay true"}


def decide(body: dict[str, Any]) -> str | None:
    """The scripted model's update decisions, keyed on the target memory: one per target of a batched
    (offline) prompt, or the one of a single-target (online) prompt."""
    user = body["messages"][1]["content"] if len(body["messages"]) > 1 else ""
    decisions = []
    for block in re.split(r"\n\n(?=Target \[)", user):
        target = re.match(r"Target \[(t\d*)\] \S+ \S+ \S+: (.*)", block)
        if target is None:
            return None  # not an update prompt: automatic answer
        cands = dict(re.findall(r"^\[(c\d+)\] \S+ \S+ \S+: (.*)$", block, re.M))
        decisions.append({"target": target.group(1), **judge(target.group(2), cands)})
    if '"decisions"' in body["messages"][0]["content"]:
        return json.dumps({"decisions": decisions})
    return json.dumps({k: v for k, v in decisions[0].items() if k != "target"})


def add(memory: LightMemory, text: str, day: int, user: str = "ann") -> None:
    memory.add_memory([{"role": "user", "speaker_name": "Ann", "content": text, "time_stamp": f"2025-04-{day:02d}"}],
                      user_id=user, force_extract=True)


def add_three_and_newer(memory: LightMemory) -> None:
    """Paris, guitar and tea on days 1-3, then what Ann said later about each on days 10-12."""
    for day, text in enumerate([PARIS, GUITAR, TEA], start=1):
        add(memory, text, day)
    for day, text in enumerate([NEWER[PARIS], NEWER[GUITAR], NEWER[TEA]], start=10):
        add(memory, text, day)


def by_text(memory: LightMemory, user: str = "ann") -> dict[str, Any]:
    return {e.memory: e for e in memory.get_all(user)}


def actions(memory: LightMemory, entry_id: str) -> list[str]:
    return [h["action"] for h in memory.history_of(entry_id)]


def test_offline_update_applies_update_delete_ignore(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    llm_server.responder = decide
    memory = make_llm_memory()
    add_three_and_newer(memory)
    before = by_text(memory)
    paris, guitar, tea = before[said(PARIS)], before[said(GUITAR)], before[said(TEA)]
    band = before[said(NEWER[GUITAR])]
    old_vector = memory.store.dense_vectors([paris.id])[paris.id]

    assert memory.construct_update_queue_all_entries() == 6
    counts = memory.offline_update_all_entries(score_threshold=0.5)
    assert counts["update"] == 1 and counts["delete"] == 1 and counts["ignore"] >= 1 and counts["failed"] == 0
    assert "update" in llm_server.purposes()

    after = by_text(memory)
    assert UPDATED in after and said(PARIS) not in after and said(GUITAR) not in after
    assert after[said(TEA)].id == tea.id  # ignored: unchanged
    updated = after[UPDATED]
    assert updated.id == paris.id and updated.source_ids == paris.source_ids
    new_vector = memory.store.dense_vectors([paris.id])[paris.id]
    expected = HashingEmbedder(64).embed([UPDATED])[0]
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(new_vector, expected, strict=True))
    assert not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(new_vector, old_vector, strict=True))
    hits = memory.retrieve("bigger flat in Paris", limit=1, user_id="ann")
    assert isinstance(hits, list) and hits[0].id == paris.id  # found by its new vector

    trail = memory.history_of(paris.id)
    assert [h["action"] for h in trail] == ["ADD", "UPDATE"]
    assert (trail[1]["old_text"], trail[1]["new_text"], trail[1]["reason"]) == (said(PARIS), UPDATED,
                                                                                 "Ann moved to a bigger flat")
    assert trail[1]["created_at"] >= trail[0]["created_at"]
    assert actions(memory, guitar.id) == ["ADD", "DELETE"]
    assert memory.history_of(guitar.id)[1]["old_text"] == said(GUITAR)
    assert actions(memory, band.id) == ["ADD", "MERGE"]
    assert set(guitar.source_ids) < set(after[said(NEWER[GUITAR])].source_ids)  # provenance kept by the survivor
    assert actions(memory, tea.id) == ["ADD"]

    # Incremental: nothing new, nothing to search; decided entries left the queue.
    calls = len(llm_server.requests)
    assert memory.construct_update_queue_all_entries() == 0
    memory.offline_update_all_entries(score_threshold=0.5)
    assert len(llm_server.requests) == calls


def test_equal_time_stamps_never_delete_each_other(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    llm_server.responder = lambda body: json.dumps({"action": "delete", "reason": "always delete"}) \
        if '"action"' in body["messages"][0]["content"] else None
    memory = make_llm_memory()
    add(memory, GUITAR, 5)
    add(memory, GUITAR + " Really.", 5)
    memory.construct_update_queue_all_entries()
    counts = memory.offline_update_all_entries(score_threshold=0.0)
    assert counts["delete"] == 0 and len(memory.get_all("ann")) == 2
    assert "update" not in llm_server.purposes()


@pytest.mark.usefixtures("history_backend")
def test_invalid_decision_is_recorded_and_stays_queued(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory()
    add(memory, TEA, 1)
    add(memory, NEWER[TEA], 2)
    memory.construct_update_queue_all_entries()
    llm_server.script(Step(content='{"action": "rewrite"}'), Step(content='{"action": "update"}'))
    counts = memory.offline_update_all_entries(score_threshold=0.5)
    assert counts["failed"] == 1
    [failure] = memory.history.failures("ann")
    assert failure["purpose"] == "update" and failure["raw_reply"] == '{"action": "update"}'
    tea = by_text(memory)[said(TEA)]
    assert tea.id in dict(memory.history.update_queue("ann"))
    assert memory.offline_update_all_entries(score_threshold=0.5)["ignore"] == 1  # automatic answer next time


def test_online_mode_updates_right_after_storing(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    llm_server.responder = decide
    memory = make_llm_memory(update="online", llm={"online_score_threshold": 0.5})
    add(memory, PARIS, 1)
    add(memory, GUITAR, 2)
    assert "update" not in llm_server.purposes()  # nothing similar and older yet
    paris_id = by_text(memory)[said(PARIS)].id
    add(memory, NEWER[PARIS], 10)
    texts = by_text(memory)
    assert UPDATED in texts and said(NEWER[PARIS]) in texts  # stored, and the older one updated at once
    assert actions(memory, paris_id) == ["ADD", "UPDATE"]
    add(memory, NEWER[GUITAR], 11)
    texts = by_text(memory)
    assert said(GUITAR) not in texts and said(NEWER[GUITAR]) in texts
    assert sorted(texts) == sorted([UPDATED, said(NEWER[PARIS]), said(NEWER[GUITAR])])


def test_online_mode_without_llm_merges_exact_duplicates(make_llm_memory: MakeMemory) -> None:
    memory = make_llm_memory(update="online", memory_manager={"model_name": "verbatim"})
    for day in (1, 2):
        memory.add_memory([{"role": "user", "content": TEA, "time_stamp": f"2025-04-0{day}"}], user_id="ann",
                          force_extract=True)
    [kept] = memory.get_all("ann")
    assert len(kept.source_ids) == 2


# --- batched decisions -------------------------------------------------------------------------------
HOBBIES = ["swimming in the lake", "baking sourdough bread", "reading old maps", "growing tomatoes",
           "restoring an old bicycle", "learning the violin"]


SIMILAR = 0.9  # a hobby's two memories score 0.94-0.95 (hashing vectors), two hobbies at most 0.84


def pairs(memory: LightMemory, users: tuple[str, ...] = ("ann", "bob")) -> None:
    """Per user, one memory per hobby and a newer one that says more about it: six entries to decide."""
    for user in users:
        for i, hobby in enumerate(HOBBIES):
            where = " in Oslo" if user == "bob" else ""
            add(memory, f"I enjoy {hobby} on weekends{where}.", 1 + i, user)
            add(memory, f"I enjoy {hobby} on weekends{where} with my cousin.", 10 + i, user)


def state(memory: LightMemory) -> list[tuple[str, str, list[str]]]:
    return sorted((user, e.memory, sorted(e.source_ids)) for user in ("ann", "bob") for e in memory.get_all(user))


def test_batched_calls_in_flight_and_a_result_independent_of_timing(
        make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer, tmp_path: Path) -> None:
    """Six entries per user, two per call, three calls at once: six calls, each naming its targets; answers
    that come back in a random order give the same memory as one call at a time."""
    llm_server.update_actions = "mixed"
    jitter = random.Random(7)

    def slow(body: dict[str, Any]) -> None:
        if '"decisions"' in body["messages"][0]["content"]:
            time.sleep(jitter.uniform(0.05, 0.4))  # calls finish out of order
        return None  # the automatic (mixed) answer

    results = []
    for in_flight in (3, 1):
        folder = tmp_path / f"in-flight-{in_flight}"
        memory = make_llm_memory(history_db_path=str(folder / "history.db"),
                                 embedding_retriever={"model_name": "qdrant", "configs": {"path": str(folder / "qdrant")}},
                                 llm={"update_batch_size": 2, "update_max_in_flight": in_flight})
        pairs(memory)
        memory.construct_update_queue_all_entries()
        llm_server.responder, llm_server.max_in_flight, sent = slow, 0, len(llm_server.requests)
        counts = memory.offline_update_all_entries(score_threshold=SIMILAR)
        llm_server.responder = None
        calls = llm_server.requests[sent:]
        assert counts["failed"] == 0 and sum(counts.values()) == 12
        assert len(calls) == 6 and llm_server.max_in_flight == in_flight
        assert all(b["messages"][1]["content"].count("Target [") == 2 for b in calls)
        results.append((counts, state(memory)))
    assert results[0] == results[1]
    assert {a for a, n in results[0][0].items() if n} == {"update", "delete", "ignore"}


def test_one_bad_decision_fails_alone_after_a_repair_turn(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    """Tea (and any other target): ignored. Paris: missing from the first reply, given in the repair turn. Guitar: names a memory
    never shown, twice: recorded as failed and still queued; the other two are applied."""

    def partly(body: dict[str, Any]) -> str | None:
        messages = body["messages"]
        if '"decisions"' not in messages[0]["content"]:
            return None
        refs = dict((text, ref) for ref, text in re.findall(r"^Target \[(t\d+)\] \S+ \S+ \S+: (.*)$", messages[1]["content"], re.M))
        bad = {"target": refs[said(GUITAR)], "action": "delete", "merge_into": "c9"}
        if len(messages) == 2:
            others = [{"target": ref, "action": "ignore"} for text, ref in refs.items() if text not in (said(PARIS), said(GUITAR))]
            return json.dumps({"decisions": [*others, bad]})
        return json.dumps({"decisions": [{"target": refs[said(PARIS)], "action": "update", "new_text": UPDATED}, bad]})

    llm_server.responder = partly
    memory = make_llm_memory()
    add_three_and_newer(memory)
    before = by_text(memory)
    guitar, paris, tea = before[said(GUITAR)], before[said(PARIS)], before[said(TEA)]
    memory.construct_update_queue_all_entries()
    sent = len(llm_server.requests)
    counts = memory.offline_update_all_entries(score_threshold=0.5)
    assert counts["update"] == 1 and counts["delete"] == 0 and counts["ignore"] >= 1 and counts["failed"] == 1
    assert llm_server.purposes()[sent:] == ["update", "update_repair"]
    assert UPDATED in by_text(memory) and said(GUITAR) in by_text(memory)
    [failure] = memory.history.failures("ann")
    assert failure["purpose"] == "update" and "c9" in failure["reason"] and '"c9"' in failure["raw_reply"]
    queued = dict(memory.history.update_queue("ann"))
    assert guitar.id in queued and paris.id not in queued and tea.id not in queued  # the decided ones left it


def test_a_run_stopped_by_a_failing_endpoint_never_applies_a_decision_twice(
        make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    """The endpoint fails for good on one of bob's calls (users go in order: ann's first): the run stops
    there, what was applied stays applied and off the queue; the run again decides only what is left."""
    llm_server.update_actions = "mixed"
    memory = make_llm_memory(llm={"max_retries": 0, "update_batch_size": 2, "update_max_in_flight": 2})
    pairs(memory)
    ids = [e.id for user in ("ann", "bob") for e in memory.get_all(user)]
    memory.construct_update_queue_all_entries()
    llm_server.fail_marker, llm_server.fail_status = "violin on weekends in Oslo", 500
    with pytest.raises(TransientError):
        memory.offline_update_all_entries(score_threshold=SIMILAR)
    llm_server.fail_marker = llm_server.fail_status = None
    left = memory.offline_update_all_entries(score_threshold=SIMILAR)
    assert 0 < sum(left.values()) <= 6 and left["failed"] == 0  # ann's six were applied in the first run
    assert sum(memory.offline_update_all_entries(score_threshold=SIMILAR).values()) == 0  # nothing left
    for entry_id in ids:
        decided = [h["action"] for h in memory.history_of(entry_id) if h["action"] in ("UPDATE", "DELETE")]
        assert len(decided) <= 1, entry_id
