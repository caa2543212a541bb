"""``summary_retriever``: topic summaries indexed in their own collection and searched first.

The scripted server summarises each topic as "Talk about <its first message>", so a question about a
conversation's subject matches that topic's summary even where the entry it needs shares no word with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.errors import ConfigError
from lightmem_core.models import RetrievedMemory
from lightmem_core.summaries import summary_id

MakeMemory = Callable[..., LightMemory]

TRIP = ["I am planning a trip to Japan next spring with my sister.",
        "I already booked the hotel near the station in Kyoto.",
        "We want to see the temples and eat ramen every day."]
WORK = ["My new job at the bank starts on Monday.",
        "The hotel next to the bank has a nice cafe for lunch.",
        "My manager seems friendly and patient."]
QUESTION = "Which hotel did I book for the Japan trip?"


def _add(memory: LightMemory, user: str) -> None:
    for session_id, texts, day in (("trip", TRIP, "2025-03-01"), ("work", WORK, "2025-03-02")):
        memory.add_memory([{"role": "user", "content": t, "time_stamp": f"{day}T10:0{i}:00Z"} for i, t in enumerate(texts)],
                          user_id=user, session_id=session_id, force_extract=True)


def _topics(hits: list[RetrievedMemory]) -> list[int]:
    return [h.entry.topic_id for h in hits]


def _own(name: str, tmp_path: Path) -> dict[str, Any]:
    """Entries of a second memory in the same test: a folder of their own."""
    return {"model_name": "qdrant", "configs": {"collection_name": name, "path": str(tmp_path / name)}}


SUMMARIES = {"summary_retriever": {"model_name": "qdrant", "configs": {"top_topics": 1}}}


def test_summary_retrieval_returns_the_right_topics_entries(make_llm_memory: MakeMemory, tmp_path: Path) -> None:
    # Both strategies in one test: their memories' LLM clients are closed with this test's server.
    for strategy in ("embedding", "hybrid"):
        plain = make_llm_memory(text_summary=True, index_strategy="hybrid", retrieve_strategy=strategy,
                                history_db_path=str(tmp_path / f"plain-{strategy}.db"),
                                embedding_retriever=_own(f"plain-{strategy}", tmp_path))
        memory = make_llm_memory(text_summary=True, index_strategy="hybrid", retrieve_strategy=strategy,
                                 history_db_path=str(tmp_path / f"{strategy}.db"), embedding_retriever=_own(strategy, tmp_path),
                                 **SUMMARIES)
        for m in (plain, memory):
            _add(m, "ann")
        trip_topic = next(e.topic_id for e in memory.get_all("ann") if e.session_id == "trip")
        summaries = memory.components.summaries
        assert summaries is not None and summaries.store.count("ann") == 2  # one point per topic, in its own collection
        assert summaries.store.get([summary_id("ann", trip_topic)])[0].memory.startswith("Talk about I am planning a trip")
        hits = memory.retrieve(QUESTION, limit=3, user_id="ann")
        assert isinstance(hits, list) and _topics(hits) == [trip_topic] * 3, strategy  # the trip topic's entries only
        assert any("booked the hotel" in h.memory for h in hits) and hits[0].sources  # with their original messages
        # Plain entry search mixes in the work topic's hotel entry: the summaries made the difference.
        assert len(set(_topics(plain.retrieve(QUESTION, limit=3, user_id="ann")))) > 1, strategy  # type: ignore[arg-type]


def test_summaries_are_kept_per_user_and_forgotten_with_the_user(make_llm_memory: MakeMemory) -> None:
    memory = make_llm_memory(text_summary=True, **SUMMARIES)
    _add(memory, "ann")
    _add(memory, "bob")
    summaries = memory.components.summaries
    assert summaries is not None and summaries.store.count("ann") == 2 and summaries.store.count("bob") == 2
    assert {h.entry.user_id for h in memory.retrieve(QUESTION, limit=5, user_id="bob")} == {"bob"}  # type: ignore[union-attr]
    memory.flush("ann")  # nothing new: the summary points are rewritten in place, never doubled
    assert summaries.store.count("ann") == 2
    memory.delete_all("ann")
    assert summaries.store.count("ann") == 0 and summaries.store.count("bob") == 2


def test_fused_and_padded_results_fill_the_limit(make_llm_memory: MakeMemory, tmp_path: Path) -> None:
    first = make_llm_memory(text_summary=True, **SUMMARIES)
    fused = make_llm_memory(text_summary=True, history_db_path=str(tmp_path / "fused.db"),
                            embedding_retriever=_own("fused", tmp_path),
                            summary_retriever={"configs": {"top_topics": 1, "retrieval": "fused"}})
    for m in (first, fused):
        _add(m, "ann")
    trip_topic = next(e.topic_id for e in first.get_all("ann") if e.session_id == "trip")
    assert trip_topic == next(e.topic_id for e in fused.get_all("ann") if e.session_id == "trip")
    padded = first.retrieve(QUESTION, limit=5, user_id="ann")
    assert _topics(padded)[:3] == [trip_topic] * 3 and len(padded) == 5  # the best topic first, then entry search
    merged = fused.retrieve(QUESTION, limit=5, user_id="ann")
    assert len(merged) == 5 and _topics(merged)[0] == trip_topic
    # a caller's own topic filter wins: plain entry search inside it
    other = first.retrieve(QUESTION, limit=5, user_id="ann", filters={"topic_id": {"in": [trip_topic + 1]}})
    assert set(_topics(other)) == {trip_topic + 1}


def test_summary_retriever_needs_summaries_and_its_own_collection(make_llm_memory: MakeMemory) -> None:
    with pytest.raises(ConfigError, match="summary_retriever needs text_summary"):
        make_llm_memory(text_summary=False, **SUMMARIES)
    with pytest.raises(ConfigError, match="their own"):
        make_llm_memory(text_summary=True, summary_retriever={"configs": {"collection_name": "llm_tests"}})
    with pytest.raises(ConfigError, match="both embedded"):
        make_llm_memory(text_summary=True, summary_retriever={"configs": {"url": "http://127.0.0.1:1"}})
