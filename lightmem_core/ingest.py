"""Validation of incoming messages: all or nothing, with errors that name the item and the field.

LightMem's message dicts are accepted as they are: ``role``, ``content``, ``time_stamp`` (also
``timestamp``), and optionally ``speaker_name`` (also ``speaker``), ``id`` (also ``message_id``),
``session_id``. Naive time stamps are read as UTC. ``content`` may also be a list of OpenAI-style
content parts with images, and LoCoMo's ``img_url``/``blip_caption`` give a shared photo
(``lightmem_core/images.py``); a message with images and no text is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightmem_core.errors import InvalidInput
from lightmem_core.images import message_images
from lightmem_core.models import ROLES, Message, message_id_for, utc_now
from lightmem_core.timeparse import parse_time

_KNOWN_KEYS = {"role", "content", "time_stamp", "timestamp", "speaker_name", "speaker", "speaker_id", "id",
               "message_id", "session_id", "name", "has_answer", "blip_caption", "img_url", "query"}


@dataclass
class NormalizedBatch:
    """Valid messages in input order, plus what was skipped (empty content) and why."""

    messages: list[Message] = field(default_factory=list)
    skipped_empty: list[str] = field(default_factory=list)


def normalize_messages(
    items: object,
    user_id: str,
    session_id: str | None,
    next_turn_index: Callable[[str], int],
    now: datetime | None = None,
) -> NormalizedBatch:
    """Validate raw message dicts into ``Message`` objects; raise ``InvalidInput`` before anything is kept.

    ``next_turn_index(session_id)`` gives the first free turn index of a session, so messages that
    arrive without an id get a stable one from their place in the session.
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInput(f"user_id: expected a non-empty string, got {user_id!r}")
    if isinstance(items, Mapping):
        items = [items]
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidInput(f"messages: expected a list of message dicts, got {type(items).__name__}")
    batch = NormalizedBatch()
    offsets: dict[str, int] = {}
    fallback_time = now or utc_now()
    for index, raw in enumerate(items):
        fields = _check_item(index, raw)
        sid = str(fields.get("session_id") or session_id or _session_from_time(fields, fallback_time))
        if sid not in offsets:
            offsets[sid] = next_turn_index(sid)
        turn_index = offsets[sid]
        offsets[sid] += 1
        content, images = fields["content"], fields["images"]
        mid = str(fields.get("id") or fields.get("message_id") or message_id_for(user_id, sid, turn_index))
        if not content.strip() and not images:
            batch.skipped_empty.append(mid)
            continue
        batch.messages.append(
            Message(
                id=mid, user_id=user_id, session_id=sid, turn_index=turn_index, role=fields["role"], content=content,
                time_stamp=_time_of(index, fields, fallback_time), speaker=_speaker(fields), images=images,
            )
        )
    return batch


def _check_item(index: int, raw: object) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: expected a dict with 'role' and 'content', got {type(raw).__name__}")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}")
    if "role" not in raw:
        raise InvalidInput(f"{where}.role: missing")
    if raw["role"] not in ROLES:
        raise InvalidInput(f"{where}.role: unknown role {raw['role']!r}; expected one of {list(ROLES)}")
    if "content" not in raw:
        raise InvalidInput(f"{where}.content: missing")
    text, images = message_images(where, raw)
    stamp = raw.get("time_stamp", raw.get("timestamp"))
    if stamp is not None:
        try:
            parse_time(stamp)
        except ValueError as exc:
            raise InvalidInput(f"{where}.time_stamp: {exc}") from exc
    return {**raw, "content": text, "images": images}


def _time_of(index: int, fields: dict[str, Any], fallback: datetime) -> datetime:
    stamp = fields.get("time_stamp", fields.get("timestamp"))
    return parse_time(stamp) if stamp is not None else fallback


def _session_from_time(fields: dict[str, Any], fallback: datetime) -> str:
    """Without a session id, LightMem's convention holds: one session per session time stamp."""
    stamp = fields.get("time_stamp", fields.get("timestamp"))
    moment = parse_time(stamp) if stamp is not None else fallback
    return f"s-{moment.isoformat()}"


def _speaker(fields: dict[str, Any]) -> str | None:
    value = fields.get("speaker_name") or fields.get("speaker") or fields.get("name")
    return str(value) if value else None
