"""Offline ("sleep-time") update: an incremental queue of similar newer entries, then decisions.

``build_queue`` finds, for each entry, the most similar entries that are strictly newer. It only
looks for entries created since the last run (a per-user watermark): each new entry gets its own
list, and is merged into the lists of the older entries it resembles, so no N² pass is repeated.
The new entries are compared with all the user's entries in one matrix product (``similar``).

``apply_queue`` asks an ``UpdateDecider`` what to do with each queued entry whose candidates pass the
score threshold. Every prompt is built from the store as it was when the run began, and decisions
are applied in queue order as they arrive, each to the entries as they are by then: the result does
not depend on which call finishes first. Candidates are strictly newer, so entries with the same
time stamp never act on each other. Every change is written to the history store, and an applied
entry leaves the queue in the same transaction, so a run started again after a crash never applies
a decision twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from lightmem_core.components import Components
from lightmem_core.graph.consolidate import consolidate
from lightmem_core.models import MemoryEntry, utc_now
from lightmem_core.stores.indexing import index_entries
from lightmem_core.update.decision import Decision, ExactDuplicateDecider, Failure, Group, UpdateDecider
from lightmem_core.update.similar import neighbours, unit_rows

log = logging.getLogger(__name__)
WATERMARK = "update_queue_created_ts"
Candidates = list[dict[str, object]]


def build_queue(c: Components, user_id: str, top_k: int = 20, keep_top_n: int = 10) -> int:
    """Update the user's queue with the entries created since the last run; returns entries compared."""
    if c.embedder is None:
        log.warning("offline update needs dense vectors; index_strategy writes none, so the queue stays empty")
        return 0
    watermark = c.history.counter(user_id, WATERMARK, default=-1.0)
    everyone = c.store.list_entries(user_id)
    fresh = [e for e in everyone if e.created_at.timestamp() > watermark]
    if not fresh:
        return 0
    vectors = c.store.dense_vectors([e.id for e in everyone])
    indexed = [e for e in everyone if e.id in vectors]
    position = {e.id: i for i, e in enumerate(indexed)}
    rows = [position[e.id] for e in fresh if e.id in position]
    queue = dict(c.history.update_queue(user_id))
    found_for: dict[str, list[tuple[str, float]]] = {}  # every entry's new candidates, merged once each below
    if rows:
        matrix = unit_rows([vectors[e.id] for e in indexed])
        stamps = np.array([e.time_stamp.timestamp() for e in indexed], dtype=np.float64)
        tie_rank = np.argsort(np.argsort(np.array([e.id for e in indexed]))).astype(np.int64)
        for row, found in zip(rows, neighbours(matrix, stamps, rows, tie_rank, top_k), strict=True):
            entry_id = indexed[row].id
            found_for.setdefault(entry_id, []).extend((indexed[j].id, s) for j, s in found.newer)
            for j, score in found.older:
                found_for.setdefault(indexed[j].id, []).append((entry_id, score))
    for entry_id, found_here in found_for.items():
        queue[entry_id] = _merge(queue.get(entry_id, []), found_here, keep_top_n)
    with c.history.transaction() as conn:
        for entry_id in sorted(found_for):
            c.history.put_update_candidates(conn, entry_id, user_id, queue[entry_id])
        c.history.set_counter(conn, user_id, WATERMARK, max(e.created_at.timestamp() for e in fresh))
    return len(fresh)


def _merge(existing: Candidates, found: list[tuple[str, float]], keep: int) -> Candidates:
    best: dict[str, float] = {str(c["id"]): float(c["score"]) for c in existing}  # type: ignore[arg-type]
    for entry_id, score in found:
        best[entry_id] = max(score, best.get(entry_id, score))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    return [{"id": i, "score": s} for i, s in ranked]


