"""The sensory buffer: messages wait here until enough of them exist to cut topic segments.

``feed`` is a pure function over the buffered messages of one user and the new ones, so that the
in-process ``LightMemory`` (which persists the buffer in the history store) and the workers (which
keep it in Redis) share it. Rules:

- Only messages of the used roles count towards ``capacity_tokens``; no user/assistant alternation
  is assumed (turns are built by the segmenter from the roles actually present).
- A segment never crosses a session boundary: a message of another session first flushes the buffer.
- When a message would overflow the buffer, the buffer is cut at the segmenter's boundaries; every
  segment but the last is emitted and the last stays (it may continue). Without any boundary the
  whole buffer is emitted, so the buffer never grows past its capacity.
- ``force`` emits the tail too, after (not instead of) the segments cut earlier in the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from lightmem_core.models import Message
from lightmem_core.sensory.segmenters.base import Segmenter

SENSORY = "sensory"


@dataclass
class SensoryResult:
    """Segments ready for the short-term buffer (in order) and what stays buffered."""

    segments: list[list[Message]] = field(default_factory=list)
    remaining: list[Message] = field(default_factory=list)


def message_cost(message: Message, roles: AbstractSet[str], count: Callable[[str], int]) -> int:
    """Tokens a message takes in the buffer: its (compressed) text, for the used roles only."""
    if message.role not in roles:
        return 0
    return message.tokens_compressed if message.tokens_compressed is not None else count(message.text)


def cut(messages: list[Message], segmenter: Segmenter | None, final: bool) -> tuple[list[list[Message]], list[Message]]:
    """Split at the segmenter's boundaries; keep the last part unless ``final`` or it is the only one."""
    if not messages:
        return [], []
    found = segmenter.boundaries(messages) if segmenter is not None and len(messages) > 1 else []
    edges = [0, *sorted({b for b in found if 0 < b < len(messages)}), len(messages)]
    parts = [messages[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    if final or len(parts) == 1:
        return parts, []
    return parts[:-1], parts[-1]


def feed(
    buffered: Sequence[Message],
    incoming: Sequence[Message],
    segmenter: Segmenter | None,
    capacity_tokens: int,
    roles: AbstractSet[str],
    count: Callable[[str], int],
    force: bool = False,
) -> SensoryResult:
    """Add ``incoming`` (in time order) to one user's ``buffered`` messages and cut what is ready."""
    result = SensoryResult()
    buffer = list(buffered)
    used = sum(message_cost(m, roles, count) for m in buffer)
    for m in incoming:
        if buffer and m.session_id != buffer[-1].session_id:
            parts, buffer = cut(buffer, segmenter, final=True)
            result.segments.extend(parts)
            used = 0
        cost = message_cost(m, roles, count)
        if buffer and cost and used + cost > capacity_tokens:
            parts, buffer = cut(buffer, segmenter, final=False)
            result.segments.extend(parts)
            used = sum(message_cost(x, roles, count) for x in buffer)
        buffer.append(m)
        used += cost
    if force:
        parts, buffer = cut(buffer, segmenter, final=True)
        result.segments.extend(parts)
    result.remaining = buffer
    return result


def split_sessions(messages: list[Message]) -> list[list[Message]]:
    """Group messages by session, each group in (time, turn) order, groups by their first message."""
    groups: dict[str, list[Message]] = {}
    for m in messages:
        groups.setdefault(m.session_id, []).append(m)
    ordered = [sorted(g, key=lambda m: m.order_key) for g in groups.values()]
    return sorted(ordered, key=lambda g: g[0].order_key)


def cut_topics(session_messages: list[Message], segmenter: Segmenter | None) -> list[list[Message]]:
    """Cut one session's messages at the segmenter's boundaries (one segment without a segmenter)."""
    if segmenter is None or len(session_messages) < 2:
        return [session_messages] if session_messages else []
    cuts = [b for b in segmenter.boundaries(session_messages) if 0 < b < len(session_messages)]
    edges = [0, *sorted(set(cuts)), len(session_messages)]
    return [session_messages[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]
