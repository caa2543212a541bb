"""Images in messages (``multimodal_embedder``) in the library: checked at ingest, embedded by a tiny CLIP
into the collection's ``image`` vector, searched through the text tower and fused with the text results,
and sent to a vision model (the scripted server) as content parts, or left out for a text model."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.errors import ConfigError, InvalidInput, StoreError
from lightmem_core.ingest import normalize_messages
from lightmem_core.models import MemoryEntry
from lightmem_core.retrieval import Retriever
from lightmem_core.stores.edge import EdgeStore
from lightmem_core.stores.qdrant import QdrantStore
from producers.scripted_llm import ScriptedLLMServer
from tests.support.tiny_clip import build_tiny_clip, data_url, png_bytes

CAPTION = "a lighthouse on a rocky coast at sunset"
RED = (220, 20, 20)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def clip(clip_path: str) -> Any:
    from lightmem_core.embedders.clip import CLIPEmbedder

    return CLIPEmbedder(clip_path, device="cpu")


def _normalize(messages: list[dict[str, Any]]) -> Any:
    return normalize_messages(messages, "u1", "s1", lambda _sid: 0)


# --- ingest -------------------------------------------------------------------------------------------
def test_images_are_read_from_content_parts_and_locomo_fields(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(RED))
    batch = _normalize([
        {"role": "user", "content": [{"type": "text", "text": "Look!"}, {"type": "image_url", "image_url": {"url": data_url(RED)}}],
         "blip_caption": CAPTION},
        {"role": "user", "content": "", "img_url": ["https://example.org/dog.jpg"], "blip_caption": "a dog"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(photo)}}]},
    ])
    first, second, third = batch.messages
    assert first.content == "Look!" and [(i.url, i.caption) for i in first.images] == [(data_url(RED), CAPTION)]
    assert [(i.url, i.caption) for i in second.images] == [("https://example.org/dog.jpg", "a dog")]
    assert third.content == "" and third.images[0].url == str(photo)  # an image alone is a message, not empty
    assert batch.skipped_empty == []


@pytest.mark.parametrize(("part", "error"), [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, r"messages\[1\]\.content\[1\]\.image_url\.url: .*base64"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a picture").decode()}},
     r"messages\[1\]\.content\[1\]\.image_url\.url: not a readable image"),
    ({"type": "image_url", "image_url": {"url": "/no/such/photo.png"}}, r"messages\[1\]\.content\[1\]\.image_url\.url: no image file"),
    ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}, r"messages\[1\]\.content\[1\]\.image_url\.url: expected a data URL"),
    ({"type": "audio", "data": "..."}, r"messages\[1\]\.content\[1\]: expected"),
])
def test_bad_image_data_names_the_message_and_the_part(part: dict[str, Any], error: str) -> None:
    good = {"role": "user", "content": "fine"}
    with pytest.raises(InvalidInput, match=error):
        _normalize([good, {"role": "user", "content": [{"type": "text", "text": "see"}, part]}])


def test_bad_image_keeps_nothing_of_the_call(make_memory: Any) -> None:
    memory = make_memory()
    bad = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    with pytest.raises(InvalidInput, match=r"messages\[1\]\.content\[0\]"):
        memory.add_memory([{"role": "user", "content": "I like tea."}, bad], user_id="u1", force_extract=True)
    assert memory.history.messages("u1") == [] and memory.get_all("u1") == []


def test_a_clip_path_that_does_not_exist_fails_at_from_config(tmp_path: Path) -> None:
    missing = tmp_path / "no-clip-here"
    with pytest.raises(ConfigError, match=f"multimodal_embedder model path does not exist: {missing}"):
        LightMemory.from_config({"index_strategy": "context", "retrieve_strategy": "context",
                                 "memory_manager": {"model_name": "verbatim"},
                                 "history_db_path": str(tmp_path / "history.db"),
                                 "multimodal_embedder": {"model_name": "huggingface", "configs": {"model": str(missing)}}})


# --- the image vector ---------------------------------------------------------------------------------
def _image_entry(user: str, name: str) -> MemoryEntry:
    return MemoryEntry(id=f"00000000-0000-0000-0000-{abs(hash((user, name))) % 10**12:012d}", user_id=user,
                       memory=f"{user} shared an image: {name}", time_stamp="2025-01-10T10:00:00Z", kind="image")


@pytest.mark.parametrize("engine", ["edge", "qdrant"])
def test_image_vectors_are_stored_and_searched(engine: str, clip: Any, minilm_embedder: Any, tmp_path: Path) -> None:
    make = EdgeStore if engine == "edge" else QdrantStore
    store = make("c", minilm_embedder.dims, path=str(tmp_path / "q"), image_dims=clip.dims)
    try:
        red, blue = clip.embed_images([png_bytes(RED), png_bytes((10, 20, 230))])
        entries = [_image_entry("u1", "red"), _image_entry("u1", "blue"), _image_entry("u2", "red")]
        store.upsert(entries, minilm_embedder.embed([e.memory for e in entries]), None, [red, blue, red])
        fact = MemoryEntry(id="00000000-0000-0000-0000-000000000001", user_id="u1", memory="u1 likes tea",
                           time_stamp="2025-01-10T10:00:00Z")
        store.upsert([fact], minilm_embedder.embed([fact.memory]), None)  # a text entry has no image vector
        hits = store.search_images("u1", red, 5)
        assert [e.memory for e, _ in hits] == ["u1 shared an image: red", "u1 shared an image: blue"]
        assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
        assert [e.user_id for e, _ in store.search_images("u2", blue, 5)] == ["u2"]
        with pytest.raises(StoreError, match="image vector's size"):
            store.upsert([fact], None, None, [[0.0] * (clip.dims + 1)])
    finally:
        store.close()


def test_a_collection_without_image_vectors_is_not_reused_silently(clip: Any, tmp_path: Path) -> None:
    EdgeStore("c", 8, path=str(tmp_path / "q")).close()
    with pytest.raises(StoreError, match="no 'image' vector.*new collection_name"):
        EdgeStore("c", 8, path=str(tmp_path / "q"), image_dims=clip.dims)


# --- the whole flow -----------------------------------------------------------------------------------
@pytest.fixture
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


def _memory(tmp_path: Path, llm: ScriptedLLMServer, clip_path: str, minilm_embedder: Any, vision: bool) -> LightMemory:
    from lightmem_core import parse_config
    from lightmem_core.factory import build_components

    config = parse_config({
        "memory_manager": {"model_name": "openai", "configs": {"model": "gpt-4o-mini", "api_key": "test",
                                                               "base_url": llm.base_url, "vision": vision}},
        "metadata_generate": False, "text_summary": False, "index_strategy": "hybrid", "retrieve_strategy": "hybrid",
        "multimodal_embedder": {"model_name": "huggingface", "configs": {"model": clip_path, "device": "cpu"}},
        "history_db_path": str(tmp_path / "history.db"),
    })
    return LightMemory(config, build_components(config, embedder=minilm_embedder))


CONVERSATION = [
    {"role": "user", "content": "I cooked pasta with tomato sauce for my family yesterday.", "speaker_name": "Ann",
     "time_stamp": "2025-01-10T10:00:00Z"},
    {"role": "user", "content": [{"type": "text", "text": "Look what I saw on my walk this morning!"},
                                 {"type": "image_url", "image_url": {"url": data_url(RED)}}],
     "blip_caption": CAPTION, "speaker_name": "Ann", "time_stamp": "2025-01-10T10:01:00Z"},
    {"role": "user", "content": "My brother fixed the brakes of his car last week.", "speaker_name": "Ann",
     "time_stamp": "2025-01-10T10:02:00Z"},
]


def test_an_images_message_is_found_by_a_text_query_about_its_caption(
        tmp_path: Path, llm: ScriptedLLMServer, clip_path: str, clip: Any, minilm_embedder: Any) -> None:
    memory = _memory(tmp_path, llm, clip_path, minilm_embedder, vision=True)
    try:
        memory.add_memory(CONVERSATION, user_id="ann", session_id="s1", force_extract=True)
        photo_id = memory.history.messages("ann")[1]["id"]

        # The caption is kept as text in the image's entry, whose provenance is the message.
        top = memory.retrieve("a lighthouse on the rocky coast", limit=3, user_id="ann")[0]
        assert top.entry.kind == "image" and CAPTION in top.memory
        assert [s.id for s in top.sources] == [photo_id] and top.sources[0].content.startswith("Look what I saw")
        assert top.entry.image_url is not None and top.entry.image_url.startswith("sha256:")  # bytes not kept

        # The vision model got the image as a content part, and what it saw is a fact of that message.
        parts = llm.requests[0]["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["text", "text", "image_url"] and parts[2]["image_url"]["url"] == data_url(RED)
        seen = [e for e in memory.get_all("ann") if "mostly red" in e.memory]
        assert len(seen) == 1 and seen[0].source_ids == [photo_id]
        assert memory.get_token_statistics("ann")["images_stored"] == 1

        # The image vector: the image's own embedding finds it first.
        hits = memory.store.search_images("ann", clip.embed_images([png_bytes(RED)])[0], 3)
        assert hits[0][0].id == top.id and hits[0][1] == pytest.approx(1.0, abs=1e-4)

        # The fusion: a query no text matches (BM25) still brings the image through the CLIP text tower.
        retriever = Retriever.of(memory.components, "context")
        fused = retriever.retrieve("ann", "zebra", 3, strategy="context")
        assert [h.id for h in fused] == [top.id]
        assert replace(retriever, image_embedder=None).retrieve("ann", "zebra", 3, strategy="context") == []
    finally:
        memory.close()


def test_a_text_model_gets_no_image_parts_and_one_warning(
        tmp_path: Path, llm: ScriptedLLMServer, clip_path: str, minilm_embedder: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    memory = _memory(tmp_path, llm, clip_path, minilm_embedder, vision=False)
    try:
        with caplog.at_level(logging.WARNING, logger="lightmem_core"):
            memory.add_memory(CONVERSATION[:2], user_id="ann", session_id="s1", force_extract=True)
            again = {**CONVERSATION[1], "time_stamp": "2025-01-11T09:00:00Z"}  # another day, another batch
            memory.add_memory([again], user_id="ann", session_id="s2", force_extract=True)
        sent = [body["messages"][1]["content"] for body in llm.requests]
        assert len(sent) == 2 and all(isinstance(c, str) for c in sent)
        assert f"[image m2.1: {CAPTION}]" in sent[0] and "(image not shown" in sent[0]
        assert sum("vision is false" in r.getMessage() for r in caplog.records) == 1
        assert not any("mostly red" in e.memory for e in memory.get_all("ann"))
        assert len([e for e in memory.get_all("ann") if e.kind == "image"]) == 2  # still embedded and stored
    finally:
        memory.close()
