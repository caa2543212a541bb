"""Online update (``update="online"``): right after a batch is stored, settle it against its neighbours.

For each new entry, the stored entries of the same user that are strictly older and similar enough
become targets; each target is judged once against all the new entries that resemble it, and the
decision is applied at once (with its history). Strictly older only: entries with the same time
stamp never act on each other.
"""

from __future__ import annotations

import logging

from lightmem_core.components import Components
from lightmem_core.errors import ExtractionParseError
from lightmem_core.models import MemoryEntry
from lightmem_core.update.decision import UpdateDecider
from lightmem_core.update.offline import apply_decision

log = logging.getLogger(__name__)


def find_targets(c: Components, entries: list[MemoryEntry], score_threshold: float, top_k: int) -> dict[str, list[str]]:
    """Older entry id → ids of the new entries that resemble it at least ``score_threshold``."""
    if c.embedder is None or not entries:
        return {}
    vectors = c.store.dense_vectors([e.id for e in entries])
    targets: dict[str, list[str]] = {}
    for entry in entries:
        vec = vectors.get(entry.id)
        if vec is None:
            continue
        ts = entry.time_stamp.timestamp()
        for older, score in c.store.search(entry.user_id, "embedding", vec, None, top_k, {"time_stamp": {"lt": ts}}):
            if score >= score_threshold:
                targets.setdefault(older.id, []).append(entry.id)
    return targets


def online_update(c: Components, entries: list[MemoryEntry], decider: UpdateDecider,
                  score_threshold: float = 0.8, top_k: int = 5) -> dict[str, int]:
    """Decide and apply for every older entry that a new entry resembles; returns counts per action."""
    counts = {"update": 0, "delete": 0, "ignore": 0, "failed": 0}
    targets = find_targets(c, entries, score_threshold, top_k)
    if not targets:
        return counts
    found = {e.id: e for e in c.store.get(list(targets))}
    for target in sorted(found.values(), key=lambda e: (e.time_stamp, e.id)):
        current = c.store.get([target.id])
        if not current:  # deleted by an earlier decision of this batch
            continue
        candidates = [e for e in c.store.get(targets[target.id]) if e.time_stamp > target.time_stamp]
        if not candidates:
            continue
        try:
            decision = decider.decide(current[0], candidates)
        except ExtractionParseError as exc:
            c.history.record_failure(target.user_id, "update", {"entry_id": target.id, "candidate_ids": targets[target.id]},
                                     exc.raw_reply, str(exc))
            counts["failed"] += 1
            continue
        apply_decision(c, current[0], candidates, decision)
        counts[decision.action] += 1
    log.debug("online update: %s", counts)
    return counts
