"""Metric arithmetic against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from producers.eval.metrics import (
    hit_at_k,
    mean,
    percentile,
    question_scores,
    recall_at_k,
    reciprocal_rank,
    summarize,
)

# Three retrieved entries, best first, each with the message ids it was made from.
RANKED = [["m1"], ["m2", "m3"], ["m9"]]


def test_entry_covering_one_of_two_evidence_turns_gives_half_recall() -> None:
    assert recall_at_k(RANKED, ["m2", "m7"], 3) == 0.5
    assert hit_at_k(RANKED, ["m2", "m7"], 3) == 1.0


def test_recall_counts_only_the_first_k_entries() -> None:
    assert recall_at_k(RANKED, ["m2", "m7"], 1) == 0.0
    assert recall_at_k(RANKED, ["m1", "m9"], 1) == 0.5
    assert recall_at_k(RANKED, ["m1", "m9"], 2) == 0.5
    assert recall_at_k(RANKED, ["m1", "m9"], 3) == 1.0
    assert recall_at_k(RANKED, ["m1", "m9"], 20) == 1.0  # k beyond the list


def test_one_entry_made_from_both_evidence_turns_gives_full_recall() -> None:
    assert recall_at_k(RANKED, ["m2", "m3"], 2) == 1.0
    assert recall_at_k(RANKED, ["m2", "m3"], 1) == 0.0


def test_repeated_evidence_ids_count_once() -> None:
    assert recall_at_k(RANKED, ["m2", "m2", "m7"], 3) == 0.5


def test_reciprocal_rank_is_one_over_first_entry_from_evidence() -> None:
    assert reciprocal_rank(RANKED, ["m3"]) == 0.5
    assert reciprocal_rank(RANKED, ["m9", "m1"]) == 1.0
    assert reciprocal_rank(RANKED, ["m7"]) == 0.0
    assert reciprocal_rank([], ["m7"]) == 0.0


def test_no_evidence_gives_nan_not_zero() -> None:
    assert math.isnan(recall_at_k(RANKED, [], 5))
    assert math.isnan(hit_at_k(RANKED, [], 5))
    assert math.isnan(reciprocal_rank(RANKED, []))


def test_question_scores_names_every_cutoff() -> None:
    scores = question_scores(RANKED, ["m3", "m9"], (1, 2, 3), prefix="session_")
    assert scores == {
        "session_recall@1": 0.0, "session_hit@1": 0.0,
        "session_recall@2": 0.5, "session_hit@2": 1.0,
        "session_recall@3": 1.0, "session_hit@3": 1.0,
        "session_mrr": 0.5,
    }


def test_summarize_averages_overall_and_per_category_skipping_nan() -> None:
    rows = [{"recall@5": 1.0}, {"recall@5": 0.5}, {"recall@5": 0.0}, {"recall@5": math.nan}]
    summary = summarize(rows, ["1", "1", "2", "2"])
    assert summary.overall["recall@5"] == pytest.approx(0.5)
    assert summary.by_category["1"]["recall@5"] == pytest.approx(0.75)
    assert summary.by_category["2"]["recall@5"] == 0.0
    assert summary.counts == {"all": 4, "1": 2, "2": 2}
    with pytest.raises(ValueError):
        summarize(rows, ["1"])


def test_mean_and_percentile() -> None:
    assert mean([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(mean([]))
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))
