"""The call cache (``kv_cache``): a reply replayed instead of calling the model again.

``CachingClient`` wraps the client stack once, outside retries and accounting. Its key is a hash of
the backend, the model, the sampling parameters, JSON mode and the exact messages, so a batch
redelivered after a worker crash, a re-run of the offline update or an eval run again sends nothing
that was answered before. A replayed reply is the stored one, byte for byte, and is recorded in the
accounting with the outcome ``CACHE_HIT``: it is not an LLM call.

Only valid replies stay cached. A JSON-mode reply that is not JSON at all is never stored; one that
is JSON but fails its schema is taken out again by whoever parses it (``discard_reply``, called by
``ask_json``, where ``ExtractionParseError`` is raised). This is not the model's KV cache: those
tensors stay inside the serving runtime (see ``OpenAICompatClient`` and the prompts for the other
half, prompts laid out so that the provider's own prefix cache hits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from lightmem_core.errors import TransientError
from lightmem_core.llm.accounting import CallRecorder
from lightmem_core.llm.base import CACHE_HIT, CallTag, ChatMessage, LLMClient, LLMReply
from lightmem_core.llm.replies import strip_fence

log = logging.getLogger(__name__)
KEY_VERSION = 1  # bump when what goes into the key changes
T = TypeVar("T")


@dataclass(frozen=True)
class CachedReply:
    """What is stored per key: the reply's text and what it cost when it was made."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int

    def dumps(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str) -> CachedReply:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class CacheStats:
    """What ``lightmem cache stats`` shows."""

    where: str
    entries: int
    bytes: int  # of the stored replies
    replays: int  # replies given back instead of calling, since the cache was made or cleared
    max_entries: int
    max_bytes: int


class ReplyCache(Protocol):
    """Where replies are kept: SQLite or PostgreSQL (``cache_sql``), Redis (``workers``), or memory."""

    where: str

    def get(self, key: str) -> CachedReply | None:
        """The reply stored under ``key`` (marking it used now, counting a replay), or ``None``.

        Every method raises ``TransientError`` when the place cannot be reached."""

    def put(self, key: str, reply: CachedReply) -> None:
        """Store a reply (a key already there keeps its reply); evict the least recently used past the bound."""

    def delete(self, key: str) -> None:
        """Take ``key`` out; nothing when it is not there."""

    def stats(self) -> CacheStats: ...

    def clear(self) -> int:
        """Remove every entry; how many there were."""

    def close(self) -> None: ...


def cache_key(params: dict[str, Any], messages: list[ChatMessage], json_mode: bool) -> str:
    """SHA-256 of everything that shapes a reply: backend, model and sampling parameters (``params``),
    JSON mode and the exact messages."""
    material = {"v": KEY_VERSION, "params": params, "json_mode": json_mode, "messages": messages}
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def worth_keeping(text: str, json_mode: bool) -> bool:
    """An empty reply, or a JSON-mode reply that is no JSON object, is never stored."""
    if not text.strip():
        return False
    if not json_mode:
        return True
    try:
        return isinstance(json.loads(strip_fence(text)), dict)
    except ValueError:
        return False


class CachingClient:
    """Replays stored replies; calls ``inner`` (retries, accounting, backend) only on a miss.

    A cache that cannot be reached costs calls, not results: the model is called and a warning logged.

    Args:
        inner: The client stack that calls the model.
        cache: Where replies are kept; shared by every process that opens the same place.
        params: What of the configuration shapes a reply (backend, model, temperature, top_p, max_tokens).
        recorder: Gets one ``CACHE_HIT`` row per replay (no call was made); ``None``: not recorded.
    """

    def __init__(self, inner: LLMClient, cache: ReplyCache, params: dict[str, Any],
                 recorder: CallRecorder | None = None) -> None:
        self.inner, self.cache, self.params, self.recorder = inner, cache, dict(params), recorder

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        tag = tag or CallTag()
        started = time.perf_counter()
        key = cache_key(self.params, messages, json_mode)
        hit = self._safely(self.cache.get, key)
        if hit is not None:
            latency = time.perf_counter() - started
            if self.recorder is not None:
                self.recorder.record_llm_call(tag.user_id, tag.session_id, tag.purpose, hit.model, hit.prompt_tokens,
                                              hit.completion_tokens, latency, CACHE_HIT)
            return LLMReply(hit.text, hit.prompt_tokens, hit.completion_tokens, latency, hit.model, from_cache=True)
        reply = self.inner.complete(messages, json_mode=json_mode, tag=tag)
        if worth_keeping(reply.text, json_mode):
            stored = CachedReply(reply.text, reply.model, reply.prompt_tokens, reply.completion_tokens)
            self._safely(lambda k: self.cache.put(k, stored), key)
        return reply

    def discard(self, messages: list[ChatMessage], *, json_mode: bool = False) -> None:
        """Take the reply to ``messages`` out of the cache: its caller found it invalid."""
        self._safely(self.cache.delete, cache_key(self.params, messages, json_mode))

    def _safely(self, action: Callable[[str], T], key: str) -> T | None:
        try:
            return action(key)
        except TransientError as exc:
            log.warning("call cache %s unreachable (%s): going on without it", self.cache.where, exc)
            return None

    def close(self) -> None:
        self.cache.close()


def discard_reply(client: LLMClient, messages: list[ChatMessage], *, json_mode: bool = False) -> None:
    """Take an invalid reply out of ``client``'s call cache, when it keeps one (else nothing)."""
    if isinstance(client, CachingClient):
        client.discard(messages, json_mode=json_mode)


class MemoryReplyCache:
    """The in-memory fake: one process, for tests; the same bound and eviction as the others."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 512 * 2**20) -> None:
        self.where = "memory"
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: dict[str, CachedReply] = {}  # insertion order = least recently used first
        self._replays = 0

    def get(self, key: str) -> CachedReply | None:
        found = self._items.pop(key, None)
        if found is None:
            return None
        self._items[key] = found
        self._replays += 1
        return found

    def put(self, key: str, reply: CachedReply) -> None:
        self._items.setdefault(key, reply)
        if len(self._items) <= self.max_entries and self._bytes() <= self.max_bytes:
            return
        while len(self._items) > int(self.max_entries * 0.9) or self._bytes() > int(self.max_bytes * 0.9):
            del self._items[next(iter(self._items))]  # like the others: down to nine tenths of the bound

    def delete(self, key: str) -> None:
        self._items.pop(key, None)

    def _bytes(self) -> int:
        return sum(len(r.dumps().encode("utf-8")) for r in self._items.values())

    def stats(self) -> CacheStats:
        return CacheStats(self.where, len(self._items), self._bytes(), self._replays, self.max_entries, self.max_bytes)

    def clear(self) -> int:
        count = len(self._items)
        self._items.clear()
        self._replays = 0
        return count

    def close(self) -> None:
        return None
