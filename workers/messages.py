"""Queue messages: versioned Pydantic models, sent as JSON, validated at every task boundary.

A payload that does not decode raises ``PayloadError``, which keeps the raw payload so the failure
record shows exactly what arrived. ``v`` is the schema version; a worker refuses versions it does not know.
Each payload class names the one task it is for (``TASK``), so hand-off is ``send(app, payload)``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, TypeVar

from celery import Celery
from celery.result import AsyncResult
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightmem_core.errors import InvalidInput, LightMemError
from lightmem_core.models import MemoryEntry, Message
from lightmem_core.state import Batch
from workers import names


class PayloadError(LightMemError):
    """Raised when a task payload is not valid JSON of the expected model and version; keeps the raw payload."""

    def __init__(self, message: str, raw: Any) -> None:
        super().__init__(message)
        self.raw = raw

    def __reduce__(self) -> tuple[type[PayloadError], tuple[str, Any]]:
        # Celery pickles a failed task's exception; the copy keeps the raw payload for the failure record.
        return type(self), (str(self), self.raw)


class Payload(BaseModel):
    """A task's argument; ``TASK`` is the task it is sent to."""

    model_config = ConfigDict(extra="forbid")
    TASK: ClassVar[str]

    v: Literal[1] = 1  # names.PAYLOAD_VERSION

    def summary(self) -> str:
        """What Flower and the task events show instead of the arguments: no user text."""
        return f"{type(self).__name__}(v={self.v})"


class SessionItem(BaseModel):
    """One validated session (or batch of turns) of one user, as the producer queued it."""

    model_config = ConfigDict(extra="forbid")

    tracking_id: str
    user_id: str
    session_id: str
    messages: list[Message]
    skipped_empty: int = 0


class CompressPayload(Payload):
    """Queue ``compress``: sessions of any users, compressed together in few batched passes."""

    TASK = names.COMPRESS_SESSIONS

    sessions: list[SessionItem] = Field(min_length=1)

    def summary(self) -> str:
        users = sorted({s.user_id for s in self.sessions})
        turns = sum(len(s.messages) for s in self.sessions)
        return f"CompressPayload({len(self.sessions)} sessions, {turns} turns, users={users[:5]})"


class UserPayload(Payload):
    """A payload that concerns one user."""

    user_id: str = Field(min_length=1)

    def summary(self) -> str:
        return f"{type(self).__name__}(user_id={self.user_id!r})"


class DrainPayload(UserPayload):
    """Queue ``extract``: move a user's buffered topic segments through extraction."""

    TASK = names.EXTRACT_DRAIN

    force: bool = False


class RetryPayload(UserPayload):
    """Queue ``extract``: take the user's failed batches back into flight and extract them again."""

    TASK = names.EXTRACT_RETRY


class StorePayload(UserPayload):
    """Queue ``store`` (embedded Qdrant) or done in place (Qdrant server): index a batch's entries."""

    TASK = names.STORE_INDEX

    batch: Batch
    entries: list[MemoryEntry]

    def summary(self) -> str:
        return f"StorePayload(user_id={self.user_id!r}, batch={self.batch.batch_id}, {len(self.entries)} entries)"


class UpdatePayload(UserPayload):
    """Queue ``update`` (or ``store`` when embedded): the offline update of one user up to ``watermark``."""

    TASK = names.UPDATE_USER

    watermark: float


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], raw: Any) -> M:
    """Validate ``raw`` (a dict or JSON text) as ``model``; ``PayloadError`` keeps ``raw`` on failure."""
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return model.model_validate(data)
    except (ValidationError, ValueError) as exc:
        # ``from None``: the validation error's own text quotes the input (user text) into the log's traceback
        raise PayloadError(f"{model.__name__}: {exc}".splitlines()[0] + f" ({_first_error(exc)})", raw) from None


def encode(payload: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict that travels through the broker."""
    return payload.model_dump(mode="json")


class PayloadTooLarge(InvalidInput):
    """Raised when a payload's JSON is over ``max_payload_bytes``: nothing is sent."""


def checked(app: Celery, payload: Payload) -> dict[str, Any]:
    """``payload`` encoded, once it is known to fit in ``max_payload_bytes`` (the app's setting)."""
    data = encode(payload)
    limit = int(app.conf.get("lightmem_max_payload_bytes") or 0)
    if limit and (size := len(json.dumps(data).encode("utf-8"))) > limit:
        raise PayloadTooLarge(f"{type(payload).__name__}: {size:,} bytes of JSON, over the limit of {limit:,} "
                              "(LIGHTMEM_MAX_PAYLOAD_BYTES); send fewer or shorter sessions at a time")
    return data


def send(app: Celery, payload: Payload, **options: Any) -> AsyncResult:
    """Hand ``payload`` to its task; the app's router picks the queue from the task name. Task events
    (Flower) and logs show the payload's summary, never its text. Over ``max_payload_bytes``:
    ``PayloadTooLarge``, and nothing is sent."""
    return app.send_task(payload.TASK, args=[checked(app, payload)], argsrepr=payload.summary(), kwargsrepr="{}",
                         **options)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
