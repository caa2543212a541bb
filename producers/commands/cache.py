"""``lightmem cache stats|clear``: the call cache (``kv_cache``) where the configuration puts it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def register(subparsers: Any) -> None:
    cache = subparsers.add_parser("cache", help="the LLM call cache (kv_cache): its size, or empty it")
    actions = cache.add_subparsers(dest="cache_action", required=True)
    stats = actions.add_parser("stats", help="where it is, entries and bytes against their bounds, replays")
    stats.add_argument("--json", action="store_true", help="machine output")
    stats.set_defaults(func=_stats)
    clear = actions.add_parser("clear", help="remove every stored reply (the next runs call the model again)")
    clear.set_defaults(func=_clear)


def _open() -> Any:
    """The cache where the configuration puts it, even while ``kv_cache`` is off (to clear it then)."""
    from workers.llm_cache import open_reply_cache
    from workers.settings import get_settings

    config = get_settings().memory_cfg
    if not config.kv_cache or config.memory_manager.model_name == "verbatim":
        print("note: kv_cache is off (or no LLM is configured): nothing is added to the call cache now")
    return open_reply_cache(get_settings())


def _stats(args: argparse.Namespace) -> int:
    cache = _open()
    try:
        stats = cache.stats()
    finally:
        cache.close()
    if args.json:
        print(json.dumps(asdict(stats)))
        return 0
    mib = 2**20
    print(f"call cache: {stats.where}")
    print(f"  {'entries':10s} {stats.entries:,} of at most {stats.max_entries:,}")
    print(f"  {'size':10s} {stats.bytes / mib:,.1f} MiB of at most {stats.max_bytes / mib:,.0f} MiB")
    print(f"  {'replays':10s} {stats.replays:,} (replies given back instead of calling, since made or cleared)")
    return 0


def _clear(args: argparse.Namespace) -> int:
    cache = _open()
    try:
        removed = cache.clear()
    finally:
        cache.close()
    print(f"call cache {cache.where}: {removed:,} replies removed")
    return 0
