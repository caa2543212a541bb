"""Nearest strictly newer and strictly older entries for many entries at once: one matrix product.

The offline update's queue used to ask the store two searches per new entry. Here a user's dense
vectors are one matrix; a block of new entries against all of them is one product, and the time
masks pick the newer and the older side. Scores are cosine similarities, as the store's ``Cosine``
distance gives them (it normalises vectors on upsert; normalising again is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Rows of new entries per product: bounds the score block at ROWS x (the user's entries) floats.
ROWS = 256

Matches = list[tuple[int, float]]  # (column, score), best first


@dataclass(frozen=True)
class Neighbours:
    """One new entry's best strictly newer and strictly older entries, as column indexes."""

    newer: Matches
    older: Matches


def unit_rows(vectors: list[list[float]]) -> NDArray[np.float32]:
    """The vectors as float32 rows of length 1 (a zero vector stays zero)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: NDArray[np.float32] = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


def neighbours(matrix: NDArray[np.float32], stamps: NDArray[np.float64], rows: list[int], tie_rank: NDArray[np.int64],
               top_k: int) -> list[Neighbours]:
    """For each of ``rows`` (indexes into ``matrix``): the ``top_k`` most similar columns with a strictly
    later time stamp and the ``top_k`` with a strictly earlier one. Equal scores are ordered by
    ``tie_rank`` (the entries' ids), so the result never depends on the order the store returned."""
    found: list[Neighbours] = []
    for start in range(0, len(rows), ROWS):
        block = np.asarray(rows[start : start + ROWS])
        scores = matrix[block] @ matrix.T
        own = stamps[block][:, None]
        later, earlier = stamps[None, :] > own, stamps[None, :] < own
        for i in range(len(block)):
            found.append(Neighbours(_best(scores[i], later[i], tie_rank, top_k),
                                    _best(scores[i], earlier[i], tie_rank, top_k)))
    return found


def _best(scores: NDArray[np.float32], allowed: NDArray[np.bool_], tie_rank: NDArray[np.int64], k: int) -> Matches:
    cols = np.flatnonzero(allowed)
    if cols.size > k:
        # Everything scoring at least the k-th best (ties at the edge included), then the exact order.
        kth = np.partition(scores[cols], cols.size - k)[cols.size - k]
        cols = cols[scores[cols] >= kth]
    order = np.lexsort((tie_rank[cols], -scores[cols]))[:k]
    return [(int(cols[j]), float(scores[cols[j]])) for j in order]
