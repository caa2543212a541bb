"""Issue 15's retrieval mechanisms on small hand-made conversations: entries indexed by their original
text and their topic's previous turns (returned compressed), and speakers' names and self-introduced
aliases matched in queries. Real MiniLM, real embedded Qdrant, real history store."""

from __future__ import annotations

from typing import Any

import pytest

from lightmem_core.extraction.index_text import IndexTexts, embed_text, match_text
from lightmem_core.models import Message
from lightmem_core.speakers import named_speakers, names_in

COMPRESSED = {"pre_compress": True, "pre_compressor": {"model_name": "entropy_compress", "configs": {
    "entropy_config": {"model_name": "wordfreq"}, "compress_config": {"rate": 0.4}}}}


def _msg(i: int, speaker: str | None, content: str, session: str = "s1", role: str = "user") -> Message:
    return Message(id=f"m{i}", user_id="u", session_id=session, turn_index=i, role=role, content=content,
                   time_stamp="2025-03-02T10:00:00Z", speaker=speaker, compressed=content.split()[0])


def _own_folder(tmp_path: Any, name: str) -> dict[str, Any]:
    """Paths of its own for one of several memories in a test (one process per embedded store folder)."""
    return {"history_db_path": str(tmp_path / f"{name}.db"), "embedding_retriever": {
        "model_name": "qdrant", "configs": {"collection_name": "c", "embedding_model_dims": 384, "path": str(tmp_path / name)}}}


def _add(memory: Any, user: str, session: str, turns: list[tuple[str, str]]) -> None:
    memory.add_memory([{"role": "user", "speaker_name": who, "content": text, "time_stamp": "2025-03-02T10:00:00Z"}
                       for who, text in turns], force_segment=True, force_extract=True, user_id=user, session_id=session)


def test_index_texts_read_the_original_and_the_previous_turns_of_the_segment_only() -> None:
    turns = [_msg(0, "Ann", "Did you adopt the puppy?"), _msg(1, "Tom", "Yes, last Sunday!"),
             _msg(2, None, "Noted.", role="assistant"), _msg(3, "Ann", "What breed is he?")]
    how = IndexTexts(original=True, context_turns=2)
    assert match_text(turns[1], how) == "Tom: Yes, last Sunday!"
    assert embed_text(turns, 0, how) == "Ann: Did you adopt the puppy?"  # nothing before the segment's start
    assert embed_text(turns, 1, how) == "Ann: Did\nTom: Yes, last Sunday!"  # context compressed, the turn whole
    assert embed_text(turns, 3, how) == "Tom: Yes,\nNoted.\nAnn: What breed is he?"  # two turns back, any role
    assert match_text(turns[1], IndexTexts()) is None and embed_text(turns, 1, IndexTexts()) is None


def test_a_word_compression_dropped_is_still_found_and_the_entry_returns_compressed(make_memory, tmp_path) -> None:
    said = "We finally went camping near the lake with the kids yesterday."
    found = {}
    for original in (False, True):
        memory = make_memory(**COMPRESSED, **_own_folder(tmp_path, str(original)), index_original=original,
                             retrieve_strategy="context")
        _add(memory, "u", "s1", [("Ann", said), ("Tom", "The weather report says rain for the whole weekend.")])
        hits = memory.retrieve("Who was with the kids?", limit=2, user_id="u")
        found[original] = [h.memory for h in hits]
    assert found[False] == []  # "kids" was compressed away, so BM25 over the entry's text cannot match it
    assert len(found[True]) == 1 and "kids" not in found[True][0] and found[True][0].startswith("Ann: ")


def test_a_short_reply_is_found_through_the_turns_before_it(make_memory, tmp_path) -> None:
    turns = [("Ann", "Did you finally adopt the puppy from the animal shelter?"), ("Tom", "Yes, last Sunday!"),
             ("Ann", "My sister is moving to Berlin for a new job."), ("Tom", "Berlin sounds exciting for her.")]
    ranks = {}
    for context in (0, 2):
        memory = make_memory(**_own_folder(tmp_path, str(context)), index_original=True, index_context_turns=context)
        _add(memory, "u", "s1", turns)
        hits = memory.retrieve("When did Tom adopt the puppy?", limit=4, user_id="u")
        ranks[context] = [h.memory for h in hits].index("Tom: Yes, last Sunday!")
    assert ranks[2] < ranks[0]


