"""``LightMemory``: LightMem's API in one process, on the stages of ``lightmem_core``.

Flow of ``add_memory``: validate (all or nothing) → count tokens → compress (``pre_compress``) →
store the originals in the history → cut topic segments per session → short-term buffer (persisted)
→ when it passes the threshold or on ``force_extract``: extract → embed → upsert → clear the buffer.
Every public method holds one lock, so the object is safe to share between threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lightmem_core import batches
from lightmem_core import update as offline
from lightmem_core.config import BaseMemoryConfigs, configure_logging, parse_config
from lightmem_core.errors import ExtractionParseError, InvalidInput, TransientError
from lightmem_core.factory import Components, build_components
from lightmem_core.history import GLOBAL_SCOPE
from lightmem_core.ingest import normalize_messages
from lightmem_core.models import MemoryEntry, Message, RetrievedMemory, TopicSegment
from lightmem_core.online import online_update
from lightmem_core.sensory import SENSORY, feed
from lightmem_core.stages import (
    compress_messages,
    count_message_tokens,
    cut_topics,
    extraction_tokens,
    split_sessions,
)

log = logging.getLogger(__name__)
SHORT_TERM = "short_term"


class LightMemory:
    """Long-term memory for one application: add conversation turns, retrieve memories, update offline."""

    def __init__(self, config: BaseMemoryConfigs, components: Components) -> None:
        self.config = config
        self.components = c = components
        self.store, self.history = c.store, c.history
        self._lock = threading.RLock()
        if config.memory_manager.model_name == "verbatim":
            log.info("extraction runs in verbatim mode: one entry per %s message, no LLM", config.messages_use)
            if config.metadata_generate or config.text_summary:
                log.warning("metadata_generate and text_summary need an LLM; verbatim mode stores entries without them")

    @classmethod
    def from_config(cls, config: dict[str, Any] | BaseMemoryConfigs) -> LightMemory:
        """Build from LightMem's configuration dictionary (or a parsed ``BaseMemoryConfigs``)."""
        parsed = parse_config(config)
        configure_logging(parsed.logging)
        return cls(parsed, build_components(parsed))

    # --- ingest -----------------------------------------------------------------------------------
    def add_memory(
        self,
        messages: Any,
        force_segment: bool = False,
        force_extract: bool = False,
        user_id: str = "default",
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Add messages (a dict or a list of dicts) for ``user_id``.

        Returns what happened: messages added, skipped (empty or already known), entries stored.
        Invalid input raises ``ValueError`` naming the item and the field; nothing of the call is kept.
        """
        with self._lock:
            batch = normalize_messages(messages, user_id, session_id, lambda sid: self.history.next_turn_index(user_id, sid))
            known = self.history.known_message_ids([m.id for m in batch.messages])
            fresh = [m for m in batch.messages if m.id not in known]
            counted = count_message_tokens(fresh, self.components.count_tokens)
            prepared = compress_messages(counted, self.components.compressor, self.config.extraction_roles)
            parts, sensory = self._cut(prepared, force_segment, user_id)
            with self.history.transaction() as conn:
                self.history.save_messages(conn, prepared)
                if sensory is not None:
                    self._keep_sensory(conn, user_id, sensory)
                self._account_ingest(conn, user_id, prepared, len(batch.skipped_empty))
                self._to_short_term(conn, user_id, parts)
            stored = self._maybe_extract(user_id, force_extract)
            return {
                "added_messages": len(prepared),
                "skipped_empty": len(batch.skipped_empty),
                "skipped_known": len(batch.messages) - len(fresh),
                "entries_stored": len(stored),
                "entry_ids": [e.id for e in stored],
            }

    def _cut(self, messages: list[Message], force_segment: bool, user_id: str) -> tuple[list[list[Message]], list[Message] | None]:
        """Topic segments ready for the short-term buffer, and what the sensory buffer keeps.

        Without a segmenter: one segment per session of the call, no sensory buffer. With one, the
        messages go through the persisted sensory buffer (``lightmem_core.sensory``).
        """
        segmenter = self.components.segmenter
        if segmenter is None:
            return [part for session in split_sessions(messages) for part in cut_topics(session, None)], None
        buffered = [Message.model_validate(p) for _, p in self.history.buffer_items(user_id, SENSORY)]
        incoming = [m for session in split_sessions(messages) for m in session]
        capacity = self.config.topic_segmenter.configs.sensory_buffer_tokens if self.config.topic_segmenter else 512
        fed = feed(buffered, incoming, segmenter, capacity, self.config.extraction_roles,
                   self.components.count_tokens, force=force_segment)
        return fed.segments, fed.remaining

    def _to_short_term(self, conn: Any, user_id: str, parts: list[list[Message]]) -> None:
        for part in parts:
            topic_id = self.history.next_counter(conn, user_id, "topic_id")
            seg = TopicSegment(user_id=user_id, session_id=part[0].session_id, topic_id=topic_id, messages=part)
            self.history.buffer_put(conn, user_id, SHORT_TERM, f"topic-{topic_id}", seg.model_dump(mode="json"))

    def _keep_sensory(self, conn: Any, user_id: str, remaining: list[Message]) -> None:
        """Persist the sensory buffer: what left it is removed, what stays is kept in order."""
        stay = {m.id for m in remaining}
        gone = [k for k, _ in self.history.buffer_items(user_id, SENSORY) if k not in stay]
        self.history.buffer_remove(conn, user_id, SENSORY, gone)
        for m in remaining:
            self.history.buffer_put(conn, user_id, SENSORY, m.id, m.model_dump(mode="json"))

    def _account_ingest(self, conn: Any, user_id: str, messages: list[Message], skipped: int) -> None:
        roles = self.config.extraction_roles
        used = [m for m in messages if m.role in roles]
        for scope in (user_id, GLOBAL_SCOPE):
            self.history.add_to_counter(conn, scope, "messages_in", len(messages))
            self.history.add_to_counter(conn, scope, "messages_skipped_empty", skipped)
            self.history.add_to_counter(conn, scope, "tokens_original", sum(m.tokens_original for m in used))
            self.history.add_to_counter(
                conn, scope, "tokens_after_compression",
                sum(m.tokens_compressed if m.tokens_compressed is not None else m.tokens_original for m in used),
            )

    def _buffered_segments(self, user_id: str) -> list[tuple[str, TopicSegment]]:
        return [(k, TopicSegment.model_validate(p)) for k, p in self.history.buffer_items(user_id, SHORT_TERM)]

    def _maybe_extract(self, user_id: str, force: bool) -> list[MemoryEntry]:
        buffered = self._buffered_segments(user_id)
        if not buffered:
            return []
        roles, count = self.config.extraction_roles, self.components.count_tokens
        tokens = sum(extraction_tokens(seg.messages, roles, count) for _, seg in buffered)
        if not force and tokens < self.config.short_term_threshold_tokens:
            return []
        try:
            entries = self.components.extractor.extract([seg for _, seg in buffered])
        except ExtractionParseError as exc:
            batches.park_failed(self.components, user_id, SHORT_TERM, buffered, exc)
            return []
        except TransientError as exc:
            log.warning("extraction for user %s failed for now (%s); the buffer is kept for the next try", user_id, exc)
            return []
        return self._store_extracted(user_id, SHORT_TERM, buffered, entries)

    def retry_failed(self, user_id: str = "default") -> dict[str, int]:
        """Extract again every failed batch of ``user_id``; returns batches retried, still failed, entries stored."""
        with self._lock:
            return batches.retry_failed(self.components, user_id, self._after_store)

    def _store_extracted(self, user_id: str, kind: str, buffered: list[tuple[str, TopicSegment]],
                         entries: list[MemoryEntry]) -> list[MemoryEntry]:
        batches.store_extracted(self.components, user_id, kind, buffered, entries)
        self._after_store(entries)
        return entries

    def _after_store(self, entries: list[MemoryEntry]) -> None:
        if self.config.update == "online" and entries:
            self._online_update(entries)

    def _online_update(self, entries: list[MemoryEntry]) -> None:
        opts, c = self.config.memory_manager.configs, self.components
        try:
            online_update(c, entries, c.decider or offline.ExactDuplicateDecider(), opts.online_score_threshold,
                          opts.online_top_k)
        except TransientError as exc:  # the entries are stored; the offline update will see them again
            log.warning("online update skipped for now: %s", exc)

    def flush(self, user_id: str = "default") -> int:
        """Cut the sensory buffer's tail, then extract whatever the short-term buffer holds now.

        Returns the number of entries stored.
        """
        with self._lock:
            if self.components.segmenter is not None:
                parts, remaining = self._cut([], True, user_id)
                with self.history.transaction() as conn:
                    self._keep_sensory(conn, user_id, remaining or [])
                    self._to_short_term(conn, user_id, parts)
            return len(self._maybe_extract(user_id, force=True))

    # --- retrieval --------------------------------------------------------------------------------
    def retrieve(
        self,
        query: str,
        limit: int = 10,
        filters: dict[str, Any] | None = None,
        user_id: str = "default",
        as_text: bool = False,
    ) -> list[RetrievedMemory] | str:
        """The ``limit`` memories of ``user_id`` most relevant to ``query``, by ``retrieve_strategy``.

        ``as_text=True`` gives LightMem's plain-string form, one ``date weekday: text`` line each.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query: expected a non-empty string")
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit: expected a positive integer, got {limit!r}")
        strategy = self.config.retrieve_strategy
        c = self.components
        dense = c.embedder.embed([query])[0] if strategy in ("embedding", "hybrid") and c.embedder else None
        sparse = c.bm25.encode_query(query) if strategy in ("context", "hybrid") and c.bm25 else None
        with self._lock:
            hits = self.store.search(user_id, strategy, dense, sparse, limit, filters)
        results = [
            RetrievedMemory(id=e.id, score=s, memory=e.memory, time_stamp=e.time_stamp, weekday=e.weekday, entry=e)
            for e, s in hits
        ]
        return "\n".join(r.as_line() for r in results) if as_text else results

    def get_all(self, user_id: str = "default") -> list[MemoryEntry]:
        with self._lock:
            return self.store.list_entries(user_id)

    def get(self, entry_id: str) -> MemoryEntry | None:
        with self._lock:
            found = self.store.get([entry_id])
            return found[0] if found else None

    def history_of(self, entry_id: str) -> list[dict[str, Any]]:
        """Every change made to an entry: action, old text, new text, reason, time."""
        return self.history.entry_history(entry_id)

    def history_for(self, entry_id: str) -> list[dict[str, Any]]:
        """Alias of ``history_of`` (mem0 calls it ``history``, a name taken here by the history store)."""
        return self.history_of(entry_id)

    # --- deletion ---------------------------------------------------------------------------------
    def delete(self, entry_id: str) -> bool:
        with self._lock:
            found = self.store.get([entry_id])
            if not found:
                return False
            self.store.delete([entry_id])
            with self.history.transaction() as conn:
                self.history.record_change(conn, entry_id, found[0].user_id, "DELETE", found[0].memory, None, "deleted by caller")
                self.history.drop_from_update_queue(conn, [entry_id])
            return True

    def delete_all(self, user_id: str) -> None:
        """Remove every entry, buffer and message of ``user_id``; other users are untouched."""
        with self._lock:
            self.store.delete_user(user_id)
            with self.history.transaction() as conn:
                self.history.delete_user(conn, user_id)

    def reset(self) -> None:
        """Drop everything: the collection and the history."""
        with self._lock:
            self.store.reset()
            self.history.reset()

    # --- offline update ---------------------------------------------------------------------------
    def construct_update_queue_all_entries(self, top_k: int = 20, keep_top_n: int = 10, user_id: str | None = None) -> int:
        """For each entry, find the most similar newer entries; only entries new since the last run are searched."""
        with self._lock:
            users = [user_id] if user_id is not None else self.history.users()
            return sum(offline.build_queue(self.components, u, top_k, keep_top_n) for u in users)

    def offline_update_all_entries(self, score_threshold: float = 0.8, user_id: str | None = None) -> dict[str, int]:
        """Apply the update queue: without an LLM only exact duplicates are merged (and the log says so)."""
        with self._lock:
            users = [user_id] if user_id is not None else self.history.users()
            totals: dict[str, int] = {}
            for u in users:
                for action, n in offline.apply_queue(self.components, u, score_threshold).items():
                    totals[action] = totals.get(action, 0) + n
            return totals

    # --- accounting -------------------------------------------------------------------------------
    def get_token_statistics(self, user_id: str | None = None) -> dict[str, float]:
        """Messages, tokens before and after compression, entries and tokens stored, LLM calls and tokens."""
        scope = user_id if user_id is not None else GLOBAL_SCOPE
        stats = {k: 0.0 for k in ("messages_in", "messages_skipped_empty", "tokens_original",
                                   "tokens_after_compression", "entries_stored", "tokens_stored")}
        stats.update(self.history.counters(scope))
        stats.update({f"llm_{k}": v for k, v in self.history.llm_totals(user_id).items()})
        original = stats["tokens_original"]
        stats["compression_ratio"] = stats["tokens_after_compression"] / original if original else 1.0
        return stats

    def close(self) -> None:
        with self._lock:
            self.store.close()
            self.history.close()
