"""The ``embedding`` segmenter: a new topic starts where neighbouring turns stop being similar.

Messages are grouped into turns without assuming user/assistant alternation: a turn starts at every
message of an anchor role (``user`` by default) and takes the messages that follow until the next
one, so system or tool messages and two user messages in a row are all handled. Fine boundaries as
in LightMem, a similarity threshold that starts at ``similarity_start`` and is raised by
``similarity_step`` (up to ``similarity_max``) until a boundary appears, but over the similarity of
blocks of neighbouring turns and at local minima only, so one off-hand turn does not cut a topic.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
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


def block_similarity(vectors: np.ndarray, block: int) -> np.ndarray:
    """For each ``j`` in 1..n-1: cosine of the mean of the ``block`` turns before j and the ``block`` from j."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(unit) - 1, dtype=np.float64)
    for j in range(1, len(unit)):
        left, right = unit[max(0, j - block) : j].mean(axis=0), unit[j : j + block].mean(axis=0)
        out[j - 1] = float(left @ right) / max(float(np.linalg.norm(left) * np.linalg.norm(right)), 1e-12)
    return out


def similarity_drops(
    vectors: np.ndarray, start: float = 0.2, step: float = 0.05, maximum: float = 0.5, block: int = 3
) -> list[int]:
    """Turn indices ``j`` (a topic starts at turn j) where the similarity across j drops.

    The similarity across j compares the ``block`` turns before j with the ``block`` turns from j
    (single turns are too noisy: two questions on one topic often share few words). A drop is a
    local minimum under the threshold, which rises from ``start`` by ``step`` until a boundary
    appears or it passes ``maximum`` (LightMem's schedule).
    """
    if len(vectors) < 2:
        return []
    sims = block_similarity(vectors, max(1, block))
    padded = np.concatenate(([np.inf], sims, [np.inf]))
    minima = [k for k in range(len(sims)) if padded[k + 1] <= padded[k] and padded[k + 1] <= padded[k + 2]]
    threshold = start
    while threshold <= maximum + 1e-9:
        found = [k + 1 for k in minima if sims[k] < threshold]
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
        block_turns: int = 3,
    ) -> None:
        self.embedder = embedder
        self.start, self.step, self.maximum = similarity_start, similarity_step, similarity_max
        self.block = block_turns
        self.anchors = tuple(anchors)
        # The sensory buffer cuts when it overflows and keeps the last topic, which is cut again with the
        # next messages: its turns would be embedded again each time. Recent turn vectors are kept.
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = 4096
        self.embedded = 0  # turn texts this segmenter had embedded (not found among the recent ones)

    def fine(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        """Turn starts (message indices) and the turn indices where a similarity drop opens a topic."""
        starts = turn_starts(messages, self.anchors)
        if len(starts) < 2:
            return starts, []
        vectors = self.turn_vectors(turn_texts(messages, starts))
        return starts, similarity_drops(vectors, self.start, self.step, self.maximum, self.block)

    def prime(self, sessions: Sequence[Sequence[Message]]) -> None:
        """Embed the turns of every session in one call, ahead of ``fine`` on each (``TurnPrimer``)."""
        texts = [t for messages in sessions for t in turn_texts(messages, turn_starts(messages, self.anchors))]
        if len(texts) > 1 and len(texts) <= self.cache_size:
            self.turn_vectors(texts)

    def turn_vectors(self, texts: list[str]) -> np.ndarray:
        """One vector per turn text, embedding only the texts not among the recent ones (in one batch)."""
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        with self._lock:
            known = {k: self._vectors[k] for k in keys if k in self._vectors}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            fresh = np.asarray(self.embedder.embed([text_of[k] for k in missing]), dtype=np.float32)
            known.update(zip(missing, fresh, strict=True))
            with self._lock:
                self.embedded += len(missing)
                self._vectors.update(zip(missing, fresh, strict=True))
                while len(self._vectors) > self.cache_size:
                    self._vectors.popitem(last=False)
        with self._lock:
            for k in keys:
                if k in self._vectors:
                    self._vectors.move_to_end(k)
        return np.stack([known[k] for k in keys])

    def boundaries(self, messages: list[Message]) -> list[int]:
        """Message indices where a new topic starts (always at a turn start)."""
        starts, drops = self.fine(messages)
        return [starts[j] for j in drops]
