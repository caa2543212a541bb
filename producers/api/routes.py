"""``/v1``: the producer SDK's contract over HTTP. Each route is a few lines over ``MemoryProducer``.

The user a request is about is the ``user_id`` query parameter (any id works, ``/`` included), checked
against the key's scope by ``scoped_user`` before the route runs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from lightmem_core.errors import NotFound
from producers.api import schemas as s
from producers.api.auth import Caller, Operator, ScopedUser, caller_scope
from producers.api.errors import ERROR_RESPONSES
from producers.sdk import MemoryProducer

router = APIRouter(prefix="/v1", dependencies=[Depends(caller_scope)], responses=ERROR_RESPONSES)
EntryId = Annotated[str, Path(min_length=1, max_length=100, description="an entry id (a UUID)")]
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {"model": s.ErrorBody, "description": "Over LIGHTMEM_MAX_PAYLOAD_BYTES"}}


def _producer(request: Request) -> MemoryProducer:
    producer: MemoryProducer = request.app.state.producer
    return producer


Producer = Annotated[MemoryProducer, Depends(_producer)]


def _turns(turns: list[s.Turn]) -> list[dict[str, Any]]:
    return [t.model_dump(exclude_none=True) for t in turns]


@router.post("/sessions", status_code=202, response_model=s.Enqueued, responses=TOO_LARGE, tags=["enqueue"])
def enqueue_session(body: s.SessionIn, user_id: ScopedUser, producer: Producer) -> s.Enqueued:
    """Queue a whole session; it is durable in Redis when this answers."""
    session = {"turns": _turns(body.turns), "session_id": body.session_id, "time_stamp": body.time_stamp}
    tracking_id = producer.enqueue_session(user_id, {k: v for k, v in session.items() if v is not None})
    if body.flush:
        producer.flush(user_id)
    return s.Enqueued(tracking_id=tracking_id, user_id=user_id)


@router.post("/turns", status_code=202, response_model=s.Enqueued, responses=TOO_LARGE, tags=["enqueue"])
def enqueue_turns(body: s.TurnsIn, user_id: ScopedUser, producer: Producer) -> s.Enqueued:
    """Queue turns that continue a session."""
    tracking_id = producer.enqueue_turns(user_id, body.session_id, _turns(body.turns))
    if body.flush:
        producer.flush(user_id)
    return s.Enqueued(tracking_id=tracking_id, user_id=user_id)


@router.post("/flush", status_code=202, response_model=s.Accepted, tags=["enqueue"])
def flush(user_id: ScopedUser, producer: Producer) -> s.Accepted:
    """Extract what the user's buffers hold once the user's queued input is buffered."""
    producer.flush(user_id)
    return s.Accepted(user_id=user_id)


@router.get("/status/{tracking_id}", response_model=s.TrackingStatus, tags=["status"])
def tracking_status(tracking_id: Annotated[str, Path(min_length=1, max_length=100)], scope: Caller,
                    producer: Producer) -> s.TrackingStatus:
    """One enqueued item: queued → buffered → indexed, or failed with the reason. Another tenant's is 404."""
    found = producer.status(tracking_id)
    if found.get("state", "unknown") == "unknown" or not scope.allows(str(found.get("user_id", ""))):
        raise NotFound(f"tracking id {tracking_id!r}: unknown (or expired after 7 days)")
    return s.TrackingStatus.model_validate({**{k: v or None for k, v in found.items()}, "tracking_id": tracking_id})


@router.get("/users/status", response_model=s.UserStatus, tags=["status"])
def user_status(user_id: ScopedUser, producer: Producer) -> dict[str, Any]:
    """One user's pipeline: queued items, buffered turns, batches in flight, failed batches and why."""
    return producer.user_status(user_id)


@router.post("/search", response_model=s.SearchOut, tags=["memories"])
def search(body: s.SearchIn, user_id: ScopedUser, producer: Producer) -> s.SearchOut:
    """The user's memories nearest to ``query``, by any strategy, with filters."""
    hits = producer.search(user_id, body.query, limit=body.limit, filters=body.filters, strategy=body.strategy,
                           graph_hops=body.graph_hops)
    return s.SearchOut(user_id=user_id, results=[s.Hit.model_validate(h) for h in hits])


@router.get("/memories", response_model=s.Entries, tags=["memories"])
def list_memories(user_id: ScopedUser, producer: Producer) -> s.Entries:
    """Every entry of the user, oldest first."""
    return s.Entries(user_id=user_id, entries=[s.Entry.model_validate(e) for e in producer.entries(user_id)])


@router.get("/memories/{entry_id}", response_model=s.Entry, tags=["memories"])
def get_memory(entry_id: EntryId, user_id: ScopedUser, producer: Producer) -> s.Entry:
    return s.Entry.model_validate(producer.get_entry(user_id, entry_id))


@router.delete("/memories/{entry_id}", response_model=s.Deleted, tags=["memories"])
def delete_memory(entry_id: EntryId, user_id: ScopedUser, producer: Producer) -> s.Deleted:
    """Delete one entry; its history records the deletion."""
    producer.delete_entry(user_id, entry_id)
    return s.Deleted(user_id=user_id, entry_id=entry_id)


@router.get("/memories/{entry_id}/history", response_model=s.History, tags=["memories"])
def memory_history(entry_id: EntryId, user_id: ScopedUser, producer: Producer) -> s.History:
    """Every change of one entry (added, updated, deleted), oldest first."""
    changes = [s.Change.model_validate(c) for c in producer.entry_history(user_id, entry_id)]
    return s.History(entry_id=entry_id, changes=changes)


@router.delete("/users", response_model=s.UserDeleted, tags=["memories"])
def delete_user(user_id: ScopedUser, producer: Producer) -> dict[str, Any]:
    """Forget a user: buffers, entries, messages and sessions. Input still in flight may land afterwards."""
    return {"user_id": user_id, **producer.delete_user(user_id)}


@router.post("/update", status_code=202, response_model=s.Accepted, tags=["memories"])
def update(user_id: ScopedUser, producer: Producer) -> s.Accepted:
    """Queue the user's offline update now (consolidate entries), as the nightly schedule does."""
    producer.update_user(user_id)
    return s.Accepted(user_id=user_id)


@router.get("/stats", response_model=s.Stats, tags=["operator"])
def stats(_: Operator, producer: Producer) -> s.Stats:
    """``lightmem stats`` across every user: needs a key whose scope is every user."""
    from producers.commands.distributed import _llm_totals, stats_table

    return s.Stats(stats=dict(stats_table(producer.state.stats(), _llm_totals())))


@router.get("/status", response_model=dict[str, Any], tags=["operator"])
def overview(_: Operator, producer: Producer) -> dict[str, Any]:
    """``lightmem status --json``: backlog per queue, buffered turns, failures (every user)."""
    return producer.status()