def pending_groups(c: Components, user_id: str, score_threshold: float) -> list[Group]:
    """The queued entries with a strictly newer candidate scoring at least ``score_threshold``, in queue
    order, read from the store in one go; queued entries no longer stored leave the queue."""
    queue = [(entry_id, [str(x["id"]) for x in cands if float(x["score"]) >= score_threshold])
             for entry_id, cands in c.history.update_queue(user_id)]
    wanted = {entry_id for entry_id, _ in queue} | {i for _, ids in queue for i in ids}
    stored = {e.id: e for e in c.store.get(sorted(wanted))}
    gone = [entry_id for entry_id, _ in queue if entry_id not in stored]
    if gone:
        with c.history.transaction() as conn:
            c.history.drop_from_update_queue(conn, gone)
    groups = []
    for entry_id, ids in queue:
        entry = stored.get(entry_id)
        if entry is None:
            continue
        candidates = [stored[i] for i in ids if i in stored and stored[i].time_stamp > entry.time_stamp]
        if candidates:
            groups.append(Group(entry, candidates))
    return groups


def apply_queue(c: Components, user_id: str, score_threshold: float, decider: UpdateDecider | None = None) -> dict[str, int]:
    """Decide and apply, for every queued entry of ``user_id`` with a candidate scoring at least ``score_threshold``."""
    return apply_queues(c, [user_id], score_threshold, decider)


def apply_queues(c: Components, user_ids: Sequence[str], score_threshold: float,
                 decider: UpdateDecider | None = None) -> dict[str, int]:
    """``apply_queue`` for several users at once, so that their calls share the decider's slots.

    ``decider`` defaults to the components' (the LLM's, when one is configured). An entry whose
    decision stays invalid after its repair is recorded as a failed batch and stays queued; the
    other entries of its call are applied.
    """
    decider = decider or c.decider
    if decider is None:
        log.info("no LLM configured: the offline update merges exact duplicates only")
        decider = ExactDuplicateDecider()
    counts = {"update": 0, "delete": 0, "ignore": 0, "failed": 0}
    groups: list[Group] = []

    def read() -> Iterator[Group]:  # user by user: the decider may start on a user before the next is read
        for user_id in user_ids:
            for group in pending_groups(c, user_id, score_threshold):
                groups.append(group)
                yield group

    absorbed: dict[str, str] = {}  # entry deleted in this run -> the entry that took over its sources
    for i, outcome in enumerate(decider.decide_all(read())):
        group = groups[i]
        if isinstance(outcome, Failure):
            c.history.record_failure(group.entry.user_id, "update",
                                     {"entry_id": group.entry.id, "candidate_ids": [e.id for e in group.candidates]},
                                     outcome.raw_reply, outcome.reason)
            counts["failed"] += 1
        elif _apply_now(c, group.entry, outcome, absorbed):
            counts[outcome.action] += 1
    for user_id in user_ids:  # graph_mem: merge duplicate nodes, retire contradicted edges (history kept)
        for key, n in consolidate(c.history, user_id).items():
            counts[key] = counts.get(key, 0) + n
    return counts


def _apply_now(c: Components, entry: MemoryEntry, decision: Decision, absorbed: dict[str, str]) -> bool:
    """Apply a decision made on the run's first reading to the entries as they are now: an earlier
    decision may have merged sources into them, or deleted the survivor (then its own survivor takes
    over). False when the entry itself is gone."""
    current = c.store.get([entry.id])
    if not current:
        with c.history.transaction() as conn:
            c.history.drop_from_update_queue(conn, [entry.id])
        return False
    survivor_id = decision.merge_into
    while survivor_id in absorbed:
        survivor_id = absorbed[survivor_id]
    survivor = c.store.get([survivor_id]) if survivor_id is not None else []
    apply_decision(c, current[0], survivor, replace(decision, merge_into=survivor[0].id if survivor else None))
    if decision.action == "delete" and survivor and entry.kind == survivor[0].kind == "fact":  # images stay as they are
        absorbed[entry.id] = survivor[0].id
    return True


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
