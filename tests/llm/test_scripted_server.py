"""The scripted server itself: as a subprocess, automatic replies, embeddings, broken bodies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from lightmem_core.embedders.openai import OpenAIEmbedder
from producers.scripted_llm import ScriptedLLMServer, Step

ROOT = Path(__file__).resolve().parents[2]
EXTRACTION_PROMPT = [
    {"role": "system", "content": 'Reply in JSON: {"facts": [{"text": "...", "source_ids": ["m1"]}]}'},
    {"role": "user", "content": "Topic 4:\n[m1] 2025-01-01 10:00 Wed Ann: I bought a red kayak.\n"
                                "[m2] 2025-01-01 10:01 Wed Bob: Nice, I prefer sailing."},
]


def test_runs_as_a_subprocess_and_answers_extraction_automatically() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "producers.scripted_llm", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        client = openai.OpenAI(api_key="k", base_url=base_url, max_retries=0, timeout=10)
        reply = client.chat.completions.create(model="m", messages=EXTRACTION_PROMPT)  # type: ignore[arg-type]
        facts = json.loads(reply.choices[0].message.content or "")["facts"]
        assert [f["source_ids"] for f in facts] == [["m1"], ["m2"]]
        assert facts[0]["text"].startswith("Ann said: I bought a red kayak.")
        assert reply.usage is not None and reply.usage.prompt_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_embeddings_and_broken_bodies(llm_server: ScriptedLLMServer) -> None:
    embedder = OpenAIEmbedder(model="e", api_key="k", base_url=llm_server.base_url, embedding_dims=64)
    vectors = embedder.embed(["red kayak", "sailing"])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    client = openai.OpenAI(api_key="k", base_url=llm_server.base_url, max_retries=0, timeout=5)
    llm_server.script(Step(raw_body="{broken"))
    with pytest.raises(ValueError):  # the SDK lets the JSON error through; our client translates it
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert llm_server.pending() == 0 and len(llm_server.requests) == 1


def test_control_switches_mixed_updates_and_a_fail_marker_from_another_process() -> None:
    """``/control`` as the worker tests use it: decisions the real decider accepts, and marked prompts failing."""
    import urllib.request
    from datetime import UTC, datetime, timedelta

    from lightmem_core.config import LLMConfig
    from lightmem_core.errors import ExtractionParseError, TransientError
    from lightmem_core.llm.openai_compat import OpenAICompatClient
    from lightmem_core.models import MemoryEntry
    from lightmem_core.update.llm import LLMUpdateDecider

    def control(base_url: str, **settings: object) -> dict[str, object]:
        request = urllib.request.Request(base_url.removesuffix("/v1") + "/control", data=json.dumps(settings).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            return dict(json.loads(reply.read()))

    def entry(text: str, day: int) -> MemoryEntry:
        return MemoryEntry(id=f"e{day}-{text}", user_id="u", memory=text, time_stamp=datetime(2025, 1, 1, tzinfo=UTC)
                           + timedelta(days=day))

    with ScriptedLLMServer() as server:
        client = OpenAICompatClient("openai", LLMConfig(api_key="k", base_url=server.base_url, max_retries=0))
        decider = LLMUpdateDecider(client)
        targets = [entry(f"Ann likes kayak trip number {i}", 1) for i in range(12)]
        newer = [entry("Ann went kayaking again", 2)]
        assert {decider.decide(t, newer).action for t in targets} == {"ignore"}
        assert control(server.base_url, update_actions="mixed")["update_actions"] == "mixed"
        decisions = [decider.decide(t, newer) for t in targets]
        assert {d.action for d in decisions} == {"update", "delete", "ignore"}
        assert decisions == [decider.decide(t, newer) for t in targets]  # repeatable
        assert all(d.merge_into == newer[0].id for d in decisions if d.action == "delete")
        control(server.base_url, fail_marker="kayak")
        with pytest.raises(ExtractionParseError):
            decider.decide(targets[0], newer)
        control(server.base_url, fail_marker="kayak", fail_status=500)
        with pytest.raises(TransientError):
            decider.decide(targets[0], newer)
        control(server.base_url, fail_marker=None)
        assert decider.decide(targets[0], newer) == decisions[0]


def test_a_repeated_prefix_is_reported_cached_and_repeats_are_counted(llm_server: ScriptedLLMServer) -> None:
    """Like OpenAI's and vLLM's prefix caches: leading messages seen before come back as cached tokens."""
    from lightmem_core.config import LLMConfig
    from lightmem_core.llm.openai_compat import OpenAICompatClient, count_prompt_tokens

    client = OpenAICompatClient("openai", LLMConfig(api_key="k", base_url=llm_server.base_url, max_retries=0))
    system, user = EXTRACTION_PROMPT
    first = client.complete([system, user])
    other = client.complete([system, {"role": "user", "content": "Topic 1:\n[m1] 2025-01-02 09:00 Thu Ann: Hi."}])
    again = client.complete([system, user])
    assert first.cached_tokens == 0  # nothing seen yet
    assert other.cached_tokens == count_prompt_tokens([system]) - 3  # the system prompt only
    assert again.cached_tokens == again.prompt_tokens - 3  # every message (not the reply's priming)
    state = llm_server.control({})[2]
    assert json.loads(state)["answered"] == 3 and json.loads(state)["repeated"] == 1
