"""Speaker names, and the names people give themselves, matched in queries (``speaker_match``).

When a batch is stored, the names its speakers go by are recorded for its user: the speaker's label,
the first word of a label of several words, and any name a speaker introduces themselves with ("my
name is Jo", "call me Jo"; the name must be written with a capital). A query that names exactly one
of the user's speakers is searched twice, as it is and among that speaker's entries only, and the two
rankings are fused by reciprocal rank, as the store fuses dense and BM25: a question about a person
mostly finds what that person said, and what others said about them still competes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from lightmem_core.history import HistoryStore
from lightmem_core.history.base import Connection
from lightmem_core.models import MemoryEntry, Message
from lightmem_core.stores.fusion import fuse

Hits = list[tuple[MemoryEntry, float]]
# "my name is Jo", "call me Jo Ann", "I go by Jo": a phrase in any case, then one or two capitalised words.
INTRODUCTION = re.compile(
    r"(?i:\b(?:my name is|my name's|call me|i go by|i'm called|i am called|people call me)\s+)"
    r"([A-Z][\w'’-]*\w(?: [A-Z][\w'’-]*\w)?)"
)


def normal(name: str) -> str:
    """A name as it is matched: lower case, accents dropped ("Zoë" and "zoe" match), spaces single."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii") or name
    return " ".join(plain.lower().split())


def names_in(message: Message) -> list[tuple[str, str]]:
    """``(name, speaker)`` pairs that ``message`` shows: its speaker's label (and the label's first word)
    and the names its speaker introduces themselves with. Without a speaker name, the role speaks."""
    who = message.speaker or message.role
    pairs: list[tuple[str, str]] = []
    if message.speaker and normal(message.speaker):
        pairs.append((normal(message.speaker), message.speaker))
        first = normal(message.speaker).split()[0]
        if first != normal(message.speaker) and len(first) > 1:
            pairs.append((first, message.speaker))
    pairs += [(normal(m.group(1)), who) for m in INTRODUCTION.finditer(message.content)]
    return [(name, speaker) for name, speaker in pairs if name]


def named_speakers(query: str, names: Iterable[tuple[str, str]]) -> set[str]:
    """The speakers whose names occur in ``query`` as whole words."""
    text = f" {' '.join(re.findall(r'[a-z0-9]+', normal(query)))} "
    return {speaker for name, speaker in names
            if f" {' '.join(re.findall(r'[a-z0-9]+', name))} " in text}


class SpeakerNames:
    """The names each user's speakers go by, kept in the history store (both drivers share it)."""

    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def record(self, conn: Connection, user_id: str, messages: list[Message]) -> None:
        """Record the names ``messages`` show (inside the store stage's transaction)."""
        pairs = list(dict.fromkeys(pair for m in messages for pair in names_in(m)))
        if pairs:
            self.history.add_speaker_names(conn, user_id, pairs)

    def named(self, user_id: str, query: str) -> str | None:
        """The one speaker of ``user_id`` that ``query`` names; ``None`` when it names none or several."""
        found = named_speakers(query, self.history.speaker_names(user_id))
        return found.pop() if len(found) == 1 else None

    def search(self, user_id: str, query: str, limit: int, filters: dict[str, Any] | None,
               run: Callable[[int, dict[str, Any] | None], Hits]) -> Hits:
        """``run(limit, filters)``, fused with the same search among the entries of the speaker that
        ``query`` names, when it names exactly one (and the caller filters by no speaker)."""
        who = None if filters and "speaker" in filters else self.named(user_id, query)
        if who is None:
            return run(limit, filters)
        depth = max(2 * limit, 20)  # as deep as the store's own prefetch, so the fusion has candidates
        return fuse([run(depth, filters), run(depth, {**(filters or {}), "speaker": who})], limit)
