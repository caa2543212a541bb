"""What the update decides about an entry, and who decides: the protocol and the model-free decider."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lightmem_core.models import MemoryEntry


@dataclass(frozen=True)
class Decision:
    """What to do with a queued entry: keep it, rewrite it, or delete it (optionally into a survivor)."""

    action: Literal["update", "delete", "ignore"]
    new_text: str | None = None
    reason: str = ""
    merge_into: str | None = None


@dataclass(frozen=True)
class Group:
    """One queued entry and its newer, similar candidates: what one decision is about."""

    entry: MemoryEntry
    candidates: list[MemoryEntry]


@dataclass(frozen=True)
class Failure:
    """No usable decision for one entry (the reply stayed invalid for it); it stays queued."""

    reason: str
    raw_reply: str | None = None


Outcome = Decision | Failure


class UpdateDecider(Protocol):
    """Decides the fate of entries given newer, similar candidates."""

    def decide(self, entry: MemoryEntry, candidates: list[MemoryEntry]) -> Decision:
        """One entry (the online update). Raises ``ExtractionParseError`` when no valid decision comes."""
        ...

    def decide_all(self, groups: Iterable[Group]) -> Iterator[Outcome]:
        """One outcome per group, yielded in the groups' order (however the work is spread out), so that
        the caller can apply each as soon as it comes. Raises ``TransientError`` when the endpoint
        keeps failing; outcomes yielded before stay valid."""
        ...


@dataclass
class ExactDuplicateDecider:
    """The model-free decider: an entry whose text a newer entry repeats exactly is merged into it."""

    merged: int = field(default=0)

    def decide(self, entry: MemoryEntry, candidates: list[MemoryEntry]) -> Decision:
        norm = _normal(entry.memory)
        for cand in candidates:
            if _normal(cand.memory) == norm:
                return Decision("delete", reason="exact duplicate of a newer entry", merge_into=cand.id)
        return Decision("ignore", reason="no exact duplicate")

    def decide_all(self, groups: Iterable[Group]) -> Iterator[Outcome]:
        for group in groups:
            yield self.decide(group.entry, group.candidates)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
