"""Queue messages: versioned Pydantic models, sent as JSON, validated at every task boundary.

A payload that does not decode raises ``PayloadError``, which keeps the raw payload so the failure
record shows exactly what arrived. ``v`` is the schema version; a worker refuses versions it does not know.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightmem_core.errors import LightMemError
from lightmem_core.models import MemoryEntry, Message, TopicSegment

VERSION = 1


class PayloadError(LightMemError):
    """Raised when a task payload is not valid JSON of the expected model and version; keeps the raw payload."""

    def __init__(self, message: str, raw: Any) -> None:
        super().__init__(message)
        self.raw = raw


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1  # VERSION


class SessionItem(BaseModel):
    """One validated session (or batch of turns) of one user, as the producer queued it."""

    model_config = ConfigDict(extra="forbid")

    tracking_id: str
    user_id: str
    session_id: str
    messages: list[Message]
    skipped_empty: int = 0


class CompressPayload(_Payload):
    """Queue ``compress``: sessions of any users, compressed together in few batched passes."""

    sessions: list[SessionItem] = Field(min_length=1)


class DrainPayload(_Payload):
    """Queue ``extract``: move a user's buffered topic segments through extraction."""

    user_id: str
    force: bool = False


class StorePayload(_Payload):
    """Queue ``store`` (embedded Qdrant) or done in place (Qdrant server): index a batch's entries."""

    user_id: str
    batch_id: str
    entries: list[MemoryEntry]
    segments: list[TopicSegment]
    tracking: dict[str, str] = Field(default_factory=dict)  # segment key -> tracking id


class SearchPayload(_Payload):
    user_id: str
    query: str = Field(min_length=1)
    limit: int = Field(10, ge=1, le=1000)


class UpdatePayload(_Payload):
    """Queue ``update`` (or ``store`` when embedded): the offline update of one user up to ``watermark``."""

    user_id: str
    watermark: float


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], raw: Any) -> M:
    """Validate ``raw`` (a dict or JSON text) as ``model``; ``PayloadError`` keeps ``raw`` on failure."""
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return model.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise PayloadError(f"{model.__name__}: {exc}".splitlines()[0] + f" ({_first_error(exc)})", raw) from exc


def encode(payload: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict that travels through the broker."""
    return payload.model_dump(mode="json")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
