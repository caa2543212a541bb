"""LLM extraction through ``LightMemory`` with the real ``openai`` client and the scripted server."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lightmem_core import LightMemory
from lightmem_core.tokens import count_tokens
from producers.scripted_llm import ScriptedLLMServer, Step

MakeMemory = Callable[..., LightMemory]

SESSION = [
    {"id": "t1", "role": "user", "speaker_name": "Ann", "content": "I adopted a dog named Rex last week.",
     "time_stamp": "2025-03-01T10:00:00Z"},
    {"id": "t2", "role": "assistant", "content": "Congratulations! What breed is he?", "time_stamp": "2025-03-01T10:00:30Z"},
    {"id": "t3", "role": "user", "speaker_name": "Ann", "content": "A beagle. He loves the park by the river.",
     "time_stamp": "2025-03-01T10:01:00Z"},
]


@pytest.mark.usefixtures("history_backend")
def test_entries_carry_provenance_and_source_time_stamps(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory(metadata_generate=True, text_summary=True)
    reply = {"facts": [{"text": "Ann adopted a beagle named Rex in late February 2025.", "source_ids": ["m1", "m2"],
                        "keywords": ["dog", "Rex"], "category": "pets"},
                       {"text": "Ann's dog Rex loves the park by the river.", "source_ids": ["m2"],
                        "keywords": ["park"], "category": "pets"}],
             "summaries": [{"topic_id": 1, "summary": "Ann's new dog."}]}
    llm_server.script(Step(content=json.dumps(reply)))
    result = memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert result["entries_stored"] == 2
    sent = llm_server.requests[0]["messages"][1]["content"]
    assert "[m1]" in sent and "[m2]" in sent and "Congratulations" not in sent  # messages_use=user_only
    by_text = {e.memory: e for e in memory.get_all("ann")}
    both = by_text["Ann adopted a beagle named Rex in late February 2025."]
    assert both.source_ids == ["t1", "t3"]  # m1, m2 are this call's names for t1 and t3
    assert both.time_stamp.isoformat() == "2025-03-01T10:01:00+00:00"  # the latest source message
    assert both.keywords == ["dog", "Rex"] and both.category == "pets" and both.summary == "Ann's new dog."
    park = by_text["Ann's dog Rex loves the park by the river."]
    assert park.source_ids == ["t3"] and park.time_stamp.isoformat() == "2025-03-01T10:01:00+00:00"
    assert park.speaker == "Ann" and park.weekday == "Sat"
    stats = memory.get_token_statistics("ann")
    assert stats["llm_calls"] == 1 and stats["llm_prompt_tokens"] > 0 and stats["llm_completion_tokens"] > 0
    assert memory.history.llm_totals("ann", "s1")["calls"] == 1  # per session too
    assert memory.history.llm_totals("someone-else")["calls"] == 0


@pytest.mark.usefixtures("history_backend")
def test_topic_ids_are_unique_per_user_not_global(make_llm_memory: MakeMemory) -> None:
    memory = make_llm_memory()
    for user in ("a", "b"):
        for day in ("2025-01-01", "2025-01-02"):
            memory.add_memory([{"role": "user", "content": f"{user} went hiking on {day}.", "time_stamp": day}],
                              user_id=user, force_extract=True)
    for user in ("a", "b"):
        assert sorted(e.topic_id for e in memory.get_all(user)) == [1, 2]


@pytest.mark.parametrize(("capacity", "share"), [(200, 0.5), (400, 0.25), (120, 1.0)])
def test_number_of_calls_follows_the_threshold(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer,
                                               capacity: int, share: float) -> None:
    memory = make_llm_memory(extract_threshold=share, llm={"short_term_capacity_tokens": capacity})
    threshold = memory.config.short_term_threshold_tokens
    assert threshold == round(share * capacity)
    texts = [f"On day {i} I {' '.join(['walked'] * (5 + 7 * (i % 4)))} to the market." for i in range(24)]
    expected, buffered = 0, 0
    for i, text in enumerate(texts):
        memory.add_memory([{"role": "user", "content": text, "time_stamp": f"2025-02-{i + 1:02d}"},
                           {"role": "assistant", "content": "Noted, " * 40, "time_stamp": f"2025-02-{i + 1:02d}"}],
                          user_id="u")
        buffered += count_tokens(text)  # only user turns count (messages_use=user_only)
        if buffered >= threshold:
            expected, buffered = expected + 1, 0
    assert expected >= 2
    memory.wait("u")  # add_memory hands the calls to the background pool
    assert len(llm_server.requests) == expected
    assert memory.get_token_statistics("u")["llm_calls"] == expected
    assert len(memory.get_all("u")) == 24 - len(memory.state.buffered("u"))
    memory.flush("u")
    assert len(llm_server.requests) == expected + (1 if buffered else 0)
    assert len(memory.get_all("u")) == 24


def test_unknown_source_id_gets_one_repair(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory()
    bad = {"facts": [{"text": "Ann has a dog.", "source_ids": ["m9"]}]}
    llm_server.script(Step(content=json.dumps(bad)))  # then the automatic, valid answer
    memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert llm_server.purposes() == ["extraction", "extraction_repair"]
    repair = llm_server.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": json.dumps(bad)}
    assert "m9" in repair[-1]["content"] and "not sent in this call" in repair[-1]["content"]
    assert {tuple(e.source_ids) for e in memory.get_all("ann")} == {("t1",), ("t3",)}
    assert memory.history.failures("ann") == []


@pytest.mark.usefixtures("history_backend")
def test_invalid_twice_is_kept_as_failed_and_retried_later(make_llm_memory: MakeMemory,
                                                           llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory()
    wrong_ids = json.dumps({"facts": [{"text": "Ann has a dog.", "source_ids": ["m7"]}]})
    llm_server.script(Step(content="{not json"), Step(content=wrong_ids))
    result = memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert result["entries_stored"] == 0 and memory.get_all("ann") == []  # never clamped onto m1/m2
    [failure] = memory.history.failures("ann")
    assert failure["purpose"] == "extraction" and failure["raw_reply"] == wrong_ids
    assert "m7" in failure["reason"] and "not valid JSON" in failure["reason"]
    [parked] = memory.state.failed("ann")
    assert [m.id for m in parked.messages] == ["t1", "t2", "t3"]
    assert parked.reason == failure["reason"] and parked.raw_reply == wrong_ids
    assert json.loads(failure["payload"])["batch_id"] == parked.batch_id
    # New input is not blocked by the failed batch.
    memory.add_memory([{"id": "t4", "role": "user", "content": "I work as a nurse.", "time_stamp": "2025-03-02"}],
                      user_id="ann", force_extract=True)
    assert [e.source_ids for e in memory.get_all("ann")] == [["t4"]]
    # Later, with a working model, the kept batch is extracted and the failure resolved.
    done = memory.retry_failed("ann")
    assert done == {"calls_retried": 0, "retried": 1, "still_failed": 0, "entries_stored": 2}
    assert memory.history.failures("ann") == [] and memory.state.failed("ann") == []
    assert sorted(s for e in memory.get_all("ann") for s in e.source_ids) == ["t1", "t3", "t4"]


@pytest.mark.usefixtures("history_backend")
def test_retry_that_fails_again_stays_failed(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory()
    llm_server.script(*[Step(content="nope")] * 4)
    memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert memory.retry_failed("ann") == {"calls_retried": 0, "retried": 1, "still_failed": 1, "entries_stored": 0}
    assert len(memory.history.failures("ann")) == 1
    assert len(memory.history.failures("ann", include_resolved=True)) == 2
    [open_failure] = memory.history.failures("ann")
    kept = [b.batch_id for b in memory.state.failed("ann")]
    assert len(kept) == 1 and [json.loads(open_failure["payload"])["batch_id"]] == kept


def test_server_down_keeps_the_buffer(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory(llm={"max_retries": 1})
    llm_server.script(Step(status=500), Step(status=500))
    assert memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)["entries_stored"] == 0
    [kept] = memory.state.in_flight("ann")  # nothing lost; the next trigger takes it again
    assert [m.id for m in kept.messages] == ["t1", "t2", "t3"] and memory.state.failed("ann") == []
    assert memory.flush("ann") == 2


def test_verbatim_mode_still_needs_no_llm(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory(memory_manager={"model_name": "verbatim"})
    memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert sorted(e.source_ids[0] for e in memory.get_all("ann")) == ["t1", "t3"]
    assert llm_server.requests == [] and memory.get_token_statistics("ann")["llm_calls"] == 0
