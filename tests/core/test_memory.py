"""End-to-end tests of LightMemory on the real MiniLM embedder and embedded Qdrant; those that use
``history_backend`` run with the history on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest

import lightmem_core
from lightmem_core import LightMemory, parse_config
from lightmem_core.factory import build_components

README_SESSION = {
    "timestamp": "2025-01-10",
    "turns": [[
        {"role": "user", "content": "My favorite ice cream flavor is pistachio, and my dog's name is Rex."},
        {"role": "assistant", "content": "Got it. Pistachio is a great choice."},
    ]],
}
DISTRACTORS = [
    ("2025-01-03", "I work as a nurse at the city hospital."),
    ("2025-01-05", "My sister lives in Lisbon and teaches math."),
    ("2025-01-07", "I started learning the piano last autumn."),
]


def _add_readme_session(memory: LightMemory, user_id: str = "default") -> None:
    for day, text in DISTRACTORS:
        memory.add_memory([{"role": "user", "content": text, "time_stamp": day}], force_extract=True, user_id=user_id)
    for turn in README_SESSION["turns"]:
        for msg in turn:
            msg["time_stamp"] = README_SESSION["timestamp"]
        memory.add_memory(messages=turn, force_segment=True, force_extract=True, user_id=user_id)


@pytest.mark.parametrize("strategy", ["embedding", "context", "hybrid"])
def test_readme_session_finds_rex_first(make_memory, strategy: str) -> None:
    memory = make_memory(retrieve_strategy=strategy)
    _add_readme_session(memory)
    results = memory.retrieve("What is the name of my dog?", limit=5)
    assert "Rex" in results[0].memory
    assert results[0].weekday == "Fri" and results[0].time_stamp.date().isoformat() == "2025-01-10"
    text = memory.retrieve("What is the name of my dog?", limit=5, as_text=True)
    assert text.splitlines()[0] == "2025-01-10 Fri: My favorite ice cream flavor is pistachio, and my dog's name is Rex."


def test_results_carry_their_original_messages(make_memory) -> None:
    """Each result brings the messages it was made from, as they were said, with speaker and time, and
    only those of the asking user."""
    memory = make_memory()
    _add_readme_session(memory)
    memory.add_memory([{"role": "user", "content": "My dog is called Bolt.", "time_stamp": "2025-01-11",
                        "speaker_name": "Bo"}], force_extract=True, user_id="other")
    for result in memory.retrieve("What is the name of my dog?", limit=5):
        assert [m.id for m in result.sources] == result.entry.source_ids
        assert all(m.content and "Bolt" not in m.content for m in result.sources)
    top = memory.retrieve("What is the name of my dog?", limit=1)[0]
    assert [m.content for m in top.sources] == [README_SESSION["turns"][0][0]["content"]]
    assert top.sources[0].role == "user" and top.sources[0].time_stamp.date().isoformat() == "2025-01-10"
    bo = memory.retrieve("dog", limit=1, user_id="other")[0].sources[0]
    assert bo.speaker == "Bo" and bo.content == "My dog is called Bolt."


@pytest.mark.usefixtures("history_backend")
def test_from_config_runs_the_readme_dictionary(memory_config) -> None:
    memory = LightMemory.from_config(memory_config(retrieve_strategy="hybrid"))
    try:
        _add_readme_session(memory)
        assert "Rex" in memory.retrieve("What is the name of my dog?", limit=3)[0].memory
    finally:
        memory.close()


@pytest.mark.usefixtures("history_backend")
def test_restart_sees_the_same_results(memory_config, minilm_embedder) -> None:
    cfg = parse_config(memory_config(retrieve_strategy="hybrid"))
    first = LightMemory(cfg, build_components(cfg, embedder=minilm_embedder))
    _add_readme_session(first)
    before = [(r.id, r.memory) for r in first.retrieve("What is the name of my dog?", limit=4)]
    stats_before = first.get_token_statistics()
    first.close()
    del first
    second = LightMemory(cfg, build_components(cfg, embedder=minilm_embedder))
    try:
        assert [(r.id, r.memory) for r in second.retrieve("What is the name of my dog?", limit=4)] == before
        assert second.get_token_statistics() == stats_before
        assert len(second.history.messages("default")) == 5
    finally:
        second.close()


@pytest.mark.usefixtures("history_backend")
def test_short_term_buffer_waits_for_its_threshold_and_survives_restart(memory_config, minilm_embedder) -> None:
    cfg = parse_config(memory_config(extract_threshold=1.0))  # 1024 tokens before extraction
    memory = LightMemory(cfg, build_components(cfg, embedder=minilm_embedder))
    result = memory.add_memory([{"role": "user", "content": "I keep bees on my roof.", "time_stamp": "2025-02-01"}])
    assert result["entries_stored"] == 0 and memory.get_all() == []
    memory.close()
    reopened = LightMemory(cfg, build_components(cfg, embedder=minilm_embedder))
    try:
        assert reopened.flush("default") == 1
        assert [e.memory for e in reopened.get_all()] == ["I keep bees on my roof."]
    finally:
        reopened.close()


@pytest.mark.usefixtures("history_backend")
def test_bad_input_stores_nothing(make_memory) -> None:
    memory = make_memory()
    with pytest.raises(ValueError, match=r"messages\[1\]\.role"):
        memory.add_memory([{"role": "user", "content": "fine"}, {"role": "alien", "content": "no"}], force_extract=True)
    assert memory.get_all() == [] and memory.history.messages("default") == []
    result = memory.add_memory([{"role": "user", "content": "   "}], force_extract=True)
    assert result["skipped_empty"] == 1 and memory.get_all() == []
    assert memory.get_token_statistics()["messages_skipped_empty"] == 1


@pytest.mark.usefixtures("history_backend")
def test_users_are_isolated_and_delete_all_touches_one_user(make_memory) -> None:
    memory = make_memory(retrieve_strategy="hybrid")
    _add_readme_session(memory, "alice")
    memory.add_memory([{"role": "user", "content": "My cat is called Tom.", "time_stamp": "2025-01-01"}], force_extract=True, user_id="bob")
    assert all(r.entry.user_id == "alice" for r in memory.retrieve("name of my pet", user_id="alice"))
    assert [r.memory for r in memory.retrieve("name of my pet", user_id="bob")] == ["My cat is called Tom."]
    memory.delete_all("alice")
    assert memory.get_all("alice") == [] and len(memory.get_all("bob")) == 1
    entry = memory.get_all("bob")[0]
    assert memory.delete(entry.id) is True and memory.get_all("bob") == []
    assert [h["action"] for h in memory.history_of(entry.id)] == ["ADD", "DELETE"]
    memory.reset()
    assert memory.store.count() == 0


@pytest.mark.usefixtures("history_backend")
def test_readding_the_same_messages_creates_nothing_new(make_memory) -> None:
    memory = make_memory()
    msgs = [{"role": "user", "content": "I was born in Oslo.", "id": "m1", "time_stamp": "2025-01-01"}]
    memory.add_memory(msgs, force_extract=True)
    again = memory.add_memory(msgs, force_extract=True)
    assert again["skipped_known"] == 1 and len(memory.get_all()) == 1


def test_retrieve_filters_by_time(make_memory) -> None:
    memory = make_memory()
    _add_readme_session(memory)
    hits = memory.retrieve("what do I do", limit=10, filters={"time_stamp": {"lt": "2025-01-06"}})
    assert {r.time_stamp.day for r in hits} == {3, 5}


@pytest.mark.usefixtures("history_backend")
def test_offline_update_without_llm_merges_exact_duplicates(make_memory) -> None:
    memory = make_memory()
    for day in ("2025-03-01", "2025-03-02", "2025-03-02"):
        memory.add_memory([{"role": "user", "content": "I run every morning.", "time_stamp": day}], force_extract=True)
    memory.add_memory([{"role": "user", "content": "I own a red bicycle.", "time_stamp": "2025-03-03"}], force_extract=True)
    assert memory.construct_update_queue_all_entries() == 4
    assert memory.construct_update_queue_all_entries() == 0  # incremental: nothing new since the last run
    counts = memory.offline_update_all_entries(score_threshold=0.8)
    texts = sorted(e.memory for e in memory.get_all())
    # The 03-01 entry merges into a newer twin; the two 03-02 twins share a time stamp and are both kept.
    assert counts["delete"] == 1
    assert texts == ["I own a red bicycle.", "I run every morning.", "I run every morning."]
    survivors = [e for e in memory.get_all() if e.memory == "I run every morning."]
    assert sum(len(e.source_ids) for e in survivors) == 3  # provenance of the deleted twin is kept


@pytest.mark.usefixtures("history_backend")
def test_parallel_adds_from_threads(make_memory) -> None:
    memory = make_memory()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                memory.add_memory([{"role": "user", "content": f"thread {n} fact {i}", "time_stamp": "2025-01-01"}],
                                  force_extract=True, user_id=f"u{n}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(memory.get_all(f"u{n}")) for n in range(4)) == [5, 5, 5, 5]
    # topic ids are unique per user, not global
    assert sorted(e.topic_id for e in memory.get_all("u0")) == [1, 2, 3, 4, 5]


@pytest.mark.usefixtures("history_backend")
def test_token_statistics(make_memory) -> None:
    memory = make_memory()
    _add_readme_session(memory)
    stats = memory.get_token_statistics()
    assert stats["messages_in"] == 5 and stats["entries_stored"] == 4
    assert stats["tokens_original"] == stats["tokens_stored"] > 0  # verbatim, no compression
    assert stats["llm_calls"] == 0


def test_public_surface_is_pinned() -> None:
    assert set(lightmem_core.__all__) == {
        "BaseMemoryConfigs", "ConfigError", "ExtractionParseError", "InvalidInput", "LightMemError", "LightMemory",
        "MemoryEntry", "Message", "ModelLoadError", "NotSupportedError", "RetrievedMemory", "Session", "StoreError",
        "TopicSegment", "TransientError", "load_config_file", "parse_config",
    }


@pytest.mark.usefixtures("history_backend")
def test_message_ids_are_scoped_per_user(make_memory) -> None:
    """Two users may send the same explicit id: neither message is skipped, both texts are kept."""
    memory = make_memory()
    for user, text in (("ann", "I keep bees on the roof."), ("bob", "I restore old radios.")):
        result = memory.add_memory([{"id": "m1", "role": "user", "content": text, "time_stamp": "2025-04-01"}],
                                   user_id=user, force_extract=True)
        assert result["added_messages"] == 1 and result["skipped_known"] == 0
    assert [m["content"] for m in memory.history.messages("ann")] == ["I keep bees on the roof."]
    assert [m["content"] for m in memory.history.messages("bob")] == ["I restore old radios."]
    assert [e.source_ids for e in memory.get_all("bob")] == [["m1"]]
    again = memory.add_memory([{"id": "m1", "role": "user", "content": "x", "time_stamp": "2025-04-01"}], user_id="ann")
    assert again["skipped_known"] == 1  # the same user's id again is still known
