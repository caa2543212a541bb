"""Word selection shared by every compressor: keep the best-scored ``rate`` share of words, in order.

A compressor scores words (keep probability, surprisal, rarity); this module picks which words stay
and renders them back into text from their character spans, so the output is made of the input's own
characters, whatever tokenizer produced the spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lightmem_core.errors import ConfigError


@dataclass(frozen=True)
class Word:
    """One word of a text: its character span ``[start, end)`` and its score (higher = keep first)."""

    start: int
    end: int
    score: float


def check_rate(rate: float) -> float:
    """Return ``rate`` if it lies in (0, 1]; raise ``ConfigError`` otherwise."""
    if not isinstance(rate, int | float) or math.isnan(rate) or not 0.0 < rate <= 1.0:
        raise ConfigError(f"rate must be in (0, 1], got {rate!r}")
    return float(rate)


def is_forced(surface: str, force_tokens: Sequence[str]) -> bool:
    """A word is forced when its text is one of ``force_tokens`` (punctuation, by default)."""
    return surface in force_tokens


def select(words: Sequence[Word], text: str, rate: float, force_tokens: Sequence[str]) -> list[bool]:
    """Which words to keep: every forced word, then the highest scores until ``rate`` of all words.

    Ties go to the earlier word, so the choice is deterministic. At least one word is kept when
    there is any.
    """
    n = len(words)
    if n == 0:
        return []
    keep = [is_forced(text[w.start : w.end], force_tokens) for w in words]
    budget = max(1, round(rate * n)) - sum(keep)
    if budget > 0:
        ranked = sorted((i for i in range(n) if not keep[i]), key=lambda i: (-_finite(words[i].score), i))
        for i in ranked[:budget]:
            keep[i] = True
    return keep


def render(text: str, words: Sequence[Word], keep: Sequence[bool]) -> str:
    """The kept words in their original order, joined as in the original text.

    Two kept words are joined by the newlines that lie between them in the original, else by a
    space when anything else (whitespace, dropped words) does, and directly when they were adjacent (``word,``).
    """
    parts: list[str] = []
    prev_end: int | None = None
    for word, kept in zip(words, keep, strict=True):
        if not kept:
            continue
        if prev_end is not None:
            gap = text[prev_end : word.start]
            if "\n" in gap:
                parts.append("\n" * gap.count("\n"))
            elif gap:
                parts.append(" ")
        parts.append(text[word.start : word.end])
        prev_end = word.end
    return "".join(parts)


def compress_words(text: str, words: Sequence[Word], rate: float, force_tokens: Sequence[str]) -> str:
    """``select`` then ``render``; a text without words comes back unchanged."""
    if not words:
        return text
    return render(text, words, select(words, text, rate, force_tokens))


def _finite(score: float) -> float:
    return score if math.isfinite(score) else -math.inf
