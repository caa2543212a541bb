"""graph_mem through LightMemory with the real openai client and the scripted server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lightmem_core import LightMemory, pipeline
from lightmem_core.errors import InvalidInput, NotFound
from lightmem_core.extraction import prompt
from lightmem_core.graph.search import graph_entry_ids
from lightmem_core.history.schema import GRAPH_TABLES
from producers.scripted_llm import ScriptedLLMServer

MakeMemory = Callable[..., LightMemory]
QUESTION = "Where does the sister of Alice live?"


def turn(i: int, text: str, day: str = "2025-03-01") -> dict[str, str]:
    return {"id": f"t{i}", "role": "user", "speaker_name": "Alice", "content": text, "time_stamp": f"{day}T10:{i:02d}:00Z"}


# Bella's city is said in a turn that names neither Alice's sister nor where anyone lives "near": the
# other turns share more of the question's words, so a dense search alone ranks it low.
FAMILY = [
    turn(1, "My sister is Bella."),
    turn(2, "Bella lives in Lisbon."),
    turn(3, "I live in Paris, where the sister of my neighbour does yoga."),
    turn(4, "Where does Carol live? Carol lives in Rome, does she not?"),
    turn(5, "The sister of Dave does not live near Alice."),
    turn(6, "Where does Erin live? Erin lives in Oslo, where does her sister live?"),
]


def graph_rows(memory: LightMemory) -> dict[str, list[tuple[object, ...]]]:
    with memory.history.connection() as conn:
        return {t: sorted(tuple(r.values()) for r in conn.execute(f"SELECT * FROM {t}")) for t in GRAPH_TABLES
                if t != "graph_history"}


@pytest.mark.usefixtures("history_backend")
def test_two_hop_question_finds_the_linked_entry_through_the_graph(make_llm_memory: MakeMemory,
                                                                   llm_server: ScriptedLLMServer) -> None:
    memory = make_llm_memory(graph_mem=True)
    memory.add_memory(FAMILY, user_id="alice", session_id="s1", force_extract=True)
    assert llm_server.purposes() == ["extraction"]  # entities and relations come with the same one call
    assert prompt.GRAPH_VERSION and '"relations"' in llm_server.requests[0]["messages"][0]["content"]
    lisbon = next(e.id for e in memory.get_all("alice") if "Lisbon" in e.memory)

    dense = memory.retrieve(QUESTION, limit=3, user_id="alice")
    one_hop = memory.retrieve(QUESTION, limit=3, user_id="alice", graph_hops=1)
    two_hops = memory.retrieve(QUESTION, limit=3, user_id="alice", graph_hops=2)
    assert lisbon not in [r.id for r in dense]  # dense retrieval alone does not find it
    assert lisbon not in [r.id for r in one_hop]  # Bella is one hop from Alice, Lisbon two
    assert lisbon in [r.id for r in two_hops]
    found = next(r for r in two_hops if r.id == lisbon)
    assert [m.content for m in found.sources] == ["Bella lives in Lisbon."]  # with its original message

    view = memory.graph("alice", "alice")
    assert view["entity"]["label"] == "Alice"
    sister = next(e for e in view["edges"] if e["relation"] == "sister")
    assert (sister["subject"], sister["object"], sister["message_ids"]) == ("Alice", "Bella", ["t1"])
    assert [m["content"] for m in sister["messages"]] == ["My sister is Bella."]
    further = memory.graph("alice", "Alice", hops=2)["edges"]
    assert any(e["object"] == "Lisbon" and e["hop"] == 2 for e in further)
    with pytest.raises(NotFound):
        memory.graph("alice", "Zed")
    assert memory.graph("someone-else")["nodes"] == []  # scoped per user


def test_ids_are_stable_across_runs_and_a_batch_stored_again_writes_nothing(make_llm_memory: MakeMemory,
                                                                             tmp_path: object) -> None:
    first = make_llm_memory(graph_mem=True)
    first.add_memory(FAMILY, user_id="alice", session_id="s1", force_extract=True)
    again = make_llm_memory(graph_mem=True, history_db_path=f"{tmp_path}/again.db",
                            embedding_retriever={"model_name": "qdrant", "configs": {"path": f"{tmp_path}/again"}})
    again.add_memory(FAMILY, user_id="alice", session_id="s1", force_extract=True)
    ids = {t: [r[0] for r in rows] for t, rows in graph_rows(first).items() if t in ("graph_nodes", "graph_edges")}
    assert ids["graph_edges"] and ids == {t: [r[0] for r in rows] for t, rows in graph_rows(again).items()
                                          if t in ("graph_nodes", "graph_edges")}

    # A batch delivered twice (a worker lost after storing): the second store writes nothing.
    memory = make_llm_memory(graph_mem=True, history_db_path=f"{tmp_path}/twice.db",
                             embedding_retriever={"model_name": "qdrant", "configs": {"path": f"{tmp_path}/twice"}})
    memory.add_memory(FAMILY, user_id="bob", session_id="s1")
    memory.state.request_flush("bob")
    with memory.state.lock("bob"):
        batch = pipeline.take_batch(memory.state, "bob", "test", 1, lease_s=60)
    assert batch is not None
    entries = pipeline.extract_batch(batch, memory.components.extractor)
    assert batch.graph is not None and batch.graph.relations
    assert pipeline.store_batch(memory.state, memory.components, batch, entries, memory.spec.roles)
    stored = graph_rows(memory)
    assert not pipeline.store_batch(memory.state, memory.components, batch, entries, memory.spec.roles)
    assert graph_rows(memory) == stored


@pytest.mark.usefixtures("history_backend")
def test_offline_update_merges_aliases_and_retires_contradicted_edges_keeping_history(
        make_llm_memory: MakeMemory) -> None:
    memory = make_llm_memory(graph_mem=True)
    memory.add_memory([turn(1, "Bob lives in Paris.")], user_id="u", session_id="s1", force_extract=True)
    memory.add_memory([turn(2, "Robert, also called Bob, is back. Robert moved to Lisbon.", day="2025-04-01")], user_id="u",
                      session_id="s2", force_extract=True)
    before = {n["label"]: n for n in memory.graph("u")["nodes"]}
    assert before["Bob"]["id"] != before["Robert"]["id"]  # two nodes share the name "bob" until the update
    memory.construct_update_queue_all_entries()
    counts = memory.offline_update_all_entries()
    assert counts["nodes_merged"] == 1 and counts["edges_retired"] == 1

    after = {n["label"]: n for n in memory.graph("u")["nodes"]}
    assert after["Bob"]["merged_into"] == after["Robert"]["id"]  # kept, pointing at the survivor
    view = memory.graph("u", "Bob")  # the alias leads to the survivor
    assert view["entity"]["label"] == "Robert"
    lives = {e["object"]: e for e in view["edges"] if e["relation"] == "lives in"}
    assert lives["Lisbon"]["retired_at"] is None
    assert lives["Paris"]["retired_at"] is not None and lives["Paris"]["message_ids"] == ["t1"]  # history kept
    with memory.history.connection() as conn:
        actions = [r["action"] for r in conn.execute("SELECT action FROM graph_history WHERE user_id = ? ORDER BY id",
                                                     ("u",))]
    assert actions == ["merge_node", "retire_edge", "retire_edge"]  # Bob's old edge moved, then Paris retired
    lisbon = next(e.id for e in memory.get_all("u") if "Lisbon" in e.memory)
    assert graph_entry_ids(memory.history, "u", "Where does Bob live?", 1) == [lisbon]  # retired edges are not walked


def test_graph_options_are_checked(make_llm_memory: MakeMemory, make_memory: Callable[..., LightMemory],
                                   caplog: pytest.LogCaptureFixture, tmp_path: object) -> None:
    plain = make_llm_memory()
    with pytest.raises(InvalidInput, match="graph_mem"):
        plain.retrieve("anything", user_id="u", graph_hops=1)
    graph = make_llm_memory(graph_mem=True, history_db_path=f"{tmp_path}/graph.db",
                            embedding_retriever={"model_name": "qdrant", "configs": {"path": f"{tmp_path}/graph"}})
    with pytest.raises(InvalidInput, match="graph_hops"):
        graph.retrieve("anything", user_id="u", graph_hops=3)
    with pytest.raises(InvalidInput, match="filters"):
        graph.retrieve("anything", user_id="u", graph_hops=1, filters={"speaker": "Alice"})
    with caplog.at_level("WARNING"):
        make_memory(graph_mem=True)  # verbatim extraction: no LLM, so no graph
    assert any("graph_mem needs an LLM" in r.message for r in caplog.records)


def test_a_relation_citing_a_message_not_sent_is_invalid() -> None:
    data = prompt.ExtractionInput(topics=[prompt.PromptTopic(topic_id=1, messages=[
        prompt.PromptMessage(ref="m1", time="t", speaker="Alice", text="My sister is Bella.")])], with_graph=True)
    assert data.version == prompt.GRAPH_VERSION
    bad = '{"facts": [], "relations": [{"subject": "Alice", "relation": "sister", "object": "Bella", "source_ids": ["m9"]}]}'
    with pytest.raises(Exception, match="m9"):
        prompt.parse(bad, data)
