"""Sessions compressed by concurrent callers (the compress worker's task threads) share forward passes
and come out as each would alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
from tests.sensory.conftest import CAR_REPAIR, COOKING

LAYERS = [2, 3]


def sessions() -> list[tuple[list[str], list[str]]]:
    """Six sessions of user turns, each with its own group key, some long enough for several windows."""
    out = []
    for s in range(6):
        turns = [u for u, _ in (COOKING if s % 2 else CAR_REPAIR)] * (1 + s % 3)
        out.append((turns, [f"u{s % 2}\x1fsession-{s}"] * len(turns)))
    return out


def test_concurrent_sessions_share_passes_and_compress_as_alone(attention_scorer: Any) -> None:
    alone = LLMLingua2Compressor(attention_scorer, rate=0.5, shared_layers=LAYERS)
    expected = [[r.text for r in alone.compress(texts, groups)] for texts, groups in sessions()]
    together = LLMLingua2Compressor(attention_scorer, rate=0.5, shared_layers=LAYERS)
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda s: [r.text for r in together.compress(*s)], sessions()))
    assert got == expected
    assert together._passes.passes < len(expected)  # at least two sessions shared a pass


def test_calls_without_group_keys_never_share_a_window(attention_scorer: Any) -> None:
    compressor = LLMLingua2Compressor(attention_scorer, rate=0.5, shared_layers=LAYERS)
    first, second = [u for u, _ in COOKING[:5]], [u for u, _ in CAR_REPAIR[:5]]
    expected = [[r.text for r in compressor.compress(t)] for t in (first, second)]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda t: [r.text for r in compressor.compress(t)], [first, second] * 3)) == expected * 3
