"""LightMem's sentence-level attention, read from one context window of the LLMLingua-2 model.

For each text in a window, the share of the attention it pays to all earlier texts of the window
that goes to the text just before it (layers and heads averaged; the first and last three positions
of the window are ignored, as in LightMem). Local maxima of this series are the coarse topic
boundaries of the ``llmlingua-2`` segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDGE = 3


@dataclass(frozen=True)
class Window:
    """One model input: pieces ``(text index, first token, end token)`` laid out after [CLS]."""

    pieces: list[tuple[int, int, int]]

    @property
    def length(self) -> int:
        return 2 + sum(b - a for _, a, b in self.pieces)


def neighbour_attention(window: Window, att: np.ndarray) -> dict[int, float]:
    """``{text index: attention share to the previous text}`` for every text after the window's first.

    ``att`` is the window's (length × length) attention matrix, [CLS] at row 0.
    """
    length = att.shape[0]
    valid = np.ones(length, dtype=bool)
    if length >= 2 * EDGE:
        valid[:EDGE] = False
        valid[-EDGE:] = False
    spans, pos = [], 1
    for _, a, b in window.pieces:
        spans.append(np.arange(pos, pos + b - a))
        pos += b - a
    kept = [s[valid[s]] for s in spans]
    out: dict[int, float] = {}
    for k in range(1, len(window.pieces)):
        rows = kept[k]
        earlier = np.concatenate(kept[:k])
        if rows.size == 0 or earlier.size == 0 or kept[k - 1].size == 0:
            out[window.pieces[k][0]] = 0.0
            continue
        total = float(att[np.ix_(rows, earlier)].sum())
        near = float(att[np.ix_(rows, kept[k - 1])].sum())
        out[window.pieces[k][0]] = near / total if total > 0 else 0.0
    return out


def local_maxima(series: list[float | None]) -> list[int]:
    """Indices ``k`` where ``series[k]`` is higher than both neighbours (``None`` never counts)."""
    peaks = []
    for k in range(1, len(series) - 1):
        prev, cur, nxt = series[k - 1], series[k], series[k + 1]
        if prev is not None and cur is not None and nxt is not None and prev < cur > nxt:
            peaks.append(k)
    return peaks
