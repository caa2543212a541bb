"""What the update decides about an entry, and who decides: the protocol and the model-free decider."""

from __future__ import annotations

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


class UpdateDecider(Protocol):
    """Decides the fate of ``entry`` given newer, similar ``candidates``."""

    def decide(self, entry: MemoryEntry, candidates: list[MemoryEntry]) -> Decision: ...


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


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