def test_a_fact_among_small_talk_is_found_first_by_its_plain_vector(make_memory, tmp_path) -> None:
    """The turn after a fact carries it as context, and the fact's own contextual vector is diluted by the
    small talk before it: without the plain vector the next turn comes first for a question about it."""
    turns = [("Ann", "Did you catch the game last night? What a finish!"),
             ("Tom", "I did, that last minute goal was unbelievable."),
             ("Ann", "The crowd went wild, I could hear them from my street."),
             ("Tom", "My cousin is allergic to peanuts, so we carry an epinephrine pen everywhere."),
             ("Ann", "Anyway, are you going to the stadium next week?"),
             ("Tom", "Probably, if the weather holds up and the tickets are not too pricey.")]
    first = {}
    for plain in (False, True):
        memory = make_memory(**_own_folder(tmp_path, str(plain)), index_original=True, index_context_turns=2,
                             index_plain_vector=plain, retrieve_strategy="hybrid")
        _add(memory, "u", "s1", turns)
        first[plain] = memory.retrieve("Who has a food allergy?", limit=3, user_id="u")[0].memory
    assert first[True] == f"Tom: {turns[3][1]}"
    assert first[False] == f"Ann: {turns[4][1]}"  # the fact only as context


def test_names_and_self_introduced_aliases() -> None:
    intro = Message(id="a", user_id="u", session_id="s", turn_index=0, role="user", speaker="Anna Lee",
                    content="Hi, my name is Annabelle, but call me Belle. Call me tomorrow!", time_stamp="2025-03-02")
    anonymous = intro.model_copy(update={"speaker": None, "content": "I go by Zoë these days."})
    assert names_in(intro) == [("anna lee", "Anna Lee"), ("anna", "Anna Lee"), ("annabelle", "Anna Lee"),
                               ("belle", "Anna Lee")]  # "call me tomorrow" names nobody: no capital
    assert names_in(anonymous) == [("zoe", "user")]  # without a speaker name the role is the speaker
    names = names_in(intro) + [("tom", "Tom")]
    assert named_speakers("What did Belle's brother say?", names) == {"Anna Lee"}
    assert named_speakers("Did Tom meet ANNA?", names) == {"Anna Lee", "Tom"}
    assert named_speakers("Who is Annabel?", names) == set()  # whole names only


@pytest.mark.usefixtures("history_backend")
def test_a_query_naming_an_alias_finds_that_speakers_entries_first(make_memory, tmp_path) -> None:
    turns = [("Anna", "Hi, my name is Annabelle but everyone has to call me Belle."),
             ("Tom", "I loved my trip to the mountains, the mountain trip was the best trip I took."),
             ("Anna", "The mountains were pretty.")]
    question = "What did Belle think of the trip to the mountains?"
    ranked = {}
    for match in (False, True):
        memory = make_memory(**_own_folder(tmp_path, str(match)), speaker_match=match, retrieve_strategy="hybrid")
        _add(memory, "u", "s1", turns)
        _add(memory, "other", "s1", [("Belle", "I hated the mountains.")])  # another user's Belle: not ours
        ranked[match] = [h.memory for h in memory.retrieve(question, limit=3, user_id="u")]
        if match:
            assert ("belle", "Anna") in memory.components.history.speaker_names("u")
            memory.delete_all("u")
            assert memory.components.history.speaker_names("u") == []
    anna, tom = "Anna: The mountains were pretty.", f"Tom: {turns[1][1]}"
    assert ranked[False][0] == tom
    assert ranked[True][0].startswith("Anna: ") and ranked[True].index(anna) < ranked[True].index(tom)


def test_a_store_folder_from_before_the_speaker_index_gets_it_when_opened(tmp_path, monkeypatch) -> None:
    """speaker_match filters by speaker; without the index that filter reads every payload (100x slower)."""
    import lightmem_core.stores.layout as layout
    from lightmem_core.stores.edge import EdgeStore

    older = {k: v for k, v in layout.PAYLOAD_INDEXES.items() if k != "speaker"}
    monkeypatch.setattr(layout, "PAYLOAD_INDEXES", older)  # the layout an older version wrote
    EdgeStore(collection="c", dims=4, path=str(tmp_path)).close()
    monkeypatch.undo()
    store = EdgeStore(collection="c", dims=4, path=str(tmp_path))
    try:
        assert "speaker" in store._shard.info().payload_schema
    finally:
        store.close()
