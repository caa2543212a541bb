"""Cost accounting, written once around any ``LLMClient``: every attempt goes into the history store.

Each row holds the purpose, user and session from the call's ``CallTag``, prompt and completion
tokens (the API's usage, or counted locally when the server gives none), the prompt tokens the
provider served from its prefix cache, latency, model and outcome. Put it inside ``RetryingClient``
so that failed attempts are counted too. A reply replayed by ``CachingClient`` is recorded with the
outcome ``base.CACHE_HIT``: it is not an LLM call, and the totals keep it apart.
"""

from __future__ import annotations

import time
from typing import Protocol

from lightmem_core.errors import LightMemError
from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient, LLMReply
from lightmem_core.llm.openai_compat import count_prompt_tokens


class CallRecorder(Protocol):
    """Where calls are recorded; ``HistoryStore`` is one."""

    def record_llm_call(self, user_id: str | None, session_id: str | None, purpose: str, model: str | None,
                        prompt_tokens: int, completion_tokens: int, latency_s: float, outcome: str,
                        error: str | None = None, cached_tokens: int = 0) -> None: ...


class AccountingClient:
    """Records each call's cost and outcome, then returns the reply (or raises the error) unchanged."""

    def __init__(self, inner: LLMClient, recorder: CallRecorder, model: str | None = None) -> None:
        self.inner = inner
        self.recorder = recorder
        self.model = model

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        tag = tag or CallTag()
        started = time.perf_counter()
        try:
            reply = self.inner.complete(messages, json_mode=json_mode, tag=tag)
        except LightMemError as exc:
            self.recorder.record_llm_call(tag.user_id, tag.session_id, tag.purpose, self.model,
                                          count_prompt_tokens(messages), 0, time.perf_counter() - started,
                                          "error", f"{type(exc).__name__}: {exc}")
            raise
        self.recorder.record_llm_call(tag.user_id, tag.session_id, tag.purpose, reply.model, reply.prompt_tokens,
                                      reply.completion_tokens, reply.latency_s, "ok", cached_tokens=reply.cached_tokens)
        return reply
