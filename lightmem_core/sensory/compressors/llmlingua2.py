"""The ``llmlingua-2`` compressor: LLMLingua-2's word selection, batched across many messages.

``compress_batch`` is the primary API (the GPU workers call it on messages of many users at once):
one batched forward pass over every chunk of every text, and each text keeps its own ``rate`` share
of words. The original text is never changed; callers keep it next to the compressed one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from lightmem_core.coalesce import Coalescer
from lightmem_core.config import DEFAULT_FORCE_TOKENS
from lightmem_core.sensory.compressors.base import CompressionResult
from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer
from lightmem_core.sensory.compressors.selection import Word, check_rate, compress_words
from lightmem_core.tokens import count_tokens


def compress_batch(
    scorer: LinguaScorer,
    texts: list[str],
    rates: Sequence[float],
    force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
) -> list[CompressionResult]:
    """Compress ``texts[i]`` to about ``rates[i]`` of its words, all in one batched pass."""
    checked = [check_rate(r) for r in rates]
    if len(checked) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(checked)} rates")
    return results(texts, scorer.score(texts), checked, force_tokens)


def results(texts: list[str], words: list[list[Word]], rates: Sequence[float], force_tokens: Sequence[str]) -> list[CompressionResult]:
    """Select and render the kept words of each text, with token counts before and after."""
    out = []
    for text, ws, rate in zip(texts, words, rates, strict=True):
        short = compress_words(text, ws, rate, force_tokens)
        out.append(CompressionResult(text=short, tokens_before=count_tokens(text), tokens_after=count_tokens(short)))
    return out


class LLMLingua2Compressor:
    """The ``Compressor`` over a ``LinguaScorer``.

    With ``shared_layers`` set (``precomp_topic_shared``), neighbouring texts of one group are
    scored in shared windows and the scorer remembers the attention between neighbours, so that the
    ``llmlingua-2`` segmenter reads it instead of running the model again.
    """

    def __init__(
        self,
        scorer: LinguaScorer,
        rate: float = 0.6,
        force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
        shared_layers: list[int] | None = None,
    ) -> None:
        self.scorer = scorer
        self.rate = check_rate(rate)
        self.force_tokens = tuple(force_tokens)
        self.shared_layers = shared_layers
        # Concurrent callers (an application's threads adding sessions of different users) share passes:
        # their texts, kept apart by their group keys, are packed and scored together.
        self._passes: Coalescer[tuple[str, str], CompressionResult] = Coalescer(self._compress_pairs)
        self._calls = itertools.count()

    def compress(self, texts: list[str], groups: list[str] | None = None) -> list[CompressionResult]:
        """Compress every text at the configured rate; ``groups`` (one key per text) bound shared windows."""
        if groups is not None and len(groups) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(groups)} group keys")
        if not texts:
            return []
        # Without keys a call is one group; its own key keeps it out of the windows of calls it shares a pass with.
        keys = groups if groups is not None else [f"\x00call {next(self._calls)}"] * len(texts)
        return self._passes(list(zip(texts, keys, strict=True)))

    def _compress_pairs(self, pairs: list[tuple[str, str]]) -> list[CompressionResult]:
        return self._compress_now([t for t, _ in pairs], [g for _, g in pairs])

    def _compress_now(self, texts: list[str], groups: list[str]) -> list[CompressionResult]:
        rates = [self.rate] * len(texts)
        if self.shared_layers is None:
            return compress_batch(self.scorer, texts, rates, self.force_tokens)
        words, _ = self.scorer.score_packed(texts, groups, self.shared_layers)
        return results(texts, words, rates, self.force_tokens)
