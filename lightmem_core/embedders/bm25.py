"""BM25 as Qdrant sparse vectors.

Documents carry the BM25 term-frequency part, ``tf·(k1+1) / (tf + k1·(1−b+b·|d|/avgdl))``; Qdrant's
``Modifier.IDF`` supplies the inverse document frequency at query time from the collection itself,
so the index stays correct as entries are added or deleted. Queries carry weight 1 per distinct term.
Term ids are CRC32 hashes of the lower-cased token: stable across processes and machines.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+", re.UNICODE)
# A short English stop list: function words carry no evidence and only dilute BM25 scores.
STOPWORDS = frozenset(
    """a an and are as at be been but by did do does for from had has have he her hers him his how i if in
    into is it its me my of on or our she so than that the their them then there these they this to was we
    were what when where which who whom why will with you your yours""".split()
)


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stop words; CJK and other scripts pass through as words."""
    return [t for t in (m.group(0).lower() for m in _TOKEN.finditer(text)) if t not in STOPWORDS]


def term_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


class BM25Encoder:
    """Turns texts into BM25 sparse vectors for documents and queries."""

    def __init__(self, k1: float = 1.2, b: float = 0.75, avg_doc_tokens: float = 16.0) -> None:
        self.k1 = k1
        self.b = b
        self.avg_doc_tokens = avg_doc_tokens

    def encode_document(self, text: str) -> SparseVec:
        tokens = tokenize(text)
        counts = _merge_hash_collisions(Counter(tokens))
        norm = self.k1 * (1.0 - self.b + self.b * len(tokens) / self.avg_doc_tokens)
        items = sorted((idx, tf * (self.k1 + 1.0) / (tf + norm)) for idx, tf in counts.items())
        return SparseVec([i for i, _ in items], [v for _, v in items])

    def encode_query(self, text: str) -> SparseVec:
        indices = sorted({term_id(t) for t in tokenize(text)})
        return SparseVec(indices, [1.0] * len(indices))


def _merge_hash_collisions(counts: Counter[str]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for token, tf in counts.items():
        idx = term_id(token)
        merged[idx] = merged.get(idx, 0) + tf
    return merged
