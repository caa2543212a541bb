"""Answer generation and the LLM judge, against a scripted OpenAI-compatible server (mechanics only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lightmem_core.config import BaseMemoryConfigs
from lightmem_core.embedders.hashing import HashingEmbedder
from producers.datasets import Conversation, DatasetSession, Question
from producers.eval.answering import Answerer, LLMEndpoint
from producers.eval.harness import EvalRun, evaluate
from producers.eval.prompts import parse_label
from producers.eval.runner import EvalOptions, Retrieval
from producers.scripted_llm import ScriptedLLMServer, Step


def _reply(messages: list[dict[str, str]]) -> str | None:
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("Label"):
        if "Generated answer: Miso" in user:
            return '{"label": "CORRECT"}'
        if "Bergen" in user:
            return "I cannot decide."
        return "```json\n{\"label\": \"WRONG\"}\n```"
    return "Miso" if "cat" in user else "Bergen" if "sister" in user else "Rome"


@pytest.mark.parametrize(
    ("reply", "label"),
    [('{"label": "CORRECT"}', "CORRECT"), ('{"label": "wrong"}', "WRONG"), ("```json\n{\"label\": \"WRONG\"}\n```", "WRONG"),
     ("The answer is CORRECT.", "CORRECT"), ("no idea", None), ('{"label": 3}', None)],
)
def test_parse_label(reply: str, label: str | None) -> None:
    assert parse_label(reply) == label


def test_answer_and_judge_with_retry_and_counted_failures() -> None:
    retrievals = [
        Retrieval(Question("q1", "What is my cat called?", "Miso", "4", ["m1"]), "u", ["2025-01-10 Fri: I adopted Miso."], 0.0),
        Retrieval(Question("q2", "Where does my sister live?", "Oslo", "4", ["m2"]), "u", [], 0.0),
        Retrieval(Question("q3", "Where was I born?", "Paris", "1", ["m3"]), "u", [], 0.0),
    ]
    with ScriptedLLMServer(responder=lambda body: _reply(body["messages"])) as server:
        server.script(Step(status=500))
        answerer = Answerer(LLMEndpoint(model="scripted", base_url=server.base_url, judge_model="judge", max_concurrency=1))
        result = answerer.run(retrievals)
        requests = list(server.requests)
    assert result["judged"] == 2 and result["judge_failures"] == 1
    assert result["accuracy"] == 0.5
    assert result["accuracy_by_category"] == {"1": 0.0, "4": 1.0}
    assert "without a label" in next(i for i in result["items"] if i["question_id"] == "q2")["failure"]
    assert result["llm_calls"] == 6 and result["prompt_tokens"] > 0 and result["completion_tokens"] > 0
    assert len(requests) == 7  # one scripted 500, retried by RetryingClient
    assert {r["model"] for r in requests} == {"scripted", "judge"}
    assert "I adopted Miso." in requests[1]["messages"][-1]["content"]


def test_an_eval_run_again_replays_its_answers_from_the_call_cache() -> None:
    from lightmem_core.llm.cache import MemoryReplyCache

    retrievals = [
        Retrieval(Question("q1", "What is my cat called?", "Miso", "4", ["m1"]), "u", ["I adopted Miso."], 0.0),
        Retrieval(Question("q2", "Where does my sister live?", "Oslo", "4", ["m2"]), "u", [], 0.0),
    ]
    cache = MemoryReplyCache()
    with ScriptedLLMServer(responder=lambda body: _reply(body["messages"])) as server:
        endpoint = LLMEndpoint(model="scripted", base_url=server.base_url, judge_model="judge", max_concurrency=1)
        cold = Answerer(endpoint, cache=cache).run(retrievals)
        again = Answerer(endpoint, cache=cache).run(retrievals)
        sent = len(server.requests)
    assert cold["llm_calls"] == 4 and cold["cache_hits"] == 0
    assert again["llm_calls"] == 1 and again["cache_hits"] == 3  # the judge reply without a label is asked again
    assert sent == 5 and again["accuracy"] == cold["accuracy"] and again["judge_failures"] == 1


def test_unreachable_endpoint_is_counted_not_raised() -> None:
    retrieval = Retrieval(Question("q1", "Q?", "A", "4", ["m1"]), "u", [], 0.0)
    answerer = Answerer(LLMEndpoint(model="m", base_url="http://127.0.0.1:9/v1", timeout_s=2, max_retries=0))
    result = answerer.run([retrieval])
    assert result["judged"] == 0 and result["judge_failures"] == 1
    assert "TransientError: openai: connection failed" in result["items"][0]["failure"]


def test_evaluate_judges_the_default_pipeline(eval_config: BaseMemoryConfigs, tmp_path: Path) -> None:
    session = DatasetSession("u1", "s1", datetime(2025, 1, 10, tzinfo=UTC), [
        {"role": "user", "content": "I adopted a cat called Miso.", "time_stamp": "2025-01-10T08:00:00Z", "id": "u1:1"},
    ])
    conv = Conversation("u1", [session], [Question("q1", "What is my cat called?", "Miso", "4", ["u1:1"])])
    with ScriptedLLMServer(responder=lambda body: _reply(body["messages"])) as server:
        run = EvalRun("locomo", eval_config, tmp_path, options=EvalOptions(ks=(1,), progress=False),
                      systems=("default", "raw-bm25"), llm=LLMEndpoint(model="scripted", base_url=server.base_url))
        report = evaluate([conv], run, embedder=HashingEmbedder(384))
    answers = report["answers"]
    assert answers["answer_model"] == answers["judge_model"] == "scripted"
    assert list(answers["systems"]) == ["default"]
    assert answers["systems"]["default"]["accuracy"] == 1.0
    assert "LLM-judged answer accuracy" in (tmp_path / "results.md").read_text()
