"""An in-process search index over an embedded Qdrant folder.

qdrant-client's local mode evaluates payload filters point by point in Python, so every query
filtered by user costs ~0.3 s at 10k entries. In embedded mode this process is the folder's only
user, so it can keep a mirror: dense vectors in a NumPy matrix, BM25 postings, payloads. Searches
are answered from the mirror with Qdrant's own scoring (cosine, IDF ``ln((N−df+0.5)/(df+0.5)+1)``
over the collection, RRF with k=2); the contract tests check the results equal Qdrant's. The folder
stays the durable copy: every write goes to Qdrant first, then to the mirror.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightmem_core.stores.filters import matches

RRF_K = 2  # qdrant-client's DEFAULT_RANKING_CONSTANT_K


class LocalIndex:
    """Dense, sparse and payload mirror of one collection, kept in step by the store."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._payloads: list[dict[str, Any]] = []
        self._alive: list[bool] = []
        self._dense: list[np.ndarray | None] = []
        self._sparse: list[dict[int, float]] = []
        self._postings: dict[int, dict[int, float]] = {}
        self._user_rows: dict[str, set[int]] = {}
        self._matrix: np.ndarray | None = None
        self._by_user: dict[str, tuple[list[int], np.ndarray]] = {}  # contiguous per-user dense block
        self._live = 0

    def put(self, point_id: str, payload: dict[str, Any], dense: list[float] | None, sparse: dict[int, float] | None) -> None:
        if point_id in self._row:
            self.remove(point_id)
        row = len(self._ids)
        self._row[point_id] = row
        self._ids.append(point_id)
        self._payloads.append(payload)
        self._alive.append(True)
        vec = None
        if dense is not None:
            arr = np.asarray(dense, dtype=np.float32)
            norm = float(np.linalg.norm(arr))
            vec = arr / norm if norm else arr
        self._dense.append(vec)
        self._sparse.append(sparse or {})
        for idx, value in (sparse or {}).items():
            self._postings.setdefault(idx, {})[row] = value
        if sparse is not None:
            self._live += 1
        self._user_rows.setdefault(str(payload.get("user_id")), set()).add(row)
        self._matrix = None
        self._by_user.pop(str(payload.get("user_id")), None)

    def remove(self, point_id: str) -> None:
        row = self._row.pop(point_id, None)
        if row is None:
            return
        self._alive[row] = False
        for idx in self._sparse[row]:
            self._postings.get(idx, {}).pop(row, None)
        if self._sparse[row]:
            self._live -= 1
        self._user_rows.get(str(self._payloads[row].get("user_id")), set()).discard(row)
        self._matrix = None
        self._by_user.pop(str(self._payloads[row].get("user_id")), None)

    def ids_of_user(self, user_id: str) -> list[str]:
        return [self._ids[r] for r in self._user_rows.get(user_id, set())]

    def _rows(self, user_id: str, filters: dict[str, Any] | None) -> list[int]:
        rows = sorted(self._user_rows.get(user_id, set()))
        return [r for r in rows if matches(self._payloads[r], filters)] if filters else rows

    def _stacked(self) -> np.ndarray:
        if self._matrix is None:
            zero = np.zeros(self.dims, dtype=np.float32)
            self._matrix = np.vstack([v if v is not None else zero for v in self._dense]) if self._dense else np.zeros((0, self.dims), np.float32)
        return self._matrix

    def _user_block(self, user_id: str) -> tuple[list[int], np.ndarray]:
        """The user's rows that have a dense vector, and their vectors as one contiguous matrix."""
        if user_id not in self._by_user:
            rows = [r for r in sorted(self._user_rows.get(user_id, set())) if self._dense[r] is not None]
            block = self._stacked()[rows] if rows else np.zeros((0, self.dims), np.float32)
            self._by_user[user_id] = (rows, block)
        return self._by_user[user_id]

    def dense_search(self, user_id: str, query: list[float], limit: int, filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        rows, block = self._user_block(user_id)
        if filters:
            keep = [i for i, r in enumerate(rows) if matches(self._payloads[r], filters)]
            rows, block = [rows[i] for i in keep], block[keep]
        if not rows:
            return []
        q = np.asarray(query, dtype=np.float32)
        q = q / (float(np.linalg.norm(q)) or 1.0)
        # einsum, not BLAS: OpenBLAS threads spin after a large gemv and stall the next torch forward pass.
        scores = np.einsum("ij,j->i", block, q)
        top = np.argsort(-scores, kind="stable")[:limit]
        return [(rows[i], float(scores[i])) for i in top]

    def sparse_search(self, user_id: str, indices: list[int], values: list[float], limit: int,
                      filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        allowed = set(self._rows(user_id, filters))
        acc: dict[int, float] = {}
        for idx, qv in zip(indices, values, strict=True):
            posting = self._postings.get(idx, {})
            idf = math.log((self._live - len(posting) + 0.5) / (len(posting) + 0.5) + 1)
            for row, dv in posting.items():
                if row in allowed:
                    acc[row] = acc.get(row, 0.0) + qv * idf * dv
        return sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def fuse(self, lists: list[list[tuple[int, float]]], limit: int) -> list[tuple[int, float]]:
        """Reciprocal rank fusion exactly as qdrant-client computes it."""
        scores: dict[int, float] = {}
        for ranked in lists:
            for pos, (row, _) in enumerate(ranked):
                scores[row] = scores.get(row, 0.0) + 1.0 / (pos + RRF_K)
        return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:limit]

    def payload(self, row: int) -> dict[str, Any]:
        return self._payloads[row]

    def clear(self) -> None:
        self.__init__(self.dims)  # type: ignore[misc]
