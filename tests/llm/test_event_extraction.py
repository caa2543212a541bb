"""``extraction_mode: event``: LightMem's relational call after the factual one, for every batch."""

from __future__ import annotations

from collections.abc import Callable

from lightmem_core import LightMemory
from producers.scripted_llm import ScriptedLLMServer

MakeMemory = Callable[..., LightMemory]

SESSION = [
    {"id": "t1", "role": "user", "speaker_name": "Ann", "content": "I got accepted to grad school!",
     "time_stamp": "2025-03-01T10:00:00Z"},
    {"id": "t2", "role": "user", "speaker_name": "Bob", "content": "Congratulations! What will you study there?",
     "time_stamp": "2025-03-01T10:01:00Z"},
    {"id": "t3", "role": "user", "speaker_name": "Ann", "content": "Machine learning. Thank you for always backing me.",
     "time_stamp": "2025-03-01T10:02:00Z"},
]


def test_event_mode_adds_relational_entries_from_a_second_call(make_llm_memory: MakeMemory,
                                                                llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory(extraction_mode="event")
    memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    factual_call, relational_call = llm_server.requests  # two calls for the one batch, as LightMem makes
    assert "how the people in it relate" in relational_call["messages"][0]["content"]
    assert relational_call["messages"][1] == factual_call["messages"][1]  # the same conversation, the same refs
    entries = memory.get_all("ann")
    assert isinstance(entries, list)
    relational = {e.memory: e for e in entries if e.category == "relational"}
    assert set(relational) == {"Bob congratulated the others: Congratulations! What will you study there?",
                               "Ann thanked the others: Machine learning. Thank you for always backing me."}
    assert relational["Bob congratulated the others: Congratulations! What will you study there?"].source_ids == ["t2"]
    thanks = relational["Ann thanked the others: Machine learning. Thank you for always backing me."]
    assert thanks.source_ids == ["t3"] and thanks.speaker == "Ann" and thanks.time_stamp.minute == 2
    assert len([e for e in entries if e.category is None]) == 3  # the factual entries, one per message here
    assert memory.get_token_statistics("ann")["llm_calls"] == 2
    hits = memory.retrieve("Who congratulated Ann?", limit=5, user_id="ann", filters={"category": "relational"})
    assert isinstance(hits, list) and {h.entry.category for h in hits} == {"relational"} and len(hits) == 2


def test_flat_mode_makes_one_call(make_llm_memory: MakeMemory, llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory()
    memory.add_memory(SESSION, user_id="ann", session_id="s1", force_extract=True)
    assert len(llm_server.requests) == 1
    assert not [e for e in memory.get_all("ann") if e.category == "relational"]
