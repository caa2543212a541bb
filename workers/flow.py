"""The distributed flow, without Celery: what each queue's task does, on ``lightmem_core`` stages.

The stages run in the order ``LightMemory.add_memory`` runs them (count → compress → cut topics per
session → short-term buffer → extract → embed and upsert), per user, so the queues produce the
same entries as one process does for the same input. ``send(task_name, payload)`` hands work on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lightmem_core import update as offline
from lightmem_core.errors import LightMemError, TransientError
from lightmem_core.history import GLOBAL_SCOPE
from lightmem_core.models import MemoryEntry, Message, TopicSegment
from lightmem_core.sensory import feed
from lightmem_core.stages import (
    compress_messages,
    count_message_tokens,
    cut_topics,
    extraction_tokens,
    index_entries,
    split_sessions,
)
from workers import metrics
from workers.messages import CompressPayload, SearchPayload, SessionItem, StorePayload, UpdatePayload, encode
from workers.pipeline import Pipeline

log = logging.getLogger(__name__)
Send = Callable[[str, dict[str, Any]], None]
DRAIN, STORE, UPDATE_USER = "lightmem.extract.drain", "lightmem.store.index", "lightmem.update.user"


# --- compress ---------------------------------------------------------------------------------------
def compress_sessions(pipe: Pipeline, payload: CompressPayload, send: Send) -> dict[str, int]:
    """Compress every new message of the payload in one batched call, cut topics, buffer per user."""
    st = pipe.state
    fresh: dict[str, list[Message]] = {}
    for item in payload.sessions:
        unseen = st.unseen(item.user_id, [m.id for m in item.messages])
        fresh[item.tracking_id] = [m for m in item.messages if m.id in unseen]
    everything = [m for msgs in fresh.values() for m in msgs]
    counted = count_message_tokens(everything, pipe.count_tokens)
    prepared = iter(compress_messages(counted, pipe.compressor, pipe.roles))  # one batched pass
    done = {"sessions": 0, "segments": 0, "failed": 0}
    users: set[str] = set()
    for item in payload.sessions:
        mine = [next(prepared) for _ in fresh[item.tracking_id]]
        try:
            done["segments"] += _buffer_session(pipe, item, mine)
            done["sessions"] += 1
        except LightMemError as exc:  # this session fails; the others go on
            st.record_failure("lightmem.compress.sessions", item.user_id, str(exc), encode(item), tracking_id=item.tracking_id)
            st.buffered(item.tracking_id, item.user_id, [], failed=str(exc))
            done["failed"] += 1
        users.add(item.user_id)
    for user_id in sorted(users):
        if should_drain(pipe, user_id):
            send(DRAIN, {"v": 1, "user_id": user_id})
    return done


def topic_parts(pipe: Pipeline, messages: list[Message]) -> list[list[Message]]:
    """Topic segments of one queued item, as ``LightMemory.add_memory(..., force_segment=True)`` cuts
    them: one per session without a segmenter; with one, through the sensory buffer, which the end of
    the item flushes (each enqueue call ends a sensory chunk)."""
    if pipe.segmenter is None:
        return [part for session in split_sessions(messages) for part in cut_topics(session, None)]
    cfg = pipe.config.topic_segmenter
    capacity = cfg.configs.sensory_buffer_tokens if cfg else 512
    incoming = [m for session in split_sessions(messages) for m in session]
    return feed([], incoming, pipe.segmenter, capacity, pipe.roles, pipe.count_tokens, force=True).segments


def _buffer_session(pipe: Pipeline, item: SessionItem, messages: list[Message]) -> int:
    st = pipe.state
    members = []
    with st.lock(item.user_id):
        if messages:
            for part in topic_parts(pipe, messages):
                tokens = extraction_tokens(part, pipe.roles, pipe.count_tokens)
                member = st.append(item.tracking_id, part, tokens)
                if member is not None:
                    members.append(member)
        st.buffered(item.tracking_id, item.user_id, members)
    return len(members)


def should_drain(pipe: Pipeline, user_id: str) -> bool:
    """Drain when the buffer passes the threshold (or a flush was asked) and none of the user's input
    is still in the compress queue, so that input enqueued out of order is still applied in time order;
    or when it passes the size limit regardless."""
    info = pipe.state.buffer_info(user_id)
    if not info["segments"]:
        return False
    if info["tokens"] >= pipe.settings.max_buffer_tokens:
        return True
    ready = info["flush"] or info["tokens"] >= pipe.config.short_term_threshold_tokens
    return bool(ready and not info["inflight"])


# --- extract ----------------------------------------------------------------------------------------
def drain_user(pipe: Pipeline, user_id: str, force: bool, owner: str, send: Send) -> StorePayload | None:
    """Take the user's next batch (or the one this task took in a previous run) and extract entries.

    Several batches of one user may be in flight at once: when more than one batch is ready, the
    next drain is sent before this one calls the LLM, so their waits overlap.
    """
    st = pipe.state
    if force:
        st.request_flush(user_id)
    with st.lock(user_id):
        batch = st.take_batch(user_id, owner, pipe.settings.visibility_timeout_s,
                              pipe.config.short_term_threshold_tokens, ready=should_drain(pipe, user_id))
        more = batch is not None and should_drain(pipe, user_id)
    if batch is None:
        return None
    if more:
        send(DRAIN, {"v": 1, "user_id": user_id})
    segments = [TopicSegment.model_validate(s) for s in batch["segments"]]
    try:
        entries = pipe.extractor.extract(segments)
    except TransientError:
        raise  # retried with the same task id: it takes this batch again
    except LightMemError as exc:
        st.fail_batch(user_id, batch["batch_id"], f"{type(exc).__name__}: {exc}")
        raise
    return StorePayload(user_id=user_id, batch_id=batch["batch_id"], entries=entries, segments=segments,
                        tracking=batch["tracking"])


# --- store ------------------------------------------------------------------------------------------
def store_batch(pipe: Pipeline, payload: StorePayload, send: Send) -> int:
    """Embed and upsert the entries, record messages and changes in the history, then clear the batch."""
    c = pipe.components
    entries = payload.entries
    index_entries(entries, c.store, c.embedder, c.bm25)
    messages = [m for s in payload.segments for m in s.messages]
    stats = _batch_stats(pipe, messages, entries)
    newest = max((e.created_at.timestamp() for e in entries), default=0.0)
    with c.history.transaction() as conn:
        c.history.save_messages(conn, messages)
        c.history.set_message_state(conn, [m.id for m in messages], "extracted")
        # Counted once: a re-run of a stored batch finds it finished (the history commits after Redis).
        if pipe.state.finish_batch(payload.user_id, payload.batch_id, payload.tracking, stats, newest):
            metrics.observe_batch(stats)
            for e in entries:
                c.history.record_change(conn, e.id, e.user_id, "ADD", None, e.memory, "extracted")
            for scope in (payload.user_id, GLOBAL_SCOPE):
                for name, value in stats.items():
                    c.history.add_to_counter(conn, scope, name, value)
    if should_drain(pipe, payload.user_id):
        send(DRAIN, {"v": 1, "user_id": payload.user_id})
    return len(entries)


def _batch_stats(pipe: Pipeline, messages: list[Message], entries: list[MemoryEntry]) -> dict[str, float]:
    used = [m for m in messages if m.role in pipe.roles]
    return {
        "messages_in": len(messages),
        "tokens_original": sum(m.tokens_original for m in used),
        "tokens_after_compression": sum(m.tokens_compressed if m.tokens_compressed is not None else m.tokens_original
                                        for m in used),
        "entries_stored": len(entries),
        "tokens_stored": sum(pipe.count_tokens(e.memory) for e in entries),
        "batches": 1,
    }


def search(pipe: Pipeline, payload: SearchPayload) -> list[dict[str, Any]]:
    """Retrieval as ``LightMemory.retrieve`` does it, for ``lightmem search`` through the store owner."""
    c, strategy = pipe.components, pipe.config.retrieve_strategy
    dense = c.embedder.embed([payload.query])[0] if strategy in ("embedding", "hybrid") and c.embedder else None
    sparse = c.bm25.encode_query(payload.query) if strategy in ("context", "hybrid") and c.bm25 else None
    hits = c.store.search(payload.user_id, strategy, dense, sparse, payload.limit, None)
    return [{"id": e.id, "score": s, "memory": e.memory, "time_stamp": e.time_stamp.isoformat(), "weekday": e.weekday}
            for e, s in hits]


def list_entries(pipe: Pipeline, user_id: str) -> list[dict[str, Any]]:
    """Every entry of a user, as JSON (for tests, exports and the demo)."""
    return [e.model_dump(mode="json") for e in pipe.components.store.list_entries(user_id)]


# --- update -----------------------------------------------------------------------------------------
def fan_out_updates(pipe: Pipeline, send: Send) -> list[str]:
    """One update task per user with entries stored since that user's last update."""
    users = pipe.state.users_with_new_entries()
    for user_id, newest in users.items():
        send(UPDATE_USER, encode(UpdatePayload(user_id=user_id, watermark=newest)))
        pipe.state.mark_update_sent(user_id, newest)
    return list(users)


def update_user(pipe: Pipeline, payload: UpdatePayload) -> dict[str, int]:
    """The offline update of one user: extend the update queue, decide and apply, move the watermark."""
    s, c = pipe.settings, pipe.components
    queued = offline.build_queue(c, payload.user_id, s.update_top_k, s.update_keep_top_n)
    counts = offline.apply_queue(c, payload.user_id, s.update_score_threshold, decider=pipe.decider)
    pipe.state.move_watermark(payload.user_id, payload.watermark)
    return {"queued": queued, **counts}


def flush_idle(pipe: Pipeline, send: Send) -> list[str]:
    """Flush the buffers of users idle longer than ``idle_flush_s``: no buffer holds data forever."""
    users = pipe.state.idle_users(pipe.settings.idle_flush_s)
    for user_id in users:
        pipe.state.request_flush(user_id)
        send(DRAIN, {"v": 1, "user_id": user_id})
    return users
