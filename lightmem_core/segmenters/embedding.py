"""The ``embedding`` segmenter: a new topic starts where neighbouring turns stop being similar.

Messages are grouped into turns without assuming user/assistant alternation: a turn starts at every
message of an anchor role (``user`` by default) and takes the messages that follow until the next
one, so system or tool messages and two user messages in a row are all handled. LightMem's fine
boundaries: the cosine similarity of neighbouring turns is compared with a threshold that starts at
``similarity_start`` and is raised by ``similarity_step`` (up to ``similarity_max``) until at least
one boundary appears.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightmem_core.embedders.base import Embedder
from lightmem_core.models import Message


def turn_starts(messages: Sequence[Message], anchors: Sequence[str] = ("user",)) -> list[int]:
    """Message indices at which a turn starts: 0, and every later message of an anchor role.

    Without any anchor-role message, every message is its own turn.
    """
    if not any(m.role in anchors for m in messages):
        return list(range(len(messages)))
    return [i for i, m in enumerate(messages) if i == 0 or m.role in anchors]


def turn_texts(messages: Sequence[Message], starts: Sequence[int]) -> list[str]:
    """The original text of each turn, its messages joined by newlines."""
    edges = [*starts, len(messages)]
    return ["\n".join(m.content for m in messages[a:b]) for a, b in zip(edges, edges[1:], strict=False)]


def similarity_drops(
    vectors: np.ndarray, start: float = 0.2, step: float = 0.05, maximum: float = 0.5
) -> list[int]:
    """Turn indices ``j`` (a topic starts at turn j) where ``cos(turn j-1, turn j)`` is under the threshold.

    The threshold rises from ``start`` by ``step`` until a boundary appears or it passes ``maximum``.
    """
    if len(vectors) < 2:
        return []
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = np.sum(unit[1:] * unit[:-1], axis=1)
    threshold = start
    while threshold <= maximum + 1e-9:
        found = [j + 1 for j, s in enumerate(sims) if s < threshold]
        if found:
            return found
        threshold += step
    return []


class EmbeddingSegmenter:
    """Topic boundaries from similarity drops between neighbouring turns; needs only an embedder."""

    def __init__(
        self,
        embedder: Embedder,
        similarity_start: float = 0.2,
        similarity_step: float = 0.05,
        similarity_max: float = 0.5,
        anchors: Sequence[str] = ("user",),
    ) -> None:
        self.embedder = embedder
        self.start, self.step, self.maximum = similarity_start, similarity_step, similarity_max
        self.anchors = tuple(anchors)

    def fine(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        """Turn starts (message indices) and the turn indices where a similarity drop opens a topic."""
        starts = turn_starts(messages, self.anchors)
        if len(starts) < 2:
            return starts, []
        vectors = np.asarray(self.embedder.embed(turn_texts(messages, starts)), dtype=np.float32)
        return starts, similarity_drops(vectors, self.start, self.step, self.maximum)

    def boundaries(self, messages: list[Message]) -> list[int]:
        """Message indices where a new topic starts (always at a turn start)."""
        starts, drops = self.fine(messages)
        return [starts[j] for j in drops]
