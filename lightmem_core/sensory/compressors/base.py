"""The compressor role: shorten many message texts at once, keeping the words that matter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CompressionResult:
    """One message's compressed text and its token counts before and after."""

    text: str
    tokens_before: int
    tokens_after: int


class Compressor(Protocol):
    """Compresses a batch of texts; output i belongs to input i.

    ``groups`` gives one key per text (user and session): a compressor that reads texts in a
    shared context never mixes texts of different groups. Compressors that score each text alone
    ignore it.
    """

    def compress(self, texts: list[str], groups: list[str] | None = None) -> list[CompressionResult]: ...
