"""What happens to a batch of buffered topic segments after extraction: stored, or kept as failed.

A buffer is cleared only in the transaction that records its stored entries. A batch whose reply
stayed invalid after its repair moves to the ``FAILED_EXTRACTION`` buffer and gets a row in
``failed_batches`` with the raw reply and the reason, so new input is not blocked behind it and
``retry_failed`` can extract it again later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from lightmem_core.errors import ExtractionParseError
from lightmem_core.history import GLOBAL_SCOPE
from lightmem_core.models import MemoryEntry, TopicSegment
from lightmem_core.stages import index_entries

if TYPE_CHECKING:
    from lightmem_core.factory import Components

log = logging.getLogger(__name__)
FAILED_EXTRACTION = "short_term_failed"
Buffered = list[tuple[str, TopicSegment]]


def store_extracted(c: Components, user_id: str, kind: str, buffered: Buffered, entries: list[MemoryEntry]) -> None:
    """Embed and upsert ``entries``, then, in one transaction, record them and clear their buffer items."""
    index_entries(entries, c.store, c.embedder, c.bm25)
    with c.history.transaction() as conn:
        for e in entries:
            c.history.record_change(conn, e.id, user_id, "ADD", None, e.memory, "extracted")
        c.history.buffer_remove(conn, user_id, kind, [k for k, _ in buffered])
        c.history.set_message_state(conn, [m.id for _, s in buffered for m in s.messages], "extracted")
        for scope in (user_id, GLOBAL_SCOPE):
            c.history.add_to_counter(conn, scope, "entries_stored", len(entries))
            c.history.add_to_counter(conn, scope, "tokens_stored", sum(c.count_tokens(e.memory) for e in entries))


def park_failed(c: Components, user_id: str, kind: str, buffered: Buffered, exc: ExtractionParseError) -> None:
    """Move a batch from buffer ``kind`` to the failed buffer and record the failure with the raw reply."""
    log.warning("extraction for user %s failed: %s; batch kept for retry_failed()", user_id, exc)
    keys = [k for k, _ in buffered]
    payload = {"buffer": FAILED_EXTRACTION, "segment_keys": keys,
               "message_ids": [m.id for _, s in buffered for m in s.messages]}
    with c.history.transaction() as conn:
        for key, seg in buffered:
            c.history.buffer_put(conn, user_id, FAILED_EXTRACTION, key, seg.model_dump(mode="json"))
        if kind != FAILED_EXTRACTION:
            c.history.buffer_remove(conn, user_id, kind, keys)
        c.history.record_failure(user_id, "extraction", payload, exc.raw_reply, str(exc))


def retry_failed(c: Components, user_id: str,
                 on_stored: Callable[[list[MemoryEntry]], None] | None = None) -> dict[str, int]:
    """Extract every open failed batch of ``user_id`` again; a batch that fails again is recorded anew.

    ``TransientError`` propagates: the batch stays as it was, for a later try.
    """
    done = {"retried": 0, "still_failed": 0, "entries_stored": 0}
    parked = dict(c.history.buffer_items(user_id, FAILED_EXTRACTION))
    for failure in c.history.failures(user_id):
        if failure["purpose"] != "extraction":
            continue
        keys = [k for k in json.loads(failure["payload"]).get("segment_keys", []) if k in parked]
        batch = [(k, TopicSegment.model_validate(parked[k])) for k in keys]
        done["retried"] += 1
        try:
            entries = c.extractor.extract([seg for _, seg in batch]) if batch else []
        except ExtractionParseError as exc:
            with c.history.transaction() as conn:
                c.history.resolve_failure(conn, failure["id"])
            park_failed(c, user_id, FAILED_EXTRACTION, batch, exc)
            done["still_failed"] += 1
            continue
        store_extracted(c, user_id, FAILED_EXTRACTION, batch, entries)
        with c.history.transaction() as conn:
            c.history.resolve_failure(conn, failure["id"])
        done["entries_stored"] += len(entries)
        if on_stored is not None and entries:
            on_stored(entries)
    return done
