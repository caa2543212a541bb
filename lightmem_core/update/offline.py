"""Offline ("sleep-time") update: an incremental queue of similar newer entries, then decisions.

``build_queue`` finds, for each entry, the most similar entries that are strictly newer. It only
searches for entries created since the last run (a per-user watermark): each new entry gets its own
list, and is merged into the lists of the older entries it resembles, so no N² pass is repeated.
``apply_queue`` asks a ``UpdateDecider`` what to do with each queued entry whose candidates pass the
score threshold. Candidates are strictly newer, so entries with the same time stamp never act on
each other. Every change is written to the history store.
"""

from __future__ import annotations

import logging

from lightmem_core.components import Components
from lightmem_core.errors import ExtractionParseError
from lightmem_core.graph.consolidate import consolidate
from lightmem_core.models import MemoryEntry, utc_now
from lightmem_core.stores.indexing import index_entries
from lightmem_core.update.decision import Decision, ExactDuplicateDecider, UpdateDecider

log = logging.getLogger(__name__)
WATERMARK = "update_queue_created_ts"


def build_queue(c: Components, user_id: str, top_k: int = 20, keep_top_n: int = 10) -> int:
    """Update the user's queue with the entries created since the last run; returns entries searched."""
    if c.embedder is None:
        log.warning("offline update needs dense vectors; index_strategy writes none, so the queue stays empty")
        return 0
    watermark = c.history.counter(user_id, WATERMARK, default=-1.0)
    fresh = [e for e in c.store.list_entries(user_id, since_ts=watermark) if e.created_at.timestamp() > watermark]
    if not fresh:
        return 0
    vectors = c.store.dense_vectors([e.id for e in fresh])
    queue = dict(c.history.update_queue(user_id))
    touched: set[str] = set()
    for entry in fresh:
        vec = vectors.get(entry.id)
        if vec is None:
            continue
        ts = entry.time_stamp.timestamp()
        newer = c.store.search(user_id, "embedding", vec, None, top_k, {"time_stamp": {"gt": ts}})
        queue[entry.id] = _merge(queue.get(entry.id, []), [(e.id, s) for e, s in newer], keep_top_n)
        touched.add(entry.id)
        for older, score in c.store.search(user_id, "embedding", vec, None, top_k, {"time_stamp": {"lt": ts}}):
            queue[older.id] = _merge(queue.get(older.id, []), [(entry.id, score)], keep_top_n)
            touched.add(older.id)
    with c.history.transaction() as conn:
        for entry_id in touched:
            c.history.put_update_candidates(conn, entry_id, user_id, queue[entry_id])
        c.history.set_counter(conn, user_id, WATERMARK, max(e.created_at.timestamp() for e in fresh))
    return len(fresh)


def _merge(existing: list[dict[str, object]], found: list[tuple[str, float]], keep: int) -> list[dict[str, object]]:
    best: dict[str, float] = {str(c["id"]): float(c["score"]) for c in existing}  # type: ignore[arg-type]
    for entry_id, score in found:
        best[entry_id] = max(score, best.get(entry_id, score))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    return [{"id": i, "score": s} for i, s in ranked]


def apply_queue(c: Components, user_id: str, score_threshold: float, decider: UpdateDecider | None = None) -> dict[str, int]:
    """Decide and apply, for every queued entry with a candidate scoring at least ``score_threshold``.

    ``decider`` defaults to the components' (the LLM's, when one is configured). A reply that stays
    invalid after its repair is recorded as a failed batch and the entry stays queued.
    """
    decider = decider or c.decider
    if decider is None:
        log.info("no LLM configured: the offline update merges exact duplicates only")
        decider = ExactDuplicateDecider()
    counts = {"update": 0, "delete": 0, "ignore": 0, "failed": 0}
    for entry_id, cands in c.history.update_queue(user_id):
        ids = [str(x["id"]) for x in cands if float(x["score"]) >= score_threshold]
        found = c.store.get([entry_id])
        if not found:
            with c.history.transaction() as conn:
                c.history.drop_from_update_queue(conn, [entry_id])
            continue
        entry = found[0]
        candidates = [e for e in c.store.get(ids) if e.time_stamp > entry.time_stamp]
        if not candidates:
            continue
        try:
            decision = decider.decide(entry, candidates)
        except ExtractionParseError as exc:
            c.history.record_failure(user_id, "update", {"entry_id": entry.id, "candidate_ids": ids},
                                     exc.raw_reply, str(exc))
            counts["failed"] += 1
            continue
        apply_decision(c, entry, candidates, decision)
        counts[decision.action] += 1
    # graph_mem: merge duplicate nodes, retire contradicted edges (history kept)
    for key, n in consolidate(c.history, user_id).items():
        counts[key] = counts.get(key, 0) + n
    return counts


def apply_decision(c: Components, entry: MemoryEntry, candidates: list[MemoryEntry], decision: Decision) -> None:
    """Carry out one decision: store first, then record the change and take the entry off the queue."""
    reason = decision.reason or decision.action
    with c.history.transaction() as conn:
        if entry.kind == "image":
            pass  # an image entry is never rewritten: upserting it again would drop its image vector
        elif decision.action == "update" and decision.new_text and decision.new_text.strip() != entry.memory:
            # The new text is indexed as it is: the old message's index texts no longer describe it.
            updated = entry.model_copy(update={"memory": decision.new_text.strip(), "updated_at": utc_now(),
                                               "match_text": None, "embed_text": None})
            index_entries([updated], c.store, c.embedder, c.bm25)  # re-embed: the old vector would be stale
            c.history.record_change(conn, entry.id, entry.user_id, "UPDATE", entry.memory, updated.memory, reason)
        elif decision.action == "delete":
            survivor = next((e for e in candidates if e.id == decision.merge_into), None)
            if survivor is not None and survivor.kind == "fact":  # an image entry stays as it is
                merged_sources = list(dict.fromkeys([*survivor.source_ids, *entry.source_ids]))
                kept = survivor.model_copy(update={"source_ids": merged_sources, "updated_at": utc_now()})
                index_entries([kept], c.store, c.embedder, c.bm25)
                c.history.record_change(conn, kept.id, kept.user_id, "MERGE", survivor.memory, kept.memory,
                                        f"absorbed {entry.id}: {reason}")
            c.store.delete([entry.id])
            c.history.record_change(conn, entry.id, entry.user_id, "DELETE", entry.memory, None, reason)
        c.history.drop_from_update_queue(conn, [entry.id])
