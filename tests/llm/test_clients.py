"""The LLM client stack with the real ``openai`` client against the scripted server: retries, accounting."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from lightmem_core import parse_config
from lightmem_core.errors import ConfigError, LLMRequestError, TransientError
from lightmem_core.factory import LLM_BACKENDS, build_llm_client
from lightmem_core.history import HistoryStore
from lightmem_core.llm.base import CallTag, ChatMessage, LLMReply
from lightmem_core.llm.openai_compat import count_prompt_tokens, retry_after_s
from lightmem_core.llm.ratelimit import InProcessRateLimiter
from lightmem_core.llm.retry import RetryingClient
from producers.scripted_llm import ScriptedLLMServer, Step
from tests.llm.conftest import llm_config

PROMPT: list[ChatMessage] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "secret prompt text"}]


def _stack(tmp_path: Path, server: ScriptedLLMServer, history: HistoryStore | None = None,
           **llm: object) -> tuple[RetryingClient, HistoryStore]:
    cfg = parse_config(llm_config(tmp_path, server.base_url, llm=llm))
    history = history or HistoryStore(str(tmp_path / "calls.db"))
    client = build_llm_client(cfg, recorder=history)
    assert isinstance(client, RetryingClient)
    client.base_delay_s = 0.05  # keep the test quick; the backoff formula is tested below
    return client, history


def _outcomes(history: HistoryStore) -> list[str]:
    with history.transaction() as conn:
        return [r["outcome"] for r in conn.execute("SELECT outcome FROM llm_calls ORDER BY id")]


def test_429_with_retry_after_is_honoured(tmp_path: Path, llm_server: ScriptedLLMServer,
                                         history_store: HistoryStore) -> None:
    client, history = _stack(tmp_path, llm_server, history_store)
    llm_server.script(Step(status=429, retry_after="1"), Step(content="fine"))
    started = time.perf_counter()
    reply = client.complete(PROMPT, tag=CallTag("extraction", "u1", "s1"))
    assert reply.text == "fine"
    assert time.perf_counter() - started >= 0.95  # waited what Retry-After asked, not the 0.05 s backoff
    assert llm_server.statuses == [429, 200]
    assert _outcomes(history) == ["error", "ok"]
    totals = history.llm_totals("u1")
    assert totals["calls"] == 2 and totals["completion_tokens"] == 1


def test_500_is_retried_with_backoff(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, history = _stack(tmp_path, llm_server)
    llm_server.script(Step(status=500), Step(status=503), Step(content="ok now"))
    assert client.complete(PROMPT).text == "ok now"
    assert llm_server.statuses == [500, 503, 200]
    assert _outcomes(history) == ["error", "error", "ok"]


def test_hung_reply_times_out_and_is_retried(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, history = _stack(tmp_path, llm_server, timeout_s=0.5)
    llm_server.script(Step(delay_s=5.0), Step(content="awake"))
    started = time.perf_counter()
    assert client.complete(PROMPT).text == "awake"
    assert time.perf_counter() - started < 3.0
    assert _outcomes(history) == ["error", "ok"]


def test_broken_response_body_is_retried(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, history = _stack(tmp_path, llm_server)
    llm_server.script(Step(raw_body='{"choices": [broken'), Step(content="whole"))
    assert client.complete(PROMPT).text == "whole"
    assert _outcomes(history) == ["error", "ok"]


def test_attempts_run_out_with_a_transient_error(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, history = _stack(tmp_path, llm_server, max_retries=2)
    llm_server.script(*[Step(status=502)] * 3)
    with pytest.raises(TransientError, match="HTTP 502"):
        client.complete(PROMPT)
    assert len(llm_server.requests) == 3


def test_refusal_is_not_retried(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, _ = _stack(tmp_path, llm_server)
    llm_server.script(Step(status=401, raw_body='{"error": {"message": "Incorrect API key provided: sk-test"}}'))
    with pytest.raises(LLMRequestError, match="401") as caught:
        client.complete(PROMPT)
    assert "sk-test" not in str(caught.value) and "***" in str(caught.value)
    assert len(llm_server.requests) == 1


def test_tokens_are_counted_locally_without_usage(tmp_path: Path, llm_server: ScriptedLLMServer,
                                                  history_store: HistoryStore) -> None:
    client, history = _stack(tmp_path, llm_server, history_store)
    llm_server.script(Step(content="four words right here", usage=False))
    reply = client.complete(PROMPT, tag=CallTag("other", "u2"))
    assert not reply.usage_reported
    assert reply.prompt_tokens == count_prompt_tokens(PROMPT) and reply.completion_tokens == 4
    assert history.llm_totals("u2")["prompt_tokens"] == count_prompt_tokens(PROMPT)


def test_request_carries_configured_sampling_and_json_mode(tmp_path: Path, llm_server: ScriptedLLMServer) -> None:
    client, _ = _stack(tmp_path, llm_server, model="my-model", temperature=0.3, max_tokens=77)
    client.complete(PROMPT, json_mode=True)
    body = llm_server.requests[0]
    assert body["model"] == "my-model" and body["temperature"] == 0.3 and body["max_tokens"] == 77
    assert body["response_format"] == {"type": "json_object"}


def test_key_and_prompt_stay_out_of_logs_above_debug(tmp_path: Path, llm_server: ScriptedLLMServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    client, _ = _stack(tmp_path, llm_server)
    llm_server.script(Step(status=500), Step(content="x"))
    with caplog.at_level(logging.DEBUG):
        client.complete(PROMPT)
    loud = " ".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    assert "retry" in loud  # the retry itself is reported...
    assert "sk-test" not in loud and "secret prompt text" not in loud  # ...without key or prompt
    assert "secret prompt text" in " ".join(r.getMessage() for r in caplog.records)  # DEBUG may show the prompt


def test_every_backend_name_builds(tmp_path: Path) -> None:
    for name in LLM_BACKENDS:
        cfg = parse_config(llm_config(tmp_path, "http://127.0.0.1:1/v1", llm={"model": "m"}) |
                           {"memory_manager": {"model_name": name, "configs": {"model": "m", "api_key": "k"}}})
        assert build_llm_client(cfg) is not None
    local = parse_config({"memory_manager": {"model_name": "ollama", "configs": {"model": "llama3"}}})
    assert build_llm_client(local) is not None  # local servers need no key
    keyless = parse_config({"memory_manager": {"model_name": "deepseek"}})
    with pytest.raises(ConfigError, match="DEEPSEEK_API_KEY"):
        build_llm_client(keyless)


def test_key_from_environment_is_read_at_the_edge() -> None:
    from workers.settings import with_llm_key

    data = {"memory_manager": {"model_name": "qwen", "configs": {"model": "qwen-plus"}}}
    filled = with_llm_key(data, {"DASHSCOPE_API_KEY": "k-env"})
    assert filled["memory_manager"]["configs"]["api_key"] == "k-env"
    given = {"memory_manager": {"model_name": "openai", "configs": {"api_key": "k-cfg"}}}
    assert with_llm_key(given, {"OPENAI_API_KEY": "k-env"})["memory_manager"]["configs"]["api_key"] == "k-cfg"


def test_retry_after_forms() -> None:
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "not a date"}) is None
    assert retry_after_s({}) is None


class _Slow:
    def __init__(self) -> None:
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.05)
        with self.lock:
            self.in_flight -= 1
        return LLMReply("ok", 1, 1, 0.05, "slow")


def test_concurrency_cap_and_backoff_with_jitter() -> None:
    inner = _Slow()
    client = RetryingClient(inner, max_concurrency=2)
    threads = [threading.Thread(target=client.complete, args=(PROMPT,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.peak == 2
    delays = [client.delay_s(n, None) for n in range(4)]
    assert all(0.25 * 2**n <= d <= 0.5 * 2**n for n, d in enumerate(delays))  # doubling, jittered down to half
    assert client.delay_s(0, 7.0) == 7.0


def test_in_process_rate_limiter_waits_for_the_window() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    limiter = InProcessRateLimiter(requests_per_minute=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire(10)
    assert waits == [60.0]
