"""OpenMP's waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless set already.

torch runs its CPU kernels on OpenMP threads, which by default spin for a while at the end of every
parallel region, waiting for the next one. With the cores to themselves that costs nothing; beside
other busy processes (the compress, store and extract workers of one machine, or the library's own
background extraction) the spinning threads take cores from work that was ready to run. Measured with
`python -m bench.pipeline --latency 0 --conversations 2` on the 2-core machine: through the queues
69.0 CPU-s and 37.3 s wall spinning, 54.8 CPU-s and 32.4 s passive; in one process 47.0 and 42.4 CPU-s
at the same wall. The OpenMP runtime reads the variable when torch loads it, so this module is imported
by ``lightmem_core/__init__.py`` before anything that imports torch; a process that imported torch
earlier keeps what it had, and an explicit ``OMP_WAIT_POLICY`` always wins.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def prefer_passive_waiting() -> str:
    """Set ``OMP_WAIT_POLICY`` to ``PASSIVE`` unless the environment says otherwise; returns the policy."""
    return os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


prefer_passive_waiting()
