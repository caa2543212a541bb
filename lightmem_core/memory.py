"""``LightMemory``: LightMem's API in one process, on the stages of ``lightmem_core``.

A thin driver over ``lightmem_core.pipeline`` on SQLite state (``lightmem_core.sqlite_state``): the
Celery workers run the same stages on Redis state. Flow of ``add_memory``: validate (all or nothing)
→ ``prepare`` (count, compress) → keep the originals in the history → ``buffer_messages`` (topic
segments through the sensory buffer into the short-term buffer) → while the buffer is ready (or on
``force_extract``): ``new_batch`` → ``extract_batch`` in the background (``ExtractionPool``) →
``store_batch`` → ``after_store``, in each user's batch order, as the calls come back.

``add_memory`` does not wait for the LLM: it returns once its batches are handed to the pool (the
pool holds at most ``background_extractions`` calls in flight and makes a caller wait beyond that).
Where a model compresses or segments, it does not wait for the model either: the call is kept in the
history's inbox (``lightmem_core/inbox.py``), and the ingest thread takes every call queued meanwhile
(up to ``background_ingest_sessions`` sessions) into one compression pass, then buffers each call in
order and hands on the batches due, exactly as ``add_memory`` would have.
``force_extract``, ``flush``, ``wait``, every read (``retrieve``, ``get_all``, statistics...), the
offline update, deletion and ``close`` first settle what is pending, so they see what synchronous
ingestion and extraction would have stored, and raise an error met in the background. Every public
method holds one lock (released while it waits for the ingest thread), so the object is safe to share
between threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from lightmem_core import forget, pipeline, retrieval
from lightmem_core.components import Components
from lightmem_core.config import BaseMemoryConfigs, configure_logging, parse_config
from lightmem_core.errors import ConfigError, ExtractionParseError, TransientError
from lightmem_core.extraction.base import VerbatimExtractor
from lightmem_core.extraction.pool import ExtractionPool, Pending
from lightmem_core.factory import build_components
from lightmem_core.graph import read as graph_read
from lightmem_core.history import GLOBAL_SCOPE
from lightmem_core.inbox import Inbox, QueuedCall
from lightmem_core.ingest import normalize_messages
from lightmem_core.models import MemoryEntry, Message, RetrievedMemory
from lightmem_core.spec import PipelineSpec
from lightmem_core.sqlite_state import SQLiteState
from lightmem_core.stores.indexing import Vectors
from lightmem_core.update import offline

log = logging.getLogger(__name__)
LIBRARY_OWNER = "library"  # the one owner of batches in flight in one process: a later call takes them again
Outcome = Literal["stored", "failed", "transient"]
Settled = tuple[Outcome, list[MemoryEntry]]


class LightMemory:
    """Long-term memory for one application: add conversation turns, retrieve memories, update offline."""

    def __init__(self, config: BaseMemoryConfigs, components: Components) -> None:
        self.config = config
        self.components = c = components
        self.store, self.history = c.store, c.history
        self.state = SQLiteState(c.history)
        self.spec = PipelineSpec.of(config)
        self._lock = threading.RLock()
        self._ingested = threading.Condition(self._lock)  # the ingest thread ends each pass with notify_all
        # Verbatim extraction makes no call: nothing to wait for, so it runs in the caller's thread.
        size = 0 if isinstance(c.extractor, VerbatimExtractor) else config.memory_manager.configs.background_extractions
        # Background ingestion pays only where a model compresses or segments (lightmem_core/inbox.py).
        self._ingest_sessions = config.background_ingest_sessions
        self._background = self._ingest_sessions > 0 and (c.compressor is not None or c.segmenter is not None)
        self._inbox = Inbox(c.history)
        self._ingester: threading.Thread | None = None
        self._pool = ExtractionPool(lambda batch: pipeline.extract_batch(batch, c.extractor), size)
        if not self._inbox.settled(None):  # calls an earlier run accepted and did not buffer: first
            self._start_ingester()

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

        Returns what happened: messages added, skipped (empty or already known), entries stored during
        the call, the user's batches still pending in the background and the user's calls not yet
        compressed (``calls_queued``; ``force_extract`` waits for both, so then none). Invalid input
        raises ``ValueError`` naming the item and the field; nothing of the call is kept.

        With a compressor or segmenter model (and ``background_ingest_sessions`` > 0) the call's new
        messages are kept in the history and compressed and segmented by the ingest thread, together
        with the other calls queued meanwhile.
        """
        c = self.components
        with self._lock:
            batch = normalize_messages(messages, user_id, session_id, lambda sid: self._next_turn_index(user_id, sid))
            if self._background:
                added = self._queue(user_id, batch.messages, len(batch.skipped_empty), force_segment)
                if force_extract:
                    self._await_ingest(user_id)
                settled = self._drain(user_id, force=True, wait=True) if force_extract else self._settle(user_id, False)
            else:
                self._await_ingest(user_id)  # calls left by an earlier run go first
                prepared = pipeline.prepare(self.state, batch.messages, c.count_tokens, c.compressor, self.spec.roles)
                self._buffer(user_id, prepared, len(batch.skipped_empty), force_segment)
                added = len(prepared)
                settled = self._drain(user_id, force_extract, wait=force_extract)
            stored = _entries(settled)
            return {
                "added_messages": added,
                "skipped_empty": len(batch.skipped_empty),
                "skipped_known": len(batch.messages) - added,
                "entries_stored": len(stored),
                "entry_ids": [e.id for e in stored],
                "batches_pending": self._pool.pending(user_id),
                "calls_queued": self._inbox.pending(user_id),
            }

    def _next_turn_index(self, user_id: str, session_id: str) -> int:
        return max(self.history.next_turn_index(user_id, session_id), self._inbox.next_turn_index(user_id, session_id))

    def _buffer(self, user_id: str, prepared: list[Message], skipped_empty: int, force_segment: bool,
                call: QueuedCall | None = None) -> None:
        """Keep the originals, count, and buffer the topic segments of one call's prepared messages, all or
        nothing; a queued ``call`` leaves the inbox in the same transaction."""
        c = self.components
        with self.history.transaction() as conn:
            self.history.save_messages(conn, prepared)  # the originals, kept from the start
            for scope in (user_id, GLOBAL_SCOPE):
                self.history.add_to_counter(conn, scope, "messages_skipped_empty", skipped_empty)
            pipeline.buffer_messages(self.state, user_id, prepared, c.segmenter, self.spec, c.count_tokens,
                                     force_segment)
            if call is not None:
                self._inbox.finish(conn, call)

    # --- background ingestion (lightmem_core/inbox.py) --------------------------------------------
    def _queue(self, user_id: str, messages: list[Message], skipped_empty: int, force_segment: bool) -> int:
        """Queue the call's messages that are new for the user (not buffered, not queued before); returns
        how many. A call with nothing new is queued only when it has something else to do."""
        queued = self._inbox.queued_ids(user_id)
        new = pipeline.fresh_messages(self.state, [m for m in messages if m.id not in queued])
        if new or skipped_empty or force_segment:
            self._inbox.put(QueuedCall(self._inbox.new_key(), user_id, new, force_segment, skipped_empty))
            self._start_ingester()
        return len(new)

    def _start_ingester(self) -> None:
        if self._ingester is None or not self._ingester.is_alive():
            self._ingester = threading.Thread(target=self._ingest_loop, name="lightmem-ingest", daemon=True)
            self._ingester.start()

    def _ingest_loop(self) -> None:
        while (calls := self._inbox.take(max(1, self._ingest_sessions))) is not None:
            self._ingest(calls)

    def _ingest(self, calls: list[QueuedCall]) -> None:
        """One pass of the ingest thread: compress and embed the turns of ``calls`` together (outside the
        lock), then buffer each call in order and hand on the batches that are due. A user whose call or
        batch fails is held with the error (``Inbox.hold``), to be raised by the next call that waits; the
        call that failed is tried again after that, unless it failed for good (any error but a
        ``TransientError``): then it is kept with the failed calls for ``retry_failed`` (``Inbox.fail``)."""
        failed: dict[str, BaseException] = {}
        culprits: dict[str, QueuedCall] = {}  # the call that failed, where one did
        ready = self._prepare_pass(calls, failed, culprits)
        with self._lock:
            try:
                for call, prepared in zip(calls, ready, strict=True):
                    if _held_back(call, failed, culprits):  # a user's later calls wait behind one that failed
                        continue
                    try:
                        self._buffer(call.user_id, prepared, call.skipped_empty, call.force_segment or call.flush, call)
                    except Exception as exc:  # noqa: BLE001
                        failed[call.user_id], culprits[call.user_id] = exc, call
                        continue
                    if call.flush:  # a queued flush drains at its place, before the user's later calls
                        try:
                            self._drain(call.user_id, force=True, wait=False)
                        except Exception as exc:  # noqa: BLE001
                            failed[call.user_id] = exc
                for user in dict.fromkeys(call.user_id for call in calls):
                    if user not in failed:
                        try:
                            self._drain(user, force=False, wait=False)
                        except Exception as exc:  # noqa: BLE001
                            failed[user] = exc
            finally:
                for user, error in failed.items():
                    culprit, after = culprits.get(user), "then tried again"
                    if culprit is not None and not isinstance(error, TransientError):  # it would fail every time
                        self._inbox.fail(culprit, f"{type(error).__name__}: {error}")
                        after = "the call kept for retry_failed"
                    log.warning("background ingestion for user %s failed (%s); raised by the next call that waits "
                                "for the user, %s", user, type(error).__name__, after)
                    self._inbox.hold([call for call in calls if call.user_id == user], [user], error)
                self._ingested.notify_all()

    def _prepare_pass(self, calls: list[QueuedCall], failed: dict[str, BaseException],
                      culprits: dict[str, QueuedCall]) -> list[list[Message]]:
        """``prepare_calls`` over the pass; when it fails, call by call, so that one call's bad input holds
        only its user (the error in ``failed``, the call in ``culprits``, an empty list in the place of
        that call and of the user's later ones)."""
        c = self.components

        def prepare(some: list[QueuedCall]) -> list[list[Message]]:
            return pipeline.prepare_calls(self.state, [call.messages for call in some], c.count_tokens,
                                          c.compressor, c.segmenter, self.spec.roles)

        try:
            return prepare(calls)
        except Exception as exc:  # noqa: BLE001  # raised to the next caller that waits for the user
            if len(calls) == 1:
                failed[calls[0].user_id], culprits[calls[0].user_id] = exc, calls[0]
                return [[]]
        ready: list[list[Message]] = []
        for call in calls:
            try:
                ready += prepare([call]) if call.user_id not in failed else [[]]
            except Exception as exc:  # noqa: BLE001
                failed[call.user_id], culprits[call.user_id] = exc, call
                ready.append([])
        return ready

    def _await_ingest(self, user_id: str | None) -> None:
        """Wait, the lock released meanwhile, until the calls of ``user_id`` (or everyone's) are buffered;
        an error the ingest thread met for them is raised here, once, and the calls are tried again after."""
        self._ingested.wait_for(lambda: self._inbox.settled(user_id))
        error = self._inbox.take_error(user_id)
        if error is not None:
            self._start_ingester()
            raise error

    def _drain(self, user_id: str, force: bool, wait: bool) -> list[Settled]:
        """Hand batches to the pool while the short-term buffer is ready (or, with ``force``, until it is
        empty), then store those whose calls are back; with ``wait``, all of them. A batch left
        in flight by a transient failure (or by an earlier run of the program) is sent first, and after
        a transient failure no new batch is taken in this call."""
        if force and self.state.info(user_id).segments:
            self.state.request_flush(user_id)
        self._pool.resend(user_id)
        known = self._pool.batch_ids(user_id)
        left = [b for b in self.state.in_flight(user_id) if b.batch_id not in known]
        self._pool.send(sorted(left, key=lambda b: min((s.topic_id for s in b.segments), default=0)))
        settled = self._settle(user_id, block=False)
        while not self._pool.stalled(user_id):
            with self.state.lock(user_id):
                batch = pipeline.new_batch(self.state, user_id, LIBRARY_OWNER, self.spec.threshold_tokens)
            if batch is None:
                break
            self._pool.send([batch])
            if self._pool.failed_any(user_id):  # settle now: a transient failure stops the drain
                settled += self._settle(user_id, block=False)
        # The batches are stored once all are sent: those back by then share one embedding call.
        return settled + self._settle(user_id, block=wait)

    def _settle(self, user_id: str, block: bool) -> list[Settled]:
        """Store (or fail) the user's batches whose calls are back, in order; with ``block``, wait for all
        of them. Stops at a transient failure: that batch stays in flight, and those behind it wait."""
        settled: list[Settled] = []
        ahead: dict[str, Vectors] = {}
        while (pending := self._pool.next_done(user_id, block)) is not None:
            try:
                if pending.batch.batch_id not in ahead:
                    ahead = self._embed_ahead(user_id)
                outcome, entries = self._finish(pending, ahead.pop(pending.batch.batch_id, None))
            except BaseException:  # raised to the caller; the batch stays in flight, sent again next time
                self._pool.stall(pending)
                raise
            settled.append((outcome, entries))
            if outcome == "transient":
                self._pool.stall(pending)
                break
            self._pool.pop(pending)
        return settled

    def _settle_all(self, user_id: str | None = None) -> list[Settled]:
        """Wait for what is pending: of ``user_id``, or of every user."""
        self._await_ingest(user_id)
        users = [user_id] if user_id is not None else self._pool.users()
        return [done for u in users for done in self._settle(u, block=True)]

    def _embed_ahead(self, user_id: str) -> dict[str, Vectors]:
        """The entries of the user's batches that are back and next in order, embedded in one call."""
        run = self._pool.done_run(user_id)
        if len(run) < 2:
            return {}  # one batch: store_batch embeds it
        entries_of = [p.call.result() for p in run if p.call is not None]
        return {p.batch.batch_id: v for p, v in zip(run, pipeline.embed_ahead(self.components, entries_of), strict=True)}

    def _finish(self, pending: Pending, vectors: Vectors | None = None) -> Settled:
        """Store and (online) update a batch whose call is back; a failed batch is kept for ``retry_failed``."""
        c, batch, call = self.components, pending.batch, pending.call
        assert call is not None and call.done()
        try:
            entries = call.result()
        except ExtractionParseError as exc:
            pipeline.fail_batch(self.state, batch, exc)
            return "failed", []
        except TransientError as exc:
            log.warning("extraction for user %s failed for now (%s); the batch stays in flight for the next try",
                        batch.user_id, type(exc).__name__)
            return "transient", []
        pipeline.store_batch(self.state, c, batch, entries, self.spec.roles, vectors)
        pipeline.after_store(c, self.spec, entries, c.decider)
        return "stored", entries

    def wait(self, user_id: str | None = None) -> int:
        """Wait until the batches of ``user_id`` (or of every user) handed to the background are settled:
        stored, or failed and kept for ``retry_failed``. Returns the entries stored meanwhile; raises an
        error met in the background. A batch that met a transient error stays in flight for the next
        ``add_memory`` or ``flush`` of its user, as without the background pool."""
        with self._lock:
            return len(_entries(self._settle_all(user_id)))

    def retry_failed(self, user_id: str = "default") -> dict[str, int]:
        """Take back the failed calls of ``user_id`` (background ingestion) and extract again every failed
        batch; returns calls retried, batches retried, batches still failed, entries stored.

        A batch that meets a transient error again stays in flight, and the next ``add_memory`` or
        ``flush`` of the user takes it first. A call that fails again is raised here and kept again.
        """
        with self._lock:
            calls = self._inbox.requeue_failed(user_id)
            if calls:
                self._start_ingester()
            self._settle_all(user_id)  # what is pending first, so that what settles next is the retried batches
            resumed = pipeline.resume_failed(self.state, user_id, LIBRARY_OWNER)
            self._pool.send(resumed)
            settled = self._settle_all(user_id)
            stored = sum(outcome == "stored" for outcome, _ in settled)
            return {"calls_retried": calls, "retried": len(resumed), "still_failed": len(resumed) - stored,
                    "entries_stored": len(_entries(settled))}

    def flush(self, user_id: str = "default", wait: bool = True) -> int:
        """Cut the sensory buffer's tail, then extract whatever the short-term buffer holds now.

        Returns the number of entries stored during the call. With ``wait=False`` the flush does not
        wait for the models or the LLM: with background ingestion it is queued behind the user's calls
        (kept in the history's inbox like them) and the ingest thread applies it in its place; otherwise
        the batches go to the background pool. ``wait()`` and every read wait for it, and an error met
        in the background is raised there. An application that feeds many users flushes each without
        waiting, so that one user's last passes and calls overlap the next user's.
        """
        c = self.components
        with self._lock:
            if not wait and self._background:
                self._inbox.put(QueuedCall(self._inbox.new_key(), user_id, flush=True))
                self._start_ingester()
                return 0
            self._await_ingest(user_id)
            if c.segmenter is not None:
                with self.history.transaction():
                    pipeline.buffer_messages(self.state, user_id, [], c.segmenter, self.spec, c.count_tokens,
                                             force=True)
            return len(_entries(self._drain(user_id, force=True, wait=wait)))

    # --- retrieval --------------------------------------------------------------------------------
    @property
    def _retriever(self) -> retrieval.Retriever:
        return retrieval.Retriever.of(self.components, self.spec.retrieve_strategy, graph=self.spec.graph_mem)

    def retrieve(
        self,
        query: str,
        limit: int | None = None,
        filters: dict[str, Any] | None = None,
        user_id: str = "default",
        as_text: bool = False,
        graph_hops: int = 0,
    ) -> list[RetrievedMemory] | str:
        """The ``limit`` memories of ``user_id`` most relevant to ``query``, by ``retrieve_strategy``.

        ``limit`` defaults to ``context_retriever.configs.top_k`` when set, else 10 (LightMem's default).
        With ``summary_retriever`` the topic summaries are searched first. ``as_text=True`` gives
        LightMem's plain-string form, one ``date weekday: text`` line each. ``graph_hops`` (1 or 2, with
        ``graph_mem``) fuses in the entries linked to the edges within that many hops of the entities the
        query names.
        """
        with self._lock:
            self._settle_all(user_id)
        # The search itself outside the lock: both stores answer searches concurrently with writes.
        results = self._retriever.retrieve(user_id, query, limit if limit is not None else self.spec.default_limit,
                                           filters, graph_hops=graph_hops)
        return "\n".join(r.as_line() for r in results) if as_text else results

    def get_all(self, user_id: str = "default") -> list[MemoryEntry]:
        with self._lock:
            self._settle_all(user_id)
            return self.store.list_entries(user_id)

    def get(self, entry_id: str) -> MemoryEntry | None:
        with self._lock:
            self._settle_all()
            found = self.store.get([entry_id])
            return found[0] if found else None

    def history_of(self, entry_id: str) -> list[dict[str, Any]]:
        """Every change made to an entry: action, old text, new text, reason, time."""
        with self._lock:
            self._settle_all()
            return self.history.entry_history(entry_id)

    def history_for(self, entry_id: str) -> list[dict[str, Any]]:
        """Alias of ``history_of`` (mem0 calls it ``history``, a name taken here by the history store)."""
        return self.history_of(entry_id)

    def summarize(self, user_id: str = "default") -> dict[str, Any]:
        """LightMem's ``summarize()``: the topic summaries of ``user_id`` (``summaries``, each with its
        topic, time range and entry count; ``total_summaries``, ``total_entries``, ``time_range``).

        LightMem writes summaries here with extra LLM calls over time windows; in this project the
        extraction call already writes one per topic (``text_summary``) and ``summary_retriever``
        indexes them as batches are stored, so this reads them and makes no call."""
        summaries = self.components.summaries
        if summaries is None:
            raise ConfigError("summarize() needs summary_retriever (and text_summary: true) in the configuration")
        return summaries.report(user_id, self.get_all(user_id))

    def graph(self, user_id: str = "default", entity: str | None = None, hops: int = 1) -> dict[str, Any]:
        """The user's graph (``graph_mem``): without ``entity`` its nodes and names; with one, that entity's
        edges (retired ones too) and, with ``hops=2``, the edges one step further, each with the entries and
        messages it comes from. ``NotFound`` when no node has that name."""
        return graph_read.describe(self.history, user_id, entity, hops)

    # --- deletion ---------------------------------------------------------------------------------
    def delete(self, entry_id: str) -> bool:
        """Delete one entry (of whichever user), recording the change; False when there is none."""
        with self._lock:
            self._settle_all()
            found = self.store.get([entry_id])
            if not found:
                return False
            forget.delete_entry(self.store, self.history, found[0].user_id, entry_id)
            return True

    def delete_all(self, user_id: str) -> None:
        """Remove every entry, buffer and message of ``user_id``; other users are untouched. The user's
        calls not ingested yet are dropped, not waited for (an error held for them is not raised)."""
        with self._lock:
            # drop_user refuses while a pass holds some of the user's calls: tried again after each pass
            self._ingested.wait_for(lambda: self._inbox.drop_user(user_id))
            self._settle_all(user_id)
            forget.delete_user(self.store, self.history, user_id, self.components.summaries)

    def reset(self) -> None:
        """Drop everything: the collection (and the summaries') and the history."""
        with self._lock:
            self._settle_all()
            self.store.reset()
            if self.components.summaries is not None:
                self.components.summaries.store.reset()
            self.history.reset()

    # --- offline update ---------------------------------------------------------------------------
    def construct_update_queue_all_entries(self, top_k: int = 20, keep_top_n: int = 10, user_id: str | None = None) -> int:
        """For each entry, find the most similar newer entries; only entries new since the last run are searched."""
        with self._lock:
            self._settle_all(user_id)
            users = [user_id] if user_id is not None else self.history.users()
            return sum(offline.build_queue(self.components, u, top_k, keep_top_n) for u in users)

    def offline_update_all_entries(self, score_threshold: float = 0.8, user_id: str | None = None) -> dict[str, int]:
        """Apply the update queue: without an LLM only exact duplicates are merged (and the log says so)."""
        with self._lock:
            self._settle_all(user_id)
            users = [user_id] if user_id is not None else self.history.users()
            return offline.apply_queues(self.components, users, score_threshold)  # all users' calls share the slots

    # --- accounting -------------------------------------------------------------------------------
    def get_token_statistics(self, user_id: str | None = None) -> dict[str, float]:
        """Messages, tokens before and after compression, entries and tokens stored, LLM calls and tokens."""
        with self._lock:
            self._settle_all(user_id)
        scope = user_id if user_id is not None else GLOBAL_SCOPE
        stats = {k: 0.0 for k in ("messages_in", "messages_skipped_empty", "tokens_original",
                                   "tokens_after_compression", "entries_stored", "tokens_stored")}
        stats.update(self.history.counters(scope))
        stats.update({f"llm_{k}": v for k, v in self.history.llm_totals(user_id).items()})
        original = stats["tokens_original"]
        stats["compression_ratio"] = stats["tokens_after_compression"] / original if original else 1.0
        return stats

    def close(self) -> None:
        """Settle what is pending, then close the stores; an error met in the background is raised after."""
        try:
            with self._lock:
                self._settle_all()
        finally:
            self._inbox.close()  # calls held by an error stay in the history for the next run
            if self._ingester is not None:
                self._ingester.join()  # outside the lock: a pass under way finishes first
            with self._lock:
                self._pool.close()  # batches stalled by a transient error stay in flight for the next run
                self._close_stores()

    def _close_stores(self) -> None:
        with self._lock:
            self.store.close()
            if self.components.summaries is not None:
                self.components.summaries.store.close()
            self.history.close()
            if self.components.reply_cache is not None:
                self.components.reply_cache.close()


def _held_back(call: QueuedCall, failed: dict[str, BaseException], culprits: dict[str, QueuedCall]) -> bool:
    """Whether ``call`` waits: its user failed in this pass, at this call or before it (the user's calls
    ahead of the one that failed are buffered)."""
    if call.user_id not in failed:
        return False
    culprit = culprits.get(call.user_id)
    return culprit is None or call.key >= culprit.key


def _entries(settled: list[Settled]) -> list[MemoryEntry]:
    return [e for _, entries in settled for e in entries]
