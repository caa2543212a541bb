"""What a verbatim entry is indexed by, beside what it returns.

A verbatim entry returns the compressed message (few tokens for the answering model), but
compression drops words a question may ask about, and a short reply ("Yes, last Sunday!") names
nothing of what it answers. So the vectors are made from other texts than the returned one:

- ``match_text`` (BM25): the original message, every word of it, with the speaker's name;
- ``embed_text`` (dense): the message with up to ``context_turns`` previous turns of its topic
  segment before it, compressed (the context only needs its content words), so the vector says what
  the turn is about.

Both are built from the segment alone, so an entry's vectors are the same whichever driver or worker
makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightmem_core.models import Message


@dataclass(frozen=True)
class IndexTexts:
    """How verbatim entries are indexed: from the original text, with how many turns of context."""

    original: bool = False
    context_turns: int = 0

    @property
    def active(self) -> bool:
        return self.original or self.context_turns > 0


def labelled(message: Message, text: str) -> str:
    """``text`` said by ``message``'s speaker, as entries show it."""
    text = text.strip()
    return f"{message.speaker}: {text}" if message.speaker else text


def match_text(message: Message, how: IndexTexts) -> str | None:
    """BM25's text: the original message when ``how.original`` (``None``: the entry's own text)."""
    return labelled(message, message.content) if how.original else None


def embed_text(turns: list[Message], index: int, how: IndexTexts) -> str | None:
    """The dense vector's text for ``turns[index]``: its previous ``how.context_turns`` turns of the same
    segment (compressed), then the message itself (original when ``how.original``); ``None``: the entry's
    own text."""
    if not how.active:
        return None
    message = turns[index]
    own = labelled(message, message.content if how.original else message.text)
    context = [labelled(m, m.text) for m in turns[max(0, index - how.context_turns):index] if m.text.strip()]
    return "\n".join([*context, own])
