"""Run an evaluation: ingest every conversation into each system, retrieve for every question, score.

Everything is measured in one process and one run, on the same data and the same embedder:
retrieval quality through provenance (``metrics``), stored tokens, LLM calls, ingest time and
retrieval latency. A conversation without turns, or one a system fails on, is a counted skip with
its reason; a question without evidence is counted and left out of the retrieval metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightmem_core.embedders.base import Embedder
from lightmem_core.errors import LightMemError
from lightmem_core.memory import LightMemory
from lightmem_core.models import RetrievedMemory
from lightmem_core.tokens import count_tokens
from producers.datasets import Conversation, Question, add_conversation
from producers.eval.metrics import mean, percentile, question_scores, summarize
from producers.eval.systems import DEFAULT, SystemSpec, open_memory, with_paths

log = logging.getLogger(__name__)
# What an answering model is handed: the texts of the first RETURNED_K hits, in tokens (mean per question).
RETURNED_K = 10


@dataclass
class EvalOptions:
    """What to score: cut-offs, question categories (``None``: all), a conversation limit."""

    ks: tuple[int, ...] = (1, 5, 10, 20)
    categories: frozenset[str] | None = None
    limit_conversations: int | None = None
    progress: bool = True
    distributed_config: str | None = None  # YAML for the workers: ingest the default system through the queues

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"k: expected positive cut-offs, got {self.ks}")
        self.ks = tuple(sorted(set(self.ks)))


@dataclass
class Retrieval:
    """What a system returned for one question, kept for scoring and answering."""

    question: Question
    user_id: str
    memories: list[str]
    latency_s: float


@dataclass
class SystemResult:
    """Scores and costs of one system over the whole dataset."""

    name: str
    description: str
    rows: list[dict[str, float]] = field(default_factory=list)
    row_categories: list[str] = field(default_factory=list)
    retrievals: list[Retrieval] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    returned_tokens: list[int] = field(default_factory=list)  # tokens of the texts of the top RETURNED_K hits
    ingest_s: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    conversations: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    per_question: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, reason: str, item: str) -> None:
        self.skipped.setdefault(reason, []).append(item)

    def to_json(self) -> dict[str, Any]:
        summary = summarize(self.rows, self.row_categories)
        return {
            "name": self.name,
            "description": self.description,
            "conversations": self.conversations,
            "questions_scored": len(self.rows),
            "metrics": summary.overall,
            "metrics_by_category": summary.by_category,
            "counts": summary.counts,
            "cost": {
                "ingest_s": self.ingest_s,
                "retrieval_p50_ms": percentile(self.latencies_s, 50) * 1000,
                "retrieval_p95_ms": percentile(self.latencies_s, 95) * 1000,
                f"tokens_returned_top{RETURNED_K}": mean(float(t) for t in self.returned_tokens),
                **self.stats,
            },
            "skipped": {reason: {"count": len(items), "items": items} for reason, items in self.skipped.items()},
        }


def select_questions(conversation: Conversation, options: EvalOptions) -> list[Question]:
    chosen = options.categories
    return [q for q in conversation.questions if chosen is None or q.category in chosen]


def dataset_summary(conversations: Sequence[Conversation], options: EvalOptions) -> dict[str, Any]:
    """Counts and token totals of the input, the same for every system."""
    turns = [m for c in conversations for s in c.sessions for m in s.messages]
    return {
        "conversations": len(conversations),
        "sessions": sum(len(c.sessions) for c in conversations),
        "turns": len(turns),
        "tokens_all_turns": sum(count_tokens(m["content"]) for m in turns),
        "questions_selected": sum(len(select_questions(c, options)) for c in conversations),
    }


class _Bar:
    """A tqdm bar, or nothing when progress is off."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="q", leave=False) if enabled else None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def store_key(spec: SystemSpec) -> str:
    """Systems whose configurations differ only in ``retrieve_strategy`` can share one ingest."""
    return spec.config.model_copy(update={"retrieve_strategy": "hybrid"}).model_dump_json()


def group_specs(specs: Sequence[SystemSpec]) -> list[list[SystemSpec]]:
    """Specs grouped by ``store_key``, groups and members in the order given."""
    groups: dict[str, list[SystemSpec]] = {}
    for spec in specs:
        groups.setdefault(store_key(spec), []).append(spec)
    return list(groups.values())


