"""``Coalescer``: concurrent callers of one batch function share its calls, each gets its own results,
and one caller's failure fails that caller alone (``lightmem_core/coalesce.py``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from lightmem_core.coalesce import Coalescer


class Gate:
    """A batch function whose first call waits until released, so that later callers pile up."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if any(i.startswith("bad") for i in items):
            raise ValueError("bad item")
        return [i.upper() for i in items]


def pile_up(gate: Gate, coalescer: Coalescer[str, str], later: list[list[str]]) -> list[Any]:
    """The first caller blocks inside the function; ``later`` callers arrive meanwhile; then release."""
    with ThreadPoolExecutor(len(later) + 1) as pool:
        first = pool.submit(coalescer, ["a"])
        assert gate.entered.wait(10)
        futures = [pool.submit(coalescer, items) for items in later]
        deadline = time.monotonic() + 10
        while len(coalescer._pending) < len(later) and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.release.set()
        out: list[Any] = [first.result(10)]
        for f in futures:
            try:
                out.append(f.result(10))
            except ValueError as exc:
                out.append(exc)
    return out


def test_a_lone_caller_runs_at_once_with_its_own_items() -> None:
    seen: list[list[int]] = []
    double = Coalescer(lambda items: seen.append(items) or [2 * i for i in items])
    assert double([1, 2, 3]) == [2, 4, 6]
    assert double([]) == []
    assert seen == [[1, 2, 3], []] and double.merged == 0


def test_callers_that_arrive_during_a_pass_share_the_next_one() -> None:
    gate = Gate()
    coalescer: Coalescer[str, str] = Coalescer(gate)
    out = pile_up(gate, coalescer, [["b", "c"], ["d"], ["e", "f", "g"]])
    assert out == [["A"], ["B", "C"], ["D"], ["E", "F", "G"]]
    assert gate.calls[0] == ["a"] and sorted(gate.calls[1]) == ["b", "c", "d", "e", "f", "g"]
    assert coalescer.passes == 2 and coalescer.merged == 3


def test_a_failing_caller_fails_alone() -> None:
    gate = Gate()
    coalescer: Coalescer[str, str] = Coalescer(gate)
    out = pile_up(gate, coalescer, [["b"], ["bad"], ["c", "d"]])
    assert out[:2] == [["A"], ["B"]] and isinstance(out[2], ValueError) and out[3] == ["C", "D"]


def test_a_batch_stops_growing_at_max_items() -> None:
    gate = Gate()
    coalescer: Coalescer[str, str] = Coalescer(gate, max_items=3)
    out = pile_up(gate, coalescer, [["b", "c"], ["d", "e"], ["f"]])
    assert out == [["A"], ["B", "C"], ["D", "E"], ["F"]]
    assert all(len(call) <= 3 for call in gate.calls) and sum(map(len, gate.calls)) == 6


def test_a_function_that_loses_results_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        Coalescer(lambda items: items[:2])([1, 2, 3])


def test_threads_embedding_at_once_get_the_vectors_a_lone_caller_gets(minilm_embedder: Any) -> None:
    texts = [[f"turn {n} of session {s}: we talked about {'hiking' if s % 2 else 'baking'} for a while" * (1 + n % 3)
              for n in range(12)] for s in range(6)]
    alone = [np.asarray(minilm_embedder.embed(t)) for t in texts]
    passes = minilm_embedder._passes.passes
    with ThreadPoolExecutor(6) as pool:
        together = [np.asarray(v) for v in pool.map(minilm_embedder.embed, texts)]
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5
    assert minilm_embedder._passes.passes - passes <= 6
