"""Answer generation from retrieved memories and an LLM judge, through any OpenAI-compatible endpoint.

Calls go through ``lightmem_core.llm`` (``OpenAICompatClient`` wrapped in ``RetryingClient``: backoff
on 429/5xx/timeouts, bounded concurrency), and through the call cache when one is given (``kv_cache``:
an eval run again replays its answers and judgements; a judge reply without a label is not kept).
Runs only when an endpoint is configured. A call that still fails, or a judge reply without a label,
is counted with its reason and never stops the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lightmem_core.config import LLMConfig
from lightmem_core.errors import LightMemError
from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient
from lightmem_core.llm.cache import CachingClient, ReplyCache, discard_reply
from lightmem_core.llm.openai_compat import OpenAICompatClient
from lightmem_core.llm.retry import RetryingClient
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
    """Generates an answer for each retrieval and asks the judge to label it.

    ``answer_client``/``judge_client`` replace the HTTP clients (any ``LLMClient``, e.g. a fake);
    ``cache`` puts the call cache around the HTTP clients. Replays are counted apart from calls.
    """

    def __init__(self, endpoint: LLMEndpoint, answer_client: LLMClient | None = None,
                 judge_client: LLMClient | None = None, cache: ReplyCache | None = None) -> None:
        self.endpoint = endpoint
        self._answer = answer_client or _client(endpoint, endpoint.model, endpoint.answer_max_tokens, cache)
        self._judge = judge_client or _client(endpoint, endpoint.judge, 32, cache)
        self._lock = threading.Lock()
        self.calls = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def _chat(self, client: LLMClient, messages: list[ChatMessage], purpose: str) -> str:
        reply = client.complete(messages, tag=CallTag(purpose=purpose))
        with self._lock:
            if reply.from_cache:
                self.cache_hits += 1
                return reply.text
            self.calls += 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
        return reply.text

    def one(self, r: Retrieval) -> dict[str, Any]:
        """Answer and judge one question; failures become a ``failure`` field, never an exception."""
        q = r.question
        item: dict[str, Any] = {"question_id": q.question_id, "category": q.category, "gold": q.answer}
        try:
            when = q.question_time.isoformat() if q.question_time else None
            item["answer"] = self._chat(self._answer, render_answer(q.question, r.memories, when), "eval_answer")
            judging = render_judge(q.question, q.answer, item["answer"])
            reply = self._chat(self._judge, judging, "eval_judge")
        except LightMemError as exc:  # counted for this item, the run goes on
            item["failure"] = f"{type(exc).__name__}: {exc}"
            return item
        label = parse_label(reply)
        if label is None:
            discard_reply(self._judge, judging)  # not a valid judgement: never replayed
            item["failure"] = f"judge reply without a label: {reply[:200]!r}"
        else:
            item["label"] = label
        return item

    def run(self, retrievals: Sequence[Retrieval]) -> dict[str, Any]:
        """Answer and judge every retrieval; accuracy overall and per category."""
        with ThreadPoolExecutor(max_workers=self.endpoint.max_concurrency) as pool:
            items = list(pool.map(self.one, retrievals))
        return summarize_answers(items) | {
            "llm_calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cache_hits": self.cache_hits,
        }


def _client(endpoint: LLMEndpoint, model: str, max_tokens: int, cache: ReplyCache | None = None) -> LLMClient:
    config = LLMConfig(model=model, base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                       timeout_s=endpoint.timeout_s, max_tokens=max_tokens)
    client = RetryingClient(OpenAICompatClient("openai", config), max_retries=endpoint.max_retries,
                            max_concurrency=endpoint.max_concurrency)
    if cache is None:
        return client
    params = {"backend": "openai", "model": model, "temperature": config.temperature, "top_p": config.top_p,
              "max_tokens": max_tokens}
    return CachingClient(client, cache, params)


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
