"""Retrieval metrics through provenance: pure functions, no model, no store.

A retrieved list is given as the source message ids of each retrieved entry, best first. An evidence
turn counts as found at ``k`` when one of the first ``k`` entries was made from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Ranked = Sequence[Iterable[str]]


def covered(ranked: Ranked, k: int) -> set[str]:
    """Source ids of the first ``k`` entries."""
    out: set[str] = set()
    for sources in ranked[:k]:
        out.update(sources)
    return out


def recall_at_k(ranked: Ranked, evidence: Iterable[str], k: int) -> float:
    """Share of the evidence ids covered by the first ``k`` entries (``nan`` without evidence)."""
    wanted = set(evidence)
    if not wanted:
        return math.nan
    return len(wanted & covered(ranked, k)) / len(wanted)


def hit_at_k(ranked: Ranked, evidence: Iterable[str], k: int) -> float:
    """1.0 when the first ``k`` entries cover at least one evidence id, else 0.0 (``nan`` without evidence)."""
    wanted = set(evidence)
    if not wanted:
        return math.nan
    return 1.0 if wanted & covered(ranked, k) else 0.0


def reciprocal_rank(ranked: Ranked, evidence: Iterable[str]) -> float:
    """1/rank of the first entry made from an evidence turn; 0.0 when none is (``nan`` without evidence)."""
    wanted = set(evidence)
    if not wanted:
        return math.nan
    for rank, sources in enumerate(ranked, start=1):
        if wanted & set(sources):
            return 1.0 / rank
    return 0.0


def question_scores(ranked: Ranked, evidence: Iterable[str], ks: Sequence[int], prefix: str = "") -> dict[str, float]:
    """``recall@k`` and ``hit@k`` for every k, and ``mrr``, each name preceded by ``prefix``."""
    wanted = list(evidence)
    scores: dict[str, float] = {}
    for k in ks:
        scores[f"{prefix}recall@{k}"] = recall_at_k(ranked, wanted, k)
        scores[f"{prefix}hit@{k}"] = hit_at_k(ranked, wanted, k)
    scores[f"{prefix}mrr"] = reciprocal_rank(ranked, wanted)
    return scores


@dataclass
class Summary:
    """Mean of each metric over the questions that have it, overall and per category."""

    overall: dict[str, float] = field(default_factory=dict)
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def mean(values: Iterable[float]) -> float:
    """Mean of the values that are not ``nan``; ``nan`` when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def summarize(rows: Sequence[Mapping[str, float]], categories: Sequence[str]) -> Summary:
    """Average per-question score dicts overall and per category (``categories[i]`` is row i's category)."""
    if len(rows) != len(categories):
        raise ValueError(f"{len(rows)} score rows but {len(categories)} categories")
    names = sorted({name for row in rows for name in row})
    summary = Summary(counts={"all": len(rows)})
    summary.overall = {n: mean(row.get(n, math.nan) for row in rows) for n in names}
    for cat in sorted(set(categories)):
        chosen = [row for row, c in zip(rows, categories, strict=True) if c == cat]
        summary.by_category[cat] = {n: mean(row.get(n, math.nan) for row in chosen) for n in names}
        summary.counts[cat] = len(chosen)
    return summary


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation; ``nan`` for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
