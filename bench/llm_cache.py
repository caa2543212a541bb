"""LLM calls and prompt tokens with the call cache (``kv_cache``): a cold run against the same run again.

Two workloads, each run twice against the scripted OpenAI-compatible server with one cache file:

1. ingesting LoCoMo conversations into ``LightMemory`` and running the offline update (update
   decisions "mixed": updates, deletes and ignores, repeatable), reported per phase;
2. a small LoCoMo eval of the default system (ingest, retrieve, answer, judge) through the eval harness.

The second run starts from new history and store folders and the same ``kv_cache_path``, as an
offline update or an eval run again would. Calls are requests the server answered (none are repeated
by a retry here), prompt tokens as the server counts them; replays are what the cache gave back
instead. Goal: at least 90% fewer calls on the re-run. The scripted server answers at once, so the
seconds measure this process's own work, not a model's latency.
``run(data_path)`` returns Markdown; ``python -m bench.llm_cache [locomo10.json]`` prints it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.common import data_dir
from lightmem_core import LightMemory, parse_config
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.factory import build_components
from producers.datasets import Conversation, add_conversation, load_locomo
from producers.eval.answering import LLMEndpoint
from producers.eval.harness import EvalRun, evaluate
from producers.eval.runner import EvalOptions
from producers.scripted_llm import ScriptedLLMServer

GOAL_SAVED = 0.90  # the re-run makes at most a tenth of the cold run's calls
UPDATE_THRESHOLD = 0.5  # hashing vectors score lower than a trained embedder: more entries reach the LLM


@dataclass
class Cost:
    """What one phase of one run cost."""

    workload: str
    run: str
    calls: int
    prompt_tokens: int
    provider_cached_tokens: int
    replays: int
    seconds: float


def _memory_config(folder: Path, base_url: str, cache_path: Path) -> dict[str, Any]:
    return {
        "messages_use": "user_only",  # LoCoMo's two speakers are both role "user", with speaker_name
        "metadata_generate": True,
        "text_summary": True,
        "memory_manager": {"model_name": "openai", "configs": {
            "model": "gpt-4o-mini", "api_key": "bench", "base_url": base_url}},
        "index_strategy": "embedding",
        "retrieve_strategy": "embedding",
        "embedding_retriever": {"model_name": "qdrant", "configs": {"path": str(folder / "qdrant")}},
        "history_db_path": str(folder / "history.db"),
        "update": "offline",
        "kv_cache": True,
        "kv_cache_path": str(cache_path),
    }


def _judge_or_auto(body: dict[str, Any]) -> str | None:
    """The judge gets a label (a judgement without one is never cached); anything else the automatic reply."""
    system = next((m["content"] for m in body.get("messages", []) if m["role"] == "system"), "")
    return '{"label": "CORRECT"}' if system.startswith("Label") else None


def _delta(after: dict[str, float], before: dict[str, float], workload: str, run: str, seconds: float) -> Cost:
    def d(key: str) -> int:
        return int(after.get(key, 0.0) - before.get(key, 0.0))

    return Cost(workload, run, d("calls"), d("prompt_tokens"), d("cached_tokens"), d("cache_hits"), seconds)


def offline_update_run(conversations: list[Conversation], base_url: str, folder: Path, cache_path: Path,
                       run: str) -> list[Cost]:
    """Ingest every conversation, build the update queue and apply it; the cost of each phase."""
    cfg = parse_config(_memory_config(folder, base_url, cache_path))
    memory = LightMemory(cfg, build_components(cfg, embedder=HashingEmbedder(64)))
    try:
        started, empty = time.perf_counter(), memory.history.llm_totals()
        for conv in conversations:
            add_conversation(memory, conv)
        ingested, ingest_s = memory.history.llm_totals(), time.perf_counter() - started
        started = time.perf_counter()
        memory.construct_update_queue_all_entries()
        memory.offline_update_all_entries(score_threshold=UPDATE_THRESHOLD)
        updated, update_s = memory.history.llm_totals(), time.perf_counter() - started
    finally:
        memory.close()
    return [_delta(ingested, empty, "ingest (extraction)", run, ingest_s),
            _delta(updated, ingested, "offline update", run, update_s)]


def eval_run(conversations: list[Conversation], base_url: str, folder: Path, cache_path: Path, run: str) -> Cost:
    """The eval harness on the default system: ingest, retrieve, answer and judge every question."""
    config = parse_config(_memory_config(folder, base_url, cache_path))
    options = EvalOptions(ks=(10,), progress=False)
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=base_url, api_key="bench")
    started = time.perf_counter()
    report = evaluate(conversations, EvalRun("locomo", config, folder / "results", options=options, systems=("default",),
                                             llm=endpoint), embedder=HashingEmbedder(384))
    seconds = time.perf_counter() - started
    ingest = report["systems"][0]["cost"]
    answers = report["answers"]["systems"]["default"]
    return Cost("LoCoMo eval (ingest, answer, judge)", run,
                int(ingest.get("llm_calls", 0) + answers["llm_calls"]),
                int(ingest.get("llm_prompt_tokens", 0) + answers["prompt_tokens"]),
                int(ingest.get("llm_cached_tokens", 0)), int(ingest.get("llm_cache_hits", 0) + answers["cache_hits"]),
                seconds)


def report(rows: list[Cost], described: str) -> str:
    out = ["### The call cache (kv_cache): a cold run and the same run again", "",
           f"{described}. Scripted OpenAI-compatible server answering at once; calls are requests it answered, "
           "prompt tokens as it counts them (cl100k); provider-cached tokens are what it reports as a repeated "
           "prefix (OpenAI counts only prompts of 1,024 tokens and more); replays are replies the cache gave "
           "back instead of calling.", "",
           "| workload | run | LLM calls | prompt tokens | provider-cached prompt tokens | replays | seconds |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.workload} | {r.run} | {r.calls:,} | {r.prompt_tokens:,} | {r.provider_cached_tokens:,} | "
                   f"{r.replays:,} | {r.seconds:.1f} |")
    out.append("")
    for workload in dict.fromkeys(r.workload for r in rows):
        cold = next(r for r in rows if r.workload == workload and r.run == "cold")
        again = next(r for r in rows if r.workload == workload and r.run == "again")
        saved = 1 - again.calls / cold.calls if cold.calls else 0.0
        met = "met" if saved >= GOAL_SAVED else "NOT met"
        out.append(f"- {workload}: {saved:.0%} fewer calls on the re-run ({cold.calls:,} → {again.calls:,}), "
                   f"{1 - again.prompt_tokens / max(cold.prompt_tokens, 1):.0%} fewer prompt tokens; "
                   f"goal ≥ {GOAL_SAVED:.0%}: {met}.")
    return "\n".join(out)


def run(data_path: str | Path | None = None, update_conversations: int = 2, eval_questions: int = 60) -> str:
    """Both workloads, cold and again; the Markdown section."""
    conversations = load_locomo(data_path or data_dir() / "locomo10.json")
    for_update = conversations[:update_conversations]
    for_eval = [replace(conversations[0], questions=conversations[0].questions[:eval_questions])]
    rows: list[Cost] = []
    with tempfile.TemporaryDirectory(prefix="bench-llm-cache-") as tmp, ScriptedLLMServer(responder=_judge_or_auto) as server:
        server.update_actions = "mixed"
        work = Path(tmp)
        for name in ("cold", "again"):
            rows += offline_update_run(for_update, server.base_url, work / f"update-{name}", work / "update-cache.db", name)
        for name in ("cold", "again"):
            rows.append(eval_run(for_eval, server.base_url, work / f"eval-{name}", work / "eval-cache.db", name))
    turns = sum(c.turn_count for c in for_update)
    described = (f"Offline update: {len(for_update)} LoCoMo conversations ({turns:,} turns), update threshold "
                 f"{UPDATE_THRESHOLD}; eval: conversation {for_eval[0].user_id}, {len(for_eval[0].questions)} questions")
    return report(rows, described)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else None))
