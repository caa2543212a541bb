"""The harness end to end: a LoCoMo slice and the LongMemEval sample through every system."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lightmem_core.config import BaseMemoryConfigs
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.errors import ConfigError
from producers.datasets import Conversation, DatasetSession, Question
from producers.eval.harness import EvalRun, evaluate
from producers.eval.report import RECALL_PNG, RESULTS_JSON, RESULTS_MD
from producers.eval.runner import EvalOptions, group_specs
from producers.eval.systems import ALL_SYSTEMS, build_specs, raw_turn_config, with_paths


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["systems"]}


def test_locomo_slice_every_system(locomo_slice: Conversation, eval_config: BaseMemoryConfigs,
                                   minilm_embedder: Any, tmp_path: Path) -> None:
    turn = locomo_slice.sessions[1].messages[3]
    exact = Question("copy", turn["content"], "", "4", evidence_ids=[turn["id"]])
    conv = dataclasses.replace(locomo_slice, questions=[*locomo_slice.questions, exact])
    options = EvalOptions(ks=(1, 5), categories=frozenset("1234"), progress=False)
    run = EvalRun("locomo", eval_config, tmp_path / "out", options=options)
    report = evaluate([conv], run, embedder=minilm_embedder)

    for name in (RESULTS_JSON, RESULTS_MD, RECALL_PNG, "per_question.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    written = json.loads((tmp_path / "out" / RESULTS_JSON).read_text())
    assert [s["name"] for s in written["systems"]] == list(ALL_SYSTEMS)
    assert written["input"]["turns"] == 58
    scored = sum(1 for q in conv.questions if q.category != "5")
    systems = _by_name(report)
    for s in systems.values():
        assert s["questions_scored"] == scored
        assert 0.0 <= s["metrics"]["recall@1"] <= s["metrics"]["recall@5"] <= 1.0
        assert s["cost"]["retrieval_p50_ms"] <= s["cost"]["retrieval_p95_ms"]
        assert s["cost"]["entries_stored"] > 0
    raw = systems["raw-dense"]["cost"]
    assert raw["entries_stored"] == 58
    shared = ("ingest_s", "entries_stored", "tokens_stored", "tokens_original")
    assert [systems["raw-hybrid"]["cost"][k] for k in shared] == [raw[k] for k in shared]  # one shared ingest
    assert systems["raw-bm25"]["cost"]["tokens_stored"] == raw["tokens_stored"]
    per_question = json.loads((tmp_path / "out" / "per_question.json").read_text())
    for name in ("raw-dense", "raw-bm25", "raw-hybrid"):
        copy = next(q for q in per_question[name] if q["question_id"] == "copy")
        assert copy["scores"]["recall@1"] == 1.0, name
        assert copy["retrieved_sources"][0] == [turn["id"]]
    assert report["goal"] is not None and "tokens_ok" in report["goal"] and "returned_tokens_ok" in report["goal"]
    returned = {name: s["cost"]["tokens_returned_top10"] for name, s in systems.items()}
    assert 0 < returned["default"] < returned["raw-hybrid"]  # compressed entries hand back fewer tokens
    table = (tmp_path / "out" / RESULTS_MD).read_text()
    assert "| raw-dense |" in table and "recall@5" in table and "vs raw-dense" in table
    assert "returned tokens (top 10)" in table and "recall@1 per category" in table


def _longmemeval_slice(conv: Conversation, others: int) -> Conversation:
    evidence_sessions = set(conv.questions[0].evidence_session_ids)
    kept = [s for s in conv.sessions if s.session_id in evidence_sessions]
    kept += [s for s in conv.sessions if s.session_id not in evidence_sessions][:others]
    return dataclasses.replace(conv, sessions=kept)


def test_longmemeval_turn_and_session_recall(longmemeval: list[Conversation], eval_config: BaseMemoryConfigs,
                                             minilm_embedder: Any, tmp_path: Path) -> None:
    conv = _longmemeval_slice(longmemeval[0], 6)
    run = EvalRun("longmemeval", eval_config, tmp_path, options=EvalOptions(ks=(1, 5), progress=False),
                  systems=("default", "raw-dense"))
    systems = _by_name(evaluate([conv], run, embedder=minilm_embedder))
    for s in systems.values():
        assert s["questions_scored"] == 1
        assert {"recall@5", "session_recall@5", "session_mrr"} <= set(s["metrics"])
        assert s["metrics"]["session_recall@5"] >= s["metrics"]["recall@5"] - 1e-9
        assert s["metrics_by_category"].keys() == {"single-session-user"}
    # messages_use: user_only keeps the user turns only; the raw baseline keeps every turn.
    assert systems["default"]["cost"]["tokens_stored"] < systems["raw-dense"]["cost"]["tokens_stored"]
    assert systems["raw-dense"]["metrics"]["session_recall@5"] == 1.0


def test_whole_longmemeval_sample_with_bm25(longmemeval: list[Conversation], eval_config: BaseMemoryConfigs,
                                            tmp_path: Path) -> None:
    run = EvalRun("longmemeval", eval_config, tmp_path, options=EvalOptions(ks=(1, 10), progress=False),
                  systems=("raw-bm25",))
    (s,) = evaluate(longmemeval, run, embedder=HashingEmbedder(384))["systems"]
    assert s["cost"]["entries_stored"] == 550
    assert s["questions_scored"] == 1


def test_empty_conversation_and_question_without_evidence_are_counted_skips(
    eval_config: BaseMemoryConfigs, tmp_path: Path
) -> None:
    stamp = DatasetSession("u1", "s1", datetime(2025, 1, 10, tzinfo=UTC), messages=[
        {"role": "user", "content": "I adopted a cat called Miso.", "time_stamp": "2025-01-10T08:00:00Z", "id": "u1:1"},
        {"role": "user", "content": "My sister lives in Oslo.", "time_stamp": "2025-01-10T08:00:00Z", "id": "u1:2"},
    ])
    good = Conversation("u1", [stamp], [Question("q1", "What is my cat called?", "Miso", "4", ["u1:1"]),
                                        Question("q2", "Where is my brother?", "", "4")])
    empty = Conversation("u2", [], [Question("q3", "Anything?", "", "4", ["u2:1"])])
    run = EvalRun("locomo", eval_config, tmp_path, options=EvalOptions(ks=(1, 2), progress=False), systems=("raw-bm25",))
    (s,) = evaluate([empty, good], run, embedder=HashingEmbedder(384))["systems"]
    assert s["skipped"]["conversation_without_turns"] == {"count": 1, "items": ["u2"]}
    assert s["skipped"]["question_without_evidence"] == {"count": 1, "items": ["q2"]}
    assert s["questions_scored"] == 1 and s["conversations"] == 1
    assert s["metrics"]["recall@1"] == 1.0 and s["metrics"]["mrr"] == 1.0


def test_unknown_system_fails_before_any_work(eval_config: BaseMemoryConfigs, tmp_path: Path) -> None:
    run = EvalRun("locomo", eval_config, tmp_path / "out", systems=("default", "mem0"))
    with pytest.raises(ConfigError, match="mem0"):
        evaluate([], run, embedder=HashingEmbedder(384))
    assert not (tmp_path / "out").exists()


def test_baselines_store_raw_turns_in_their_own_folder(eval_config: BaseMemoryConfigs, tmp_path: Path) -> None:
    raw = with_paths(raw_turn_config("raw-bm25", eval_config), tmp_path)
    assert (raw.pre_compress, raw.topic_segment, raw.messages_use) == (False, False, "hybrid")
    assert raw.retrieve_strategy == raw.index_strategy == "context"
    assert raw.history_db_path == str(tmp_path / "history.db")
    assert raw.embedding_retriever is not None and raw.embedding_retriever.configs.path == str(tmp_path / "qdrant")
    moved = with_paths(eval_config, tmp_path / "d")
    assert moved.retrieve_strategy == eval_config.retrieve_strategy
    assert not math.isnan(moved.extract_threshold)


def test_systems_differing_only_in_retrieval_share_one_ingest(eval_config: BaseMemoryConfigs) -> None:
    groups = group_specs(build_specs(eval_config))
    assert [[s.name for s in g] for g in groups] == [["default"], ["raw-dense", "raw-hybrid"], ["raw-bm25"]]
