"""Extraction in the background, for ``LightMemory``: a bounded pool of threads makes the extraction
calls while the caller goes on compressing and buffering the next messages.

Why: in one process an extraction call is a wait on the network (about a second a call), and the
caller has model work to do meanwhile. The pool runs only the call it is given
(``pipeline.extract_batch`` with the extractor).
Everything that writes state (storing a batch, failing it) stays with the caller, under
``LightMemory``'s lock, and follows each user's batch order: a batch is finished only after every
earlier batch of its user, so a user's batches are stored in the order synchronous extraction stores
them, and the same entries come out.

The pool never decides what an outcome means; the caller takes each user's next finished batch with
``next_done`` and then either ``pop``s it (stored, or failed for good) or ``stall``s it (a transient
error, or an error it raises to its own caller): a stalled batch keeps its place at the head of its
user's queue, and its later batches wait behind it until ``resend`` sends it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from lightmem_core.models import MemoryEntry
from lightmem_core.state import Batch


@dataclass
class Pending:
    """A batch handed to the pool; ``call`` is ``None`` while it waits to be sent again."""

    batch: Batch
    call: Future[list[MemoryEntry]] | None


class ExtractionPool:
    """At most ``size`` extraction calls in flight; ``size`` 0 makes each call in the caller's thread.

    Not thread-safe by itself: ``LightMemory`` calls it under its lock. Only the calls run in the
    pool's threads.
    """

    def __init__(self, extract: Callable[[Batch], list[MemoryEntry]], size: int) -> None:
        self.size = size
        self._extract = extract
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="lightmem-extract") if size else None
        self._queues: dict[str, deque[Pending]] = {}

    def users(self) -> list[str]:
        """Users with batches in the pool (sent, finished but not taken, or stalled)."""
        return [u for u, q in self._queues.items() if q]

    def batch_ids(self, user_id: str) -> set[str]:
        return {p.batch.batch_id for p in self._queues.get(user_id, ())}

    def pending(self, user_id: str) -> int:
        return len(self._queues.get(user_id, ()))

    def stalled(self, user_id: str) -> bool:
        """Whether the user's oldest batch waits to be sent again."""
        queue = self._queues.get(user_id)
        return queue is not None and bool(queue) and queue[0].call is None

    def send(self, batches: Iterable[Batch]) -> None:
        """Start the calls of ``batches`` (one user's, in order), behind that user's earlier batches.
        Blocks while ``size`` calls are in flight: the bound that keeps a fast caller from queueing
        without limit."""
        for batch in batches:
            self._queues.setdefault(batch.user_id, deque()).append(Pending(batch, self._start(batch)))

    def resend(self, user_id: str) -> None:
        """Send the user's stalled batch again (there is at most one: the head of the queue)."""
        for pending in self._queues.get(user_id, ()):
            if pending.call is None:
                pending.call = self._start(pending.batch)

    def next_done(self, user_id: str, block: bool) -> Pending | None:
        """The user's oldest batch once its call is over (waiting for it when ``block``); ``None`` when
        the queue is empty, its head is stalled, or (without ``block``) its call is still running."""
        queue = self._queues.get(user_id)
        call = queue[0].call if queue else None
        if call is None or (not block and not call.done()):
            return None
        wait([call])
        return queue[0] if queue else None

    def done_run(self, user_id: str) -> list[Pending]:
        """The user's oldest batches whose calls are over and returned entries, up to the first that is
        still running, failed or waits to be sent again: those the caller can store now, in order."""
        run: list[Pending] = []
        for pending in self._queues.get(user_id, ()):
            call = pending.call
            if call is None or not call.done() or call.exception() is not None:
                break
            run.append(pending)
        return run

    def failed_any(self, user_id: str) -> bool:
        """Whether a call of the user's is over with an error (to settle before sending more)."""
        return any(p.call is not None and p.call.done() and p.call.exception() is not None
                   for p in self._queues.get(user_id, ()))

    def pop(self, pending: Pending) -> None:
        """The batch is settled (stored, or failed for good): it leaves the pool."""
        queue = self._queues[pending.batch.user_id]
        assert queue[0] is pending, "batches of one user are settled in order"
        queue.popleft()

    def stall(self, pending: Pending) -> None:
        """Keep the batch at the head of its user's queue, to be sent again by ``resend``."""
        pending.call = None

    def close(self) -> None:
        """Wait for the calls in flight, then stop the threads. Their results are dropped: the caller
        settles what it wants before (the batches stay in flight in the state, for the next run)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._queues.clear()

    def _start(self, batch: Batch) -> Future[list[MemoryEntry]]:
        if self._executor is None:
            done: Future[list[MemoryEntry]] = Future()
            try:
                done.set_result(self._extract(batch))
            except Exception as exc:  # handed to the caller through the future, as from a thread
                done.set_exception(exc)
            return done
        self._make_room()
        return self._executor.submit(self._extract, batch)

    def _make_room(self) -> None:
        while True:
            running = [p.call for q in self._queues.values() for p in q if p.call is not None and not p.call.done()]
            if len(running) < self.size:
                return
            wait(running, return_when=FIRST_COMPLETED)
