"""One client for every OpenAI-compatible endpoint: OpenAI, DeepSeek, Qwen (DashScope), Ollama, vLLM.

The backend name only picks defaults (base URL, model, whether a key is needed). The key comes from
the configuration; ``workers.settings`` fills it from the environment, since ``lightmem_core``
never reads ``os.environ``. The SDK's own retries are off: ``RetryingClient`` owns retries, and SDK
exceptions are translated here, at the edge, into ``TransientError`` or ``LLMRequestError``.
TLS certificates are always verified.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any

from lightmem_core.config import LLMConfig
from lightmem_core.errors import ConfigError, LLMRequestError, TransientError
from lightmem_core.llm.base import CallTag, ChatMessage, LLMReply, content_text, image_count
from lightmem_core.tokens import count_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendDefaults:
    """What a backend name implies when the configuration leaves it out."""

    base_url: str
    model: str | None
    key_env: str | None  # the variable the settings layer reads; None: no key needed


BACKENDS: dict[str, BackendDefaults] = {
    "openai": BackendDefaults("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY"),
    "deepseek": BackendDefaults("https://api.deepseek.com/v1", "deepseek-chat", "DEEPSEEK_API_KEY"),
    "qwen": BackendDefaults("https://dashscope.aliyuncs.com/compatible-mode/v1", "qwen-plus", "DASHSCOPE_API_KEY"),
    "ollama": BackendDefaults("http://localhost:11434/v1", None, None),
    "vllm": BackendDefaults("http://localhost:8000/v1", None, None),
}


IMAGE_TOKENS = 765  # what OpenAI bills a 1024x1024 image at high detail: an estimate, for rate limits and logs


def count_prompt_tokens(messages: list[ChatMessage]) -> int:
    """Prompt tokens as OpenAI's chat format counts them (about 4 per message plus 3 for the reply; an image
    as ``IMAGE_TOKENS``)."""
    return sum(count_tokens(content_text(m)) + IMAGE_TOKENS * image_count(m) + 4 for m in messages) + 3


class OpenAICompatClient:
    """Chat completions through the ``openai`` package, one request per ``complete``."""

    def __init__(self, backend: str, config: LLMConfig) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"memory_manager.model_name={backend!r}: expected one of {sorted(BACKENDS)}")
        defaults = BACKENDS[backend]
        model = config.model or defaults.model
        if not model:
            raise ConfigError(f"memory_manager.configs.model: the model name is required for {backend!r}")
        key = config.api_key
        if not key and defaults.key_env:
            raise ConfigError(f"memory_manager.configs.api_key is required for {backend!r} (or set {defaults.key_env})")
        from openai import OpenAI

        self.backend, self.model, self.config = backend, model, config
        self._client = OpenAI(api_key=key or "not-needed", base_url=config.base_url or defaults.base_url,
                              timeout=config.timeout_s, max_retries=0)

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        """One request; raises ``TransientError`` (retry may help) or ``LLMRequestError`` (it will not)."""
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.config.temperature,
                                  "max_tokens": self.config.max_tokens}
        if self.config.top_p is not None:
            kwargs["top_p"] = self.config.top_p
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        log.debug("LLM request to %s (%s): %s", self.backend, tag, messages)
        started = time.perf_counter()
        try:
            reply = self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise TransientError(f"{self.backend}: request timed out after {self.config.timeout_s} s") from exc
        except openai.APIConnectionError as exc:
            raise TransientError(f"{self.backend}: connection failed: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500 or exc.status_code == 408:
                raise TransientError(f"{self.backend}: HTTP {exc.status_code}",
                                     retry_after_s=retry_after_s(exc.response.headers)) from exc
            raise LLMRequestError(f"{self.backend}: HTTP {exc.status_code}: {self._redact(exc.message)}") from exc
        except (openai.OpenAIError, ValueError) as exc:  # a body that is not a completion, or not JSON at all
            raise TransientError(f"{self.backend}: unreadable reply: {type(exc).__name__}") from exc
        latency = time.perf_counter() - started
        if not reply.choices:
            raise TransientError(f"{self.backend}: reply without choices")
        text = reply.choices[0].message.content or ""
        log.debug("LLM reply from %s: %s", self.backend, text)
        usage = reply.usage
        if usage is not None:
            details = usage.prompt_tokens_details  # OpenAI, vLLM, DeepSeek...: the prompt prefix served from cache
            cached = int(details.cached_tokens or 0) if details is not None else 0
            return LLMReply(text, usage.prompt_tokens, usage.completion_tokens, latency, reply.model or self.model,
                            cached_tokens=cached)
        return LLMReply(text, count_prompt_tokens(messages), count_tokens(text), latency, reply.model or self.model,
                        usage_reported=False)


    def check(self) -> None:
        """Fail now, with ``ConfigError`` naming the cause, when the endpoint is unreachable or refuses the
        key (``GET /models``, no tokens spent). Any other answer means it is there."""
        import openai

        where = f"{self.backend} at {self._client.base_url}"
        try:
            self._client.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ConfigError(f"{where} refused the API key (HTTP {exc.status_code}): "
                              "check memory_manager.configs.api_key") from exc
        except openai.APIConnectionError as exc:  # timeouts included
            raise ConfigError(f"{where} is unreachable ({type(exc).__name__}): check memory_manager.configs.base_url "
                              "and that the server runs") from exc
        except openai.APIStatusError:
            pass  # it answered: some servers have no /models

    def _redact(self, text: str) -> str:
        # Error messages end up in logs and failure records; some servers echo the key back.
        key = self.config.api_key
        return text.replace(key, "***") if key else text


def retry_after_s(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``; None if absent."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())
