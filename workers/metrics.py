"""Prometheus metrics of a worker process: turns in, tokens before and after compression, entries,
LLM calls and tokens, stage latencies, failures. Served on ``LIGHTMEM_METRICS_PORT`` (0: off), one
port per worker process (``lightmem worker extract --metrics-port 9102``)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

TURNS_IN = Counter("lightmem_turns_in", "Turns indexed (all roles)")
TOKENS_ORIGINAL = Counter("lightmem_tokens_original", "Tokens of the extraction roles before compression")
TOKENS_COMPRESSED = Counter("lightmem_tokens_compressed", "Tokens of the extraction roles after compression")
ENTRIES = Counter("lightmem_entries_stored", "Memory entries upserted")
LLM_CALLS = Counter("lightmem_llm_calls", "LLM calls (every attempt)", ["purpose", "outcome"])
LLM_TOKENS = Counter("lightmem_llm_tokens", "LLM tokens", ["kind"])
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


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port``; 0 leaves metrics off."""
    if port:
        start_http_server(port)
        log.info("Prometheus metrics on :%d/metrics", port)
