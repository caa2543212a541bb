"""LLM cost of ingesting LoCoMo: LightMem's batched extraction at several short-term thresholds,
beside a per-turn baseline (one extraction and one update call per turn, as mem0's classic ``add``).

Everything runs in this process against the scripted OpenAI-compatible server answering at once
(automatic extraction replies: one fact per message shown), through the real ``openai`` client and
the project's client stack, so calls and tokens are those the server reports for the prompts we send.
``run(data_path)`` returns Markdown; ``python -m bench.llm_cost [locomo10.json]`` prints it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import data_dir
from lightmem_core import LightMemory, parse_config
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.extraction.llm import extract_with_llm
from lightmem_core.factory import build_components, build_llm_client
from lightmem_core.history import HistoryStore
from lightmem_core.ingest import normalize_messages
from lightmem_core.llm.base import CallTag
from lightmem_core.models import MemoryEntry, TopicSegment
from lightmem_core.tokens import count_tokens
from lightmem_core.update import prompt as update_prompt
from producers.datasets import Conversation, add_conversation, load_locomo
from producers.scripted_llm import ScriptedLLMServer

THRESHOLDS = (256, 512, 768, 1024)
CAPACITY = 1024
GOAL_RATIO = 20


@dataclass
class Cost:
    """LLM cost of one way of ingesting the data set."""

    name: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    entries: int
    seconds: float


def _config(tmp: Path, base_url: str, threshold: int) -> dict[str, Any]:
    return {
        "messages_use": "user_only",  # LoCoMo's two speakers are both role "user", with speaker_name
        "metadata_generate": True,
        "text_summary": True,
        "memory_manager": {"model_name": "openai", "configs": {
            "model": "gpt-4o-mini", "api_key": "bench", "base_url": base_url, "short_term_capacity_tokens": CAPACITY}},
        "extract_threshold": threshold / CAPACITY,
        "index_strategy": "embedding",
        "retrieve_strategy": "embedding",
        "embedding_retriever": {"model_name": "qdrant", "configs": {"path": str(tmp / "qdrant")}},
        "history_db_path": str(tmp / "history.db"),
    }


def lightmem_cost(conversations: list[Conversation], base_url: str, threshold: int) -> Cost:
    """Ingest every session through ``LightMemory``, flush each user at the end, and read the accounting."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config(_config(Path(tmp), base_url, threshold))
        memory = LightMemory(cfg, build_components(cfg, embedder=HashingEmbedder(64)))
        started = time.perf_counter()
        for conv in conversations:
            add_conversation(memory, conv)
        totals = memory.history.llm_totals()
        entries = int(memory.get_token_statistics()["entries_stored"])
        memory.close()
    return Cost(f"LightMem, threshold {threshold}", int(totals["calls"]), int(totals["prompt_tokens"]),
                int(totals["completion_tokens"]), entries, time.perf_counter() - started)


def per_turn_cost(conversations: list[Conversation], base_url: str, recent: int = 5) -> Cost:
    """Per turn: one extraction call on that turn alone, then one update call weighing the new fact
    against the user's ``recent`` latest memories (mem0's classic add: extract, then decide)."""
    cfg = parse_config({"memory_manager": {"model_name": "openai", "configs": {
        "model": "gpt-4o-mini", "api_key": "bench", "base_url": base_url}}})
    history = HistoryStore(":memory:")
    client = build_llm_client(cfg, recorder=history)
    assert client is not None
    started, entries = time.perf_counter(), 0
    for conv in conversations:
        known: list[MemoryEntry] = []
        for session in conv.sessions:
            batch = normalize_messages(session.messages, conv.user_id, session.session_id, lambda _sid: 0)
            for message in batch.messages:
                seg = TopicSegment(user_id=conv.user_id, session_id=session.session_id, topic_id=0, messages=[message])
                facts = extract_with_llm(client, [seg], {"user", "assistant"})
                if not facts:
                    continue
                data = update_prompt.UpdateInput(target=_shown("t", facts[0]),
                                                 candidates=[_shown(f"c{i}", k) for i, k in enumerate(known[-recent:], 1)])
                client.complete(update_prompt.render(data), json_mode=True, tag=CallTag("update", conv.user_id))
                known.extend(facts)
                entries += len(facts)
    totals = history.llm_totals()
    history.close()
    return Cost("Per-turn baseline (extract + update per turn)", int(totals["calls"]), int(totals["prompt_tokens"]),
                int(totals["completion_tokens"]), entries, time.perf_counter() - started)


def _shown(ref: str, entry: MemoryEntry) -> update_prompt.PromptMemory:
    return update_prompt.PromptMemory(ref=ref, time=f"{entry.time_stamp:%Y-%m-%d %H:%M} {entry.weekday}", text=entry.memory)


def report(conversations: list[Conversation], rows: list[Cost], baseline: Cost) -> str:
    """The Markdown section: one row per threshold, the baseline, and the goal check at 512."""
    turns = sum(c.turn_count for c in conversations)
    words = sum(count_tokens(str(m["content"])) for c in conversations for s in c.sessions for m in s.messages)
    out = [f"### LLM cost of ingesting LoCoMo ({len(conversations)} conversations, {turns:,} turns, {words:,} tokens)", "",
           "Scripted OpenAI-compatible server answering at once; tokens as the server counts them (cl100k).", "",
           "| ingestion | LLM calls | prompt tokens | completion tokens | total tokens | calls vs baseline | entries |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for row in [*rows, baseline]:
        share = baseline.calls / row.calls if row.calls else float("inf")
        out.append(f"| {row.name} | {row.calls:,} | {row.prompt_tokens:,} | {row.completion_tokens:,} | "
                   f"{row.prompt_tokens + row.completion_tokens:,} | 1/{share:.1f} | {row.entries:,} |")
    at_512 = next((r for r in rows if r.name.endswith(" 512")), None)
    if at_512 is not None:
        met = at_512.calls * GOAL_RATIO <= baseline.calls
        out += ["", f"Goal (threshold 512: at most 1/{GOAL_RATIO} of the baseline's calls): "
                    f"{'met' if met else 'NOT met'}: {at_512.calls:,} vs {baseline.calls:,} "
                    f"(1/{baseline.calls / max(at_512.calls, 1):.1f})."]
    return "\n".join(out)


def run(data_path: str | Path | None = None, thresholds: tuple[int, ...] = THRESHOLDS) -> str:
    """Ingest LoCoMo at every threshold and the per-turn baseline; return the Markdown table."""
    conversations = load_locomo(data_path or data_dir() / "locomo10.json")
    with ScriptedLLMServer() as server:
        rows = [lightmem_cost(conversations, server.base_url, t) for t in thresholds]
        baseline = per_turn_cost(conversations, server.base_url)
    return report(conversations, rows, baseline)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else None))
