"""An in-memory embedder for tests and demos without a model: hashed bag of words, L2-normalised.

It shares words' meaning with nothing, but texts that share words get similar vectors, which is enough
to exercise every code path that needs an embedder.
"""

from __future__ import annotations

import math
import zlib

from lightmem_core.embedders.bm25 import tokenize


class HashingEmbedder:
    """Deterministic bag-of-words embedder of ``dims`` dimensions."""

    def __init__(self, dims: int = 64) -> None:
        self._dims = dims

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self._dims
        for token in tokenize(text) or ["<empty>"]:
            h = zlib.crc32(token.encode("utf-8"))
            vec[h % self._dims] += 1.0 if (h >> 16) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]
