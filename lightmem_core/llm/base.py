"""The LLM role: a one-method Protocol, the reply it returns and the tag that says what a call is for.

Backends and wrappers (retries, accounting, rate limits) all implement ``LLMClient``, so they stack:
``RetryingClient(AccountingClient(OpenAICompatClient(...)))``. A ``ScriptedClient`` ships here as the
in-memory fake for unit tests that need no HTTP server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

# The accounting outcome of a reply replayed from the call cache: no request was sent, so it is no LLM call.
CACHE_HIT = "cache_hit"


class ChatMessage(TypedDict):
    """One chat message as the OpenAI API takes it: text, or content parts (text and ``image_url``)."""

    role: str
    content: str | list[dict[str, Any]]


def content_text(message: ChatMessage) -> str:
    """A message's text: its content, or the text of its content parts (images left out)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")


def image_count(message: ChatMessage) -> int:
    """How many ``image_url`` parts a message carries."""
    content = message["content"]
    return 0 if isinstance(content, str) else sum(1 for p in content if p.get("type") == "image_url")


@dataclass(frozen=True)
class CallTag:
    """What a call is for and whose data it carries, for accounting: never sent to the server."""

    purpose: str = "other"
    user_id: str | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class LLMReply:
    """The text of a completion with its cost.

    Attributes:
        text: The assistant message's content.
        prompt_tokens: Prompt tokens from the API's usage, or counted locally when it gives none.
        completion_tokens: Completion tokens, likewise.
        latency_s: Wall time of the request.
        model: The model that answered.
        usage_reported: Whether the server reported usage (False: the counts are local).
        cached_tokens: Prompt tokens the provider served from its prefix cache
            (``usage.prompt_tokens_details.cached_tokens``; 0 when it reports none).
        from_cache: True when ``CachingClient`` replayed the reply instead of calling the model.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    usage_reported: bool = True
    cached_tokens: int = 0
    from_cache: bool = False


class LLMClient(Protocol):
    """Sends one chat completion request and returns its reply."""

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        """Complete ``messages``; ``json_mode`` asks for a JSON object. Raises ``TransientError`` or ``LightMemError``."""
        ...


class ScriptedClient:
    """An in-memory LLM for unit tests: answers from a list of texts, or from a function of the messages."""

    def __init__(self, replies: Iterable[str] = (), respond: Callable[[list[ChatMessage]], str] | None = None) -> None:
        self.replies = deque(replies)
        self.respond = respond
        self.calls: list[list[ChatMessage]] = []

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]
        if self.replies:
            text = self.replies.popleft()
        elif self.respond is not None:
            text = self.respond(messages)
        else:
            text = "{}"
        return LLMReply(text=text, prompt_tokens=0, completion_tokens=0, latency_s=0.0, model="scripted", usage_reported=False)
