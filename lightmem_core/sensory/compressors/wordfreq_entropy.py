"""Model-free entropy compression: a word's information is its surprisal under ``wordfreq``.

``-log2 p(word)`` from wordfreq's frequency lists (offline, shipped in the package) stands in for a
language model's surprisal: rare words carry more information and are kept first. Cheap enough for
the embedded default: no model, no GPU, thousands of messages per second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

from lightmem_core.config import DEFAULT_FORCE_TOKENS
from lightmem_core.errors import ModelLoadError
from lightmem_core.sensory.compressors.base import CompressionResult
from lightmem_core.sensory.compressors.selection import Word, check_rate, compress_words
from lightmem_core.tokens import count_tokens

# Words (letters, digits, inner apostrophes and hyphens) or single other visible characters (punctuation,
# emoji). A hyphenated compound is one word, kept or dropped whole: split, "quokka-marmalade-7731" lost
# its middle and was stored as "quokka- -7731".
_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]", re.UNICODE)
# Words wordfreq has never seen: rarer than its rarest listed word (about 1e-8).
_UNSEEN_P = 1e-9
# Negations are frequent, so surprisal alone drops them, and "please never suggest satay" became
# "suggest satay": a stored fact with its meaning reversed. They are ranked above every other word.
NEGATIONS = frozenset("no not never nor none nobody nothing nowhere neither cannot without".split())
_ALWAYS = 1e6
# Names, numbers and dates are what questions ask about (who, how many, when), and wordfreq rates many
# of them as common ("May", "Sunday", "3", "Mel"). With ``protect``, a word with a digit, or written with
# a capital where no sentence starts, ranks just below the negations.
_PROTECTED = 1e5
_SENTENCE_END = ".!?:;\n\"'“‘(["


class WordfreqEntropyCompressor:
    """Keeps the ``rate`` share of words with the highest surprisal under wordfreq's frequencies."""

    def __init__(
        self,
        rate: float = 0.6,
        language: str = "en",
        force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
        protect: bool = False,
    ) -> None:
        self.rate = check_rate(rate)
        self.protect = protect
        self.language = language
        self.force_tokens = tuple(force_tokens)
        try:
            import wordfreq
        except ImportError as exc:  # pragma: no cover - a dependency of the distribution
            raise ModelLoadError("entropy_compress with model_name 'wordfreq' needs the 'wordfreq' package") from exc
        if language not in wordfreq.available_languages():
            raise ModelLoadError(f"wordfreq has no word list for language {language!r}")
        self._surprisal = lru_cache(maxsize=200_000)(self._lookup)

    def _lookup(self, word: str) -> float:
        import wordfreq

        if word in NEGATIONS or word.endswith(("n't", "n’t")):
            return _ALWAYS
        p = wordfreq.word_frequency(word, self.language)
        return -math.log2(p if p > 0 else _UNSEEN_P)

    def words(self, text: str) -> list[Word]:
        """The text's words with their surprisal in bits."""
        words = []
        for m in _WORD.finditer(text):
            score = self._surprisal(m.group().lower())
            if self.protect and is_protected(text, m.start(), m.group()):
                score = max(score, _PROTECTED)
            words.append(Word(m.start(), m.end(), score))
        return words

    def compress(
        self, texts: list[str], groups: list[str] | None = None, rates: Sequence[float] | None = None
    ) -> list[CompressionResult]:
        """Compress each text (``groups`` is unused); ``rates`` (one per text) overrides the configured rate."""
        per_text = [check_rate(r) for r in rates] if rates is not None else [self.rate] * len(texts)
        out = []
        for text, rate in zip(texts, per_text, strict=True):
            short = compress_words(text, self.words(text), rate, self.force_tokens)
            out.append(CompressionResult(text=short, tokens_before=count_tokens(text), tokens_after=count_tokens(short)))
        return out


def is_protected(text: str, start: int, surface: str) -> bool:
    """A number (any digit) or a name-like word: a capital where no sentence starts ("I" aside)."""
    if any(c.isdigit() for c in surface):
        return True
    if not surface[:1].isupper() or surface == "I":
        return False
    before = text[:start].rstrip()
    return bool(before) and before[-1] not in _SENTENCE_END
