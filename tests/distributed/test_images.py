"""Images in messages through the workers (``multimodal_embedder``): the queue payloads carry the image
parts, the extract worker sends them to the vision model (the scripted server process), the store worker
embeds them with a tiny CLIP into the ``image`` vector, and the search desk fuses image search with text
search. The Must-show: an image's message is found by a text query about its caption."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.distributed.conftest import Cluster, running_cluster
from tests.support.tiny_clip import build_tiny_clip, data_url
from workers.launch import LocalCluster

CAPTION = "a lighthouse on a rocky coast at sunset"
SESSION = [
    {"id": "ann:pasta", "role": "user", "content": "I cooked pasta with tomato sauce for my family yesterday.",
     "speaker_name": "Ann"},
    {"id": "ann:photo", "role": "user", "speaker_name": "Ann", "blip_caption": CAPTION,
     "content": [{"type": "text", "text": "Look what I saw on my walk this morning!"},
                 {"type": "image_url", "image_url": {"url": data_url((220, 20, 20))}}]},
    {"id": "ann:brakes", "role": "user", "content": "My brother fixed the brakes of his car last week.",
     "speaker_name": "Ann"},
]


@pytest.fixture(scope="module")
def image_cluster(redis_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    clip = build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
    m = "LIGHTMEM_MEMORY__"
    env = {f"{m}MULTIMODAL_EMBEDDER__MODEL_NAME": "huggingface", f"{m}MULTIMODAL_EMBEDDER__CONFIGS__MODEL": clip,
           f"{m}MULTIMODAL_EMBEDDER__CONFIGS__DEVICE": "cpu", f"{m}MEMORY_MANAGER__CONFIGS__VISION": "true"}
    with running_cluster(redis_cluster, "img", env) as running:
        yield running


def test_an_images_message_is_found_by_a_text_query_about_its_caption(image_cluster: Cluster) -> None:
    producer = image_cluster.producer
    tracking = producer.enqueue_session("ann", {"session_id": "walk", "time_stamp": "2025-01-10T10:00:00Z",
                                                "turns": SESSION})
    producer.flush("ann")
    assert producer.wait_indexed([tracking], timeout_s=300) == {tracking: "indexed"}

    top: dict[str, Any] = producer.search("ann", "a lighthouse on the rocky coast", limit=3)[0]
    assert top["kind"] == "image" and CAPTION in top["memory"]
    assert top["source_ids"] == ["ann:photo"] and top["sources"][0]["content"].startswith("Look what I saw")

    # The extract worker sent the image to the vision model: its fact about the pixels cites the message.
    seen = [e for e in producer.entries("ann") if "mostly red" in e["memory"]]
    assert [e["source_ids"] for e in seen] == [["ann:photo"]]

    # The store worker wrote the image vector and the desk fuses it in: no text matches "zebra" (BM25),
    # the image search through CLIP's text tower still brings the image's entry.
    assert [h["id"] for h in producer.search("ann", "zebra", limit=3, strategy="context")] == [top["id"]]
