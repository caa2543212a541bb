"""One user's entries, one at a time: read one, delete one (with its change record), drop a user, read
an entry's changes. Every call names the user, and an entry of another user is ``NotFound``.

The store worker's desk runs these beside its index batches (the stores serialise their writes), and a
process that reaches a Qdrant server runs them itself.
"""

from __future__ import annotations

import uuid
from typing import Any

from lightmem_core.errors import NotFound
from lightmem_core.history import HistoryStore
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import MemoryStore
from lightmem_core.summaries import TopicSummaries


def get_entry(store: MemoryStore, user_id: str, entry_id: str) -> MemoryEntry:
    """The entry ``entry_id`` of ``user_id``."""
    found = store.get([entry_id]) if _is_uuid(entry_id) else []  # entry ids are UUIDs; a store refuses others
    if not found or found[0].user_id != user_id:
        raise NotFound(f"entry {entry_id!r}: no such entry of this user")
    return found[0]


def delete_entry(store: MemoryStore, history: HistoryStore, user_id: str, entry_id: str,
                 reason: str = "deleted by caller") -> MemoryEntry:
    """Delete one entry of ``user_id``, record the change and drop it from the update queue; the deleted entry."""
    entry = get_entry(store, user_id, entry_id)
    store.delete([entry.id])
    with history.transaction() as conn:
        history.record_change(conn, entry.id, user_id, "DELETE", entry.memory, None, reason)
        history.drop_from_update_queue(conn, [entry.id])
    return entry


def delete_user(store: MemoryStore, history: HistoryStore, user_id: str, summaries: TopicSummaries | None = None) -> int:
    """Remove every entry, topic summary, message, session and buffer of ``user_id`` (other users
    untouched); how many entries there were."""
    count = store.count(user_id)
    store.delete_user(user_id)
    if summaries is not None:
        summaries.delete_user(user_id)
    with history.transaction() as conn:
        history.delete_user(conn, user_id)
    return count


def entry_history(history: HistoryStore, user_id: str, entry_id: str) -> list[dict[str, Any]]:
    """Every change to ``entry_id`` (added, updated, deleted), oldest first; kept after a delete."""
    changes = [dict(row) for row in history.entry_history(entry_id) if row["user_id"] == user_id]
    if not changes:
        raise NotFound(f"entry {entry_id!r}: no recorded change of an entry of this user")
    return changes


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
