"""Prometheus metrics of a worker process: turns in, tokens before and after compression, entries,
LLM calls and tokens, stage latencies, failures, and the depth of every queue (read from Redis when
scraped, so any one worker's endpoint shows the whole backlog). Served on ``LIGHTMEM_METRICS_PORT``
(0: off), one port per worker process (``lightmem worker extract --metrics-port 9102``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

TURNS_IN = Counter("lightmem_turns_in", "Turns indexed (all roles)")
TOKENS_ORIGINAL = Counter("lightmem_tokens_original", "Tokens of the extraction roles before compression")
TOKENS_COMPRESSED = Counter("lightmem_tokens_compressed", "Tokens of the extraction roles after compression")
ENTRIES = Counter("lightmem_entries_stored", "Memory entries upserted")
LLM_CALLS = Counter("lightmem_llm_calls", "LLM calls (every attempt)", ["purpose", "outcome"])
LLM_TOKENS = Counter("lightmem_llm_tokens", "LLM tokens (kind: prompt, completion, cached: prompt tokens the "
                     "provider served from its prefix cache)", ["kind"])
LLM_CACHE_HITS = Counter("lightmem_llm_cache_hits", "Replies replayed from the call cache (no LLM call)", ["purpose"])
STAGE_SECONDS = Histogram("lightmem_stage_seconds", "Task latency by task name", ["task"],
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
FAILURES = Counter("lightmem_failures", "Tasks failed for good (recorded with their reason)", ["task"])
DEAD_LETTERS = Counter("lightmem_dead_letters", "Messages no task could take, kept with their raw body")


def observe(stats: dict[str, float]) -> None:
    """Count what the state counted (once per buffered segment or stored batch, not per re-run)."""
    TURNS_IN.inc(stats.get("messages_in", 0))
    TOKENS_ORIGINAL.inc(stats.get("tokens_original", 0))
    TOKENS_COMPRESSED.inc(stats.get("tokens_after_compression", 0))
    ENTRIES.inc(stats.get("entries_stored", 0))


class QueueDepth(Collector):
    """``lightmem_queue_depth{queue}``: messages waiting in each queue, and ``lightmem_queue_held``:
    delivered to a worker and not yet acknowledged, read at scrape time."""

    def __init__(self, depths: Callable[[], tuple[dict[str, int], dict[str, int]]]) -> None:
        self._depths = depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily("lightmem_queue_depth", "Messages waiting in a queue", labels=["queue"])
        held = GaugeMetricFamily("lightmem_queue_held", "Messages a worker holds (delivered, not acknowledged)",
                                 labels=["queue"])
        try:
            queued, holding = self._depths()
        except Exception:  # Redis down: the gauges are absent from this scrape, the endpoint still answers
            log.debug("queue depth unavailable", exc_info=True)
            return
        for queue, n in sorted(queued.items()):
            waiting.add_metric([queue], n)
            held.add_metric([queue], holding.get(queue, 0))
        yield waiting
        yield held


def serve(port: int, depths: Callable[[], tuple[dict[str, int], dict[str, int]]] | None = None) -> None:
    """Expose ``/metrics`` on ``port`` (0 leaves metrics off), with the queue gauges when ``depths`` is given."""
    if port:
        if depths is not None:
            REGISTRY.register(QueueDepth(depths))
        start_http_server(port)
        log.info("Prometheus metrics on :%d/metrics", port)