def run_group(
    specs: Sequence[SystemSpec],
    conversations: Sequence[Conversation],
    folder: Path,
    embedder: Embedder | None,
    options: EvalOptions,
    ingest: Callable[[LightMemory, Conversation], float] | None = None,
) -> list[SystemResult]:
    """Ingest every conversation once into a fresh memory, then retrieve and score with each spec.

    ``ingest`` replaces the in-process ingest (the queue pipeline has filled ``folder`` already).

    All specs share one store (same ``store_key``); each reads it with its own retrieval strategy,
    and each reports the shared ingest time and stored tokens.
    """
    results = [SystemResult(s.name, s.description) for s in specs]
    if len(specs) > 1:
        for r in results:
            r.description += f" (one ingest shared by {', '.join(s.name for s in specs)})"
    total = len(specs) * sum(len(select_questions(c, options)) for c in conversations)
    bar = _Bar(total, "+".join(s.name for s in specs), options.progress)
    memory = open_memory(specs[0], folder, embedder)
    views = [memory] + [LightMemory(with_paths(s.config, folder), memory.components) for s in specs[1:]]
    try:
        for conv in conversations:
            questions = select_questions(conv, options)
            if conv.turn_count == 0:
                _skip_all(results, "conversation_without_turns", conv.user_id)
                bar.update(len(questions) * len(specs))
                continue
            try:
                ingest_s = (ingest or _ingest)(memory, conv)
            except LightMemError as exc:
                log.warning("%s: skipping conversation %s: %s", specs[0].name, conv.user_id, exc)
                _skip_all(results, "conversation_failed", f"{conv.user_id}: {exc}")
                bar.update(len(questions) * len(specs))
                continue
            for view, result in zip(views, results, strict=True):
                result.ingest_s += ingest_s
                result.conversations += 1
                for question in questions:
                    _score_question(view, conv.user_id, question, options, result)
                    bar.update()
        stats = {k: float(v) for k, v in memory.get_token_statistics().items()}
        for result in results:
            result.stats = dict(stats)
    finally:
        bar.close()
        memory.close()
    return results


def _skip_all(results: list[SystemResult], reason: str, item: str) -> None:
    for result in results:
        result.skip(reason, item)


def _ingest(memory: LightMemory, conv: Conversation) -> float:
    start = time.perf_counter()
    add_conversation(memory, conv)
    return time.perf_counter() - start


def _score_question(memory: LightMemory, user_id: str, q: Question, options: EvalOptions, result: SystemResult) -> None:
    start = time.perf_counter()
    hits = memory.retrieve(q.question, limit=max(options.ks), user_id=user_id)
    latency = time.perf_counter() - start
    assert isinstance(hits, list)
    result.latencies_s.append(latency)
    result.returned_tokens.append(sum(count_tokens(h.memory) for h in hits[:RETURNED_K]))
    result.retrievals.append(Retrieval(q, user_id, [h.as_line() for h in hits], latency))
    record: dict[str, Any] = {"question_id": q.question_id, "category": q.category,
                              "retrieved_sources": [h.entry.source_ids for h in hits]}
    if not q.evidence_ids:
        result.skip("question_without_evidence", q.question_id)
        result.per_question.append(record)
        return
    scores = question_scores(_sources(hits), q.evidence_ids, options.ks)
    if q.evidence_session_ids:
        scores.update(question_scores([[h.entry.session_id] for h in hits], q.evidence_session_ids, options.ks, "session_"))
    record["scores"] = scores
    result.per_question.append(record)
    result.rows.append(scores)
    result.row_categories.append(q.category)


def _sources(hits: list[RetrievedMemory]) -> list[list[str]]:
    return [h.entry.source_ids for h in hits]


def run_eval(
    conversations: Sequence[Conversation],
    specs: Sequence[SystemSpec],
    workdir: Path,
    embedder: Embedder | None,
    options: EvalOptions,
    on_system_done: Callable[[SystemResult], None] | None = None,
) -> list[SystemResult]:
    """Run every system on the same conversations; ``on_system_done`` sees each result at once.

    Systems that differ only in retrieval strategy share one ingest (``group_specs``).
    """
    chosen = list(conversations)[: options.limit_conversations] if options.limit_conversations else list(conversations)
    by_name: dict[str, SystemResult] = {}
    for group in group_specs(specs):
        through_queues = options.distributed_config is not None and group[0].name == DEFAULT
        queue_s = 0.0
        if through_queues:
            from producers.eval.distributed import ingest_through_queues

            assert options.distributed_config is not None
            queue_s = ingest_through_queues([c for c in chosen if c.turn_count], workdir / group[0].name,
                                            Path(options.distributed_config))
        results = run_group(group, chosen, workdir / group[0].name, embedder, options,
                            ingest=(lambda memory, conv: 0.0) if through_queues else None)
        for result in results:
            if through_queues:
                result.ingest_s = queue_s
                result.description += " (ingested through the queue pipeline: Redis and worker processes)"
            log.info("%s: %d questions scored, ingest %.1f s", result.name, len(result.rows), result.ingest_s)
            by_name[result.name] = result
            if on_system_done is not None:
                on_system_done(result)
    return [by_name[s.name] for s in specs]
