"""The ``llmlingua-2`` segmenter, LightMem's two-stage method.

Coarse boundaries: the LLMLingua-2 model reads the buffered texts of the used roles in one context
window; where a text's attention share to the text just before it is a local maximum, a topic may
start (``lightmem_core.sensory.compressors.attention``). Fine boundaries: similarity drops between
neighbouring turns (``EmbeddingSegmenter``). A fine boundary is kept when a coarse one lies within
``window_turns`` turns of it; when none does, the fine boundaries stand alone (as in LightMem).

With ``precomp_topic_shared`` the compressor scored these texts in the same forward pass that
compressed them and remembered the attention; the segmenter reads it and runs the model only for
texts it has not seen together.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightmem_core.models import Message
from lightmem_core.sensory.compressors.attention import local_maxima
from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer
from lightmem_core.sensory.segmenters.embedding import EmbeddingSegmenter


class LLMLingua2Segmenter:
    """Attention (coarse) plus embedding (fine) topic boundaries over one session's buffered messages."""

    def __init__(
        self,
        scorer: LinguaScorer,
        fine: EmbeddingSegmenter,
        layers: Sequence[int] = (8, 9, 10, 11),
        window_turns: int = 3,
        roles: Sequence[str] = ("user",),
        shared: bool = False,
    ) -> None:
        self.scorer = scorer
        self.fine = fine
        self.layers = list(layers)
        self.window_turns = window_turns
        self.roles = tuple(roles)
        self.shared = shared
        self.model_passes = 0  # forward passes run by the segmenter itself (not shared)

    def coarse(self, messages: list[Message]) -> list[int]:
        """Message indices of the used-role texts that open a topic by attention (local maxima)."""
        chosen = [i for i, m in enumerate(messages) if m.role in self.roles]
        texts = [messages[i].content for i in chosen]
        if len(texts) < 3:
            return []
        # Shared: the compressor's pass held these texts as neighbours (a window boundary between two
        # of them is no reason to run the model again: a pass of our own would end a window there too).
        series = self.scorer.recall(texts) if self.shared else None
        if series is None:
            self.model_passes += 1
            _, series = self.scorer.score_packed(texts, [""] * len(texts), self.layers)
        return [chosen[k] for k in local_maxima(series)]

    def prime(self, sessions: Sequence[Sequence[Message]]) -> None:
        """The fine stage's turns of every session in one call (``TurnPrimer``)."""
        self.fine.prime(sessions)

    def boundaries(self, messages: list[Message]) -> list[int]:
        """Message indices where a new topic starts (always at a turn start)."""
        starts, fine = self.fine.fine(messages)
        if not fine:
            return []
        turn_of = {}
        for t, s in enumerate(starts):
            end = starts[t + 1] if t + 1 < len(starts) else len(messages)
            turn_of.update({i: t for i in range(s, end)})
        coarse = [turn_of[i] for i in self.coarse(messages)]
        kept = [f for f in fine if any(abs(f - c) <= self.window_turns for c in coarse)] or fine
        return [starts[j] for j in sorted(set(kept))]
