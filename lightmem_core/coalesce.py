"""Concurrent calls of one batch function, run as one call: several sessions per forward pass.

A model runs one pass at a time, so threads that call it together would queue behind one another,
each with its own small batch. A ``Coalescer`` lets the first caller run the function and collects
the calls that arrive meanwhile; when the pass ends, one of the waiting callers runs all of them as
one batch. Nobody waits for a timer: a lone caller runs at once, exactly as without the coalescer,
and under load the batches grow by themselves. Concurrent callers are, for example, ``LightMemory``'s
background pool storing a batch (entry embeddings) while ``add_memory`` segments the next session
(turn embeddings), the store worker's search desk threads beside its indexing, or an application's
threads adding sessions of different users.

A batch that fails is run again call by call, so one caller's bad input fails that caller alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Call(Generic[T, R]):
    __slots__ = ("done", "error", "items", "results")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.results: list[R] = []
        self.error: BaseException | None = None
        self.done = False


class Coalescer(Generic[T, R]):
    """``fn(items) -> results`` (one result per item, in order) shared by concurrent callers."""

    def __init__(self, fn: Callable[[list[T]], list[R]], max_items: int = 4096) -> None:
        self._fn = fn
        self.max_items = max_items  # a batch stops growing here (memory), the rest waits for the next pass
        self._cond = threading.Condition()
        self._pending: list[_Call[T, R]] = []
        self._running = False
        self.passes = 0  # calls of ``fn`` (for tests and benchmarks)
        self.merged = 0  # callers served by a pass that also served another caller

    def __call__(self, items: list[T]) -> list[R]:
        call: _Call[T, R] = _Call(list(items))
        with self._cond:
            self._pending.append(call)
            while not call.done:
                if self._running:
                    self._cond.wait()
                    continue
                # Nobody is running a pass: this caller runs the next one (oldest calls first, so its
                # own call may need more than one pass when the batch is full).
                self._running = True
                batch = self._take()
                self._cond.release()
                try:
                    self._serve(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if call.error is not None:
            raise call.error
        return call.results

    def _take(self) -> list[_Call[T, R]]:
        """The pending calls, oldest first, up to ``max_items`` items (always at least one call)."""
        batch: list[_Call[T, R]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_items):
            size += len(self._pending[0].items)
            batch.append(self._pending.pop(0))
        return batch

    def _serve(self, batch: list[_Call[T, R]]) -> None:
        try:
            results = self._run([item for call in batch for item in call.items])
        except BaseException as exc:  # noqa: BLE001  # handed to the callers, who raise it
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one caller's bad input must not fail the others
                for call in batch:
                    self._serve([call])
            self._finish(batch)
            return
        start = 0
        for call in batch:
            call.results = results[start : start + len(call.items)]
            start += len(call.items)
        if len(batch) > 1:
            self.merged += len(batch)
        self._finish(batch)

    def _run(self, items: list[T]) -> list[R]:
        self.passes += 1
        results = self._fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results

    def _finish(self, batch: list[_Call[T, R]]) -> None:
        with self._cond:
            for call in batch:
                call.done = True
            self._cond.notify_all()
