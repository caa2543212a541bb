"""Answer generation from retrieved memories and an LLM judge, through any OpenAI-compatible endpoint.

Runs only when an endpoint is configured. A failed call (after the client's own retries) or a judge
reply without a label is counted, with its reason, and never stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from producers.eval.metrics import mean
from producers.eval.prompts import ANSWER_VERSION, JUDGE_VERSION, parse_label, render_answer, render_judge
from producers.eval.runner import Retrieval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMEndpoint:
    """Where answers and judgements come from; ``judge_model`` defaults to ``model``."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    judge_model: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    max_concurrency: int = 4
    answer_max_tokens: int = 128

    @property
    def judge(self) -> str:
        return self.judge_model or self.model


class Answerer:
    """Generates an answer for each retrieval and asks the judge to label it."""

    def __init__(self, endpoint: LLMEndpoint) -> None:
        from openai import OpenAI

        self.endpoint = endpoint
        self._client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                              timeout=endpoint.timeout_s, max_retries=endpoint.max_retries)
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def _chat(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        reply = self._client.chat.completions.create(model=model, messages=messages, temperature=0.0,  # type: ignore[arg-type]
                                                     max_tokens=max_tokens)
        self.calls += 1
        if reply.usage is not None:
            self.prompt_tokens += reply.usage.prompt_tokens
            self.completion_tokens += reply.usage.completion_tokens
        return reply.choices[0].message.content or ""

    def one(self, r: Retrieval) -> dict[str, Any]:
        """Answer and judge one question; failures become a ``failure`` field, never an exception."""
        q = r.question
        item: dict[str, Any] = {"question_id": q.question_id, "category": q.category, "gold": q.answer}
        try:
            when = q.question_time.isoformat() if q.question_time else None
            item["answer"] = self._chat(self.endpoint.model, render_answer(q.question, r.memories, when),
                                        self.endpoint.answer_max_tokens)
            reply = self._chat(self.endpoint.judge, render_judge(q.question, q.answer, item["answer"]), 32)
        except Exception as exc:  # any client error is counted for this item, the run goes on
            item["failure"] = f"{type(exc).__name__}: {exc}"
            return item
        label = parse_label(reply)
        if label is None:
            item["failure"] = f"judge reply without a label: {reply[:200]!r}"
        else:
            item["label"] = label
        return item

    def close(self) -> None:
        self._client.close()

    def run(self, retrievals: Sequence[Retrieval]) -> dict[str, Any]:
        """Answer and judge every retrieval; accuracy overall and per category."""
        with ThreadPoolExecutor(max_workers=self.endpoint.max_concurrency) as pool:
            items = list(pool.map(self.one, retrievals))
        return summarize_answers(items) | {
            "llm_calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
        }


def summarize_answers(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over the judged items (failures excluded and counted)."""
    judged = [i for i in items if "label" in i]
    score = [1.0 if i["label"] == "CORRECT" else 0.0 for i in judged]
    by_cat: dict[str, list[float]] = {}
    for i, s in zip(judged, score, strict=True):
        by_cat.setdefault(i["category"], []).append(s)
    failures = [i for i in items if "failure" in i]
    if failures:
        log.warning("%d of %d answers could not be judged; first: %s", len(failures), len(items), failures[0]["failure"])
    return {
        "accuracy": mean(score),
        "accuracy_by_category": {c: mean(v) for c, v in sorted(by_cat.items())},
        "judged": len(judged),
        "judge_failures": len(failures),
        "prompt_versions": [ANSWER_VERSION, JUDGE_VERSION],
        "items": items,
    }
