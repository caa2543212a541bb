"""Prompt modules and the extractor's bookkeeping, with the in-memory ``ScriptedClient`` (no HTTP)."""

from __future__ import annotations

import json

import pytest

from lightmem_core.errors import ExtractionParseError
from lightmem_core.extraction import prompt as extraction
from lightmem_core.extraction.llm import LLMExtractor
from lightmem_core.llm import ScriptedClient
from lightmem_core.models import Message, TopicSegment
from lightmem_core.update import prompt as update


def _segment(session: str, topic: int, texts: list[tuple[str, str, str]]) -> TopicSegment:
    msgs = [Message(id=mid, user_id="u", session_id=session, turn_index=i, role="user", content=text, time_stamp=ts,
                    speaker="Ann") for i, (mid, text, ts) in enumerate(texts)]
    return TopicSegment(user_id="u", session_id=session, topic_id=topic, messages=msgs)


SEGMENTS = [
    _segment("s1", 7, [("a", "I moved to Lyon.", "2025-01-01T09:00:00Z"), ("b", "I like rain.", "2025-01-01T09:05:00Z")]),
    _segment("s2", 8, [("c", "My sister visits in May.", "2025-02-01T09:00:00Z")]),
]


def test_one_call_for_all_topics_and_each_fact_keeps_its_own_topic() -> None:
    reply = {"facts": [{"text": "Ann's sister visits her in Lyon in May 2025.", "source_ids": ["m3", "m1"]}]}
    client = ScriptedClient([json.dumps(reply)])
    [entry] = LLMExtractor(client, {"user"}).extract(SEGMENTS)
    assert len(client.calls) == 1
    assert "Topic 7:" in client.calls[0][1]["content"] and "Topic 8:" in client.calls[0][1]["content"]
    assert entry.source_ids == ["c", "a"] and entry.topic_id == 8 and entry.session_id == "s2"
    assert entry.time_stamp.isoformat() == "2025-02-01T09:00:00+00:00"


def test_ids_outside_the_call_fail_after_one_repair() -> None:
    bad = json.dumps({"facts": [{"text": "x", "source_ids": ["m4"]}]})
    client = ScriptedClient([bad, bad])
    with pytest.raises(ExtractionParseError, match="m4") as caught:
        LLMExtractor(client, {"user"}).extract(SEGMENTS)
    assert caught.value.raw_reply == bad and len(client.calls) == 2


def test_fenced_json_and_schema_errors() -> None:
    data = extraction.ExtractionInput(topics=[])
    assert extraction.parse('```json\n{"facts": []}\n```', data).facts == []
    with pytest.raises(ExtractionParseError, match="facts"):
        extraction.parse('{"fact": []}', data)
    with pytest.raises(ExtractionParseError, match="source_ids"):
        extraction.parse('{"facts": [{"text": "x", "source_ids": []}]}', data)
    assert extraction.VERSION and update.VERSION


def test_update_reply_rules() -> None:
    mem = update.PromptMemory(ref="t", time="2025-01-01", text="x")
    data = update.UpdateInput(target=mem, candidates=[update.PromptMemory(ref="c1", time="2025-01-02", text="y")])
    assert update.parse('{"action": "delete", "merge_into": "c1"}', data).merge_into == "c1"
    with pytest.raises(ExtractionParseError, match="merge_into"):
        update.parse('{"action": "delete", "merge_into": "c9"}', data)
    with pytest.raises(ExtractionParseError, match="new_text"):
        update.parse('{"action": "update"}', data)
    system, user = update.render(data)
    assert "[c1] 2025-01-02: y" in user["content"] and '"action"' in system["content"]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@pytest.mark.parametrize("metadata,summary", [(False, False), (True, True)])
def test_extraction_calls_share_their_fixed_part_byte_for_byte(metadata: bool, summary: bool) -> None:
    """Provider-side prefix caching (OpenAI, vLLM) hits only when the fixed part (system prompt,
    instructions, schema) comes first and is byte-identical across calls; the input comes after it."""
    client = ScriptedClient(respond=lambda _: '{"facts": []}')
    extractor = LLMExtractor(client, {"user"}, metadata=metadata, summary=summary)
    extractor.extract(SEGMENTS[:1])
    extractor.extract(SEGMENTS[1:])
    first, second = client.calls
    assert first[0] == second[0] and first[0]["role"] == "system"  # the whole system message is fixed
    assert "Lyon" not in first[0]["content"] and "sister" not in second[0]["content"]  # no input in it
    sent = [json.dumps(call) for call in client.calls]
    assert len(_common_prefix(*sent)) > len(json.dumps(first[0]))  # the input only after the fixed part


def test_update_calls_share_their_fixed_part_byte_for_byte() -> None:
    def data(target: str, candidate: str) -> update.UpdateInput:
        return update.UpdateInput(target=update.PromptMemory(ref="t", time="2025-01-01 09:00 Wed", text=target),
                                  candidates=[update.PromptMemory(ref="c1", time="2025-01-02 09:00 Thu", text=candidate)])

    first = update.render(data("Ann lives in Lyon.", "Ann moved to Paris."))
    second = update.render(data("Bob plays chess.", "Bob won a chess cup."))
    assert first[0] == second[0] and first[0]["role"] == "system"
    assert "Lyon" not in first[0]["content"] and "chess" not in second[0]["content"]
