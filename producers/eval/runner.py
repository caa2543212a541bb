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
from producers.datasets import Conversation, Question
from producers.eval.metrics import percentile, question_scores, summarize
from producers.eval.systems import SystemSpec, open_memory

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """What to score: cut-offs, question categories (``None``: all), a conversation limit."""

    ks: tuple[int, ...] = (1, 5, 10, 20)
    categories: frozenset[str] | None = None
    limit_conversations: int | None = None
    progress: bool = True

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


def run_system(
    spec: SystemSpec,
    conversations: Sequence[Conversation],
    folder: Path,
    embedder: Embedder | None,
    options: EvalOptions,
) -> SystemResult:
    """Ingest every conversation into a fresh memory for ``spec``, then retrieve and score."""
    result = SystemResult(spec.name, spec.description)
    total = sum(len(select_questions(c, options)) for c in conversations)
    bar = _Bar(total, spec.name, options.progress)
    memory = open_memory(spec, folder, embedder)
    try:
        for conv in conversations:
            questions = select_questions(conv, options)
            if conv.turn_count == 0:
                result.skip("conversation_without_turns", conv.user_id)
                bar.update(len(questions))
                continue
            try:
                result.ingest_s += _ingest(memory, conv)
            except LightMemError as exc:
                log.warning("%s: skipping conversation %s: %s", spec.name, conv.user_id, exc)
                result.skip("conversation_failed", f"{conv.user_id}: {exc}")
                bar.update(len(questions))
                continue
            result.conversations += 1
            for question in questions:
                _score_question(memory, conv.user_id, question, options, result)
                bar.update()
        result.stats = {k: float(v) for k, v in memory.get_token_statistics().items()}
    finally:
        bar.close()
        memory.close()
    return result


def _ingest(memory: LightMemory, conv: Conversation) -> float:
    start = time.perf_counter()
    for session in conv.sessions:
        memory.add_memory(session.messages, user_id=conv.user_id, session_id=session.session_id)
    memory.flush(conv.user_id)
    return time.perf_counter() - start


def _score_question(memory: LightMemory, user_id: str, q: Question, options: EvalOptions, result: SystemResult) -> None:
    start = time.perf_counter()
    hits = memory.retrieve(q.question, limit=max(options.ks), user_id=user_id)
    latency = time.perf_counter() - start
    assert isinstance(hits, list)
    result.latencies_s.append(latency)
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
    """Run every system in turn on the same conversations; ``on_system_done`` sees each result at once."""
    chosen = list(conversations)[: options.limit_conversations] if options.limit_conversations else list(conversations)
    results = []
    for spec in specs:
        result = run_system(spec, chosen, workdir / spec.name, embedder, options)
        log.info("%s: %d questions scored, ingest %.1f s", spec.name, len(result.rows), result.ingest_s)
        results.append(result)
        if on_system_done is not None:
            on_system_done(result)
    return results
