"""The call cache (``kv_cache``): the store contract on every backend, the client wrapper, and the
library re-running its whole pipeline against the scripted server for no LLM call at all."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lightmem_core import ConfigError, LightMemory, parse_config
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.errors import ExtractionParseError, TransientError
from lightmem_core.extraction.llm import LLMExtractor
from lightmem_core.factory import build_components, build_llm_client, build_reply_cache
from lightmem_core.history import HistoryStore
from lightmem_core.history.postgres import PostgresDatabase
from lightmem_core.history.sqlite import SQLiteDatabase
from lightmem_core.llm import ChatMessage, ScriptedClient
from lightmem_core.llm.cache import CachedReply, CachingClient, MemoryReplyCache, ReplyCache, cache_key
from lightmem_core.llm.cache_sql import SQLReplyCache
from lightmem_core.models import Message, TopicSegment
from producers.scripted_llm import ScriptedLLMServer
from tests.llm.conftest import llm_config

PARAMS = {"backend": "openai", "model": "gpt-4o-mini", "temperature": 0.0, "top_p": None, "max_tokens": 4096}
HELLO: list[ChatMessage] = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "hello"}]


def reply(text: str, size: int = 0) -> CachedReply:
    return CachedReply(text + "x" * size, "m", 10, 2)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def reply_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ReplyCache]]:
    """Makes caches with given bounds on one backend; each backend runs the same contract."""
    made: list[ReplyCache] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

    def make(max_entries: int = 1000, max_bytes: int = 2**20) -> ReplyCache:
        cache: ReplyCache
        if request.param == "memory":
            cache = MemoryReplyCache(max_entries, max_bytes)
        elif url is None:
            cache = SQLReplyCache(SQLiteDatabase(str(tmp_path / "kv_cache.db")), max_entries, max_bytes)
        else:
            cache = SQLReplyCache(PostgresDatabase(url), max_entries, max_bytes)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


def test_hit_miss_first_reply_kept_delete_and_clear(reply_cache: Callable[..., ReplyCache]) -> None:
    cache = reply_cache()
    assert cache.get("k1") is None
    cache.put("k1", reply('{"facts": ["é"]}'))
    cache.put("k1", reply("another"))  # a key already there keeps its reply
    assert cache.get("k1") == reply('{"facts": ["é"]}')  # lossless, unicode included
    cache.put("k2", reply("two"))
    stats = cache.stats()
    assert (stats.entries, stats.replays) == (2, 1) and stats.bytes == sum(len(reply(t).dumps().encode())
                                                                          for t in ('{"facts": ["é"]}', "two"))
    cache.delete("k1")
    cache.delete("k1")  # twice: nothing
    assert cache.get("k1") is None and cache.stats().entries == 1
    assert cache.clear() == 1 and cache.stats().entries == 0 and cache.stats().bytes == 0


def test_the_bound_evicts_the_least_recently_used(reply_cache: Callable[..., ReplyCache]) -> None:
    cache = reply_cache(max_entries=10)
    for n in range(10):
        cache.put(f"k{n}", reply(str(n)))
    assert cache.get("k0") is not None  # used now: the least recently used is k1
    cache.put("k10", reply("10"))  # past the bound: down to nine tenths
    assert cache.get("k1") is None and cache.get("k2") is None and cache.get("k0") is not None
    assert cache.stats().entries == 9
    by_size = reply_cache(max_entries=1000, max_bytes=1000)  # a bound in bytes as well
    for n in range(20):
        by_size.put(f"b{n}", reply(str(n), size=100))
    stats = by_size.stats()
    assert stats.bytes <= 1000 and stats.entries < 20 and by_size.get("b19") is not None


def test_the_key_holds_model_parameters_json_mode_and_the_exact_messages() -> None:
    base = cache_key(PARAMS, HELLO, json_mode=True)
    same: list[ChatMessage] = [{"role": m["role"], "content": m["content"]} for m in HELLO]
    assert base == cache_key(dict(reversed(PARAMS.items())), same, json_mode=True)
    changed = [cache_key({**PARAMS, "model": "gpt-4o"}, HELLO, True), cache_key({**PARAMS, "temperature": 0.7}, HELLO, True),
               cache_key({**PARAMS, "max_tokens": 100}, HELLO, True), cache_key(PARAMS, HELLO, False),
               cache_key(PARAMS, [HELLO[0], {"role": "user", "content": "hello "}], True)]
    assert len({base, *changed}) == 6


def test_a_hit_is_replayed_and_recorded_apart_from_calls(tmp_path: Path) -> None:
    history = HistoryStore(":memory:")
    inner = ScriptedClient(respond=lambda _: '{"facts": []}')
    client = CachingClient(inner, MemoryReplyCache(), PARAMS, history)
    first = client.complete(HELLO, json_mode=True)
    again = client.complete(HELLO, json_mode=True)
    other = client.complete(HELLO, json_mode=False)  # JSON mode is part of the key
    assert len(inner.calls) == 2 and not first.from_cache and again.from_cache and not other.from_cache
    assert again.text == first.text
    totals = history.llm_totals()
    assert totals["calls"] == 0 and totals["cache_hits"] == 1  # the inner calls are accounted inside the stack
    history.close()


def test_replies_that_are_not_valid_are_not_kept() -> None:
    cache = MemoryReplyCache()
    inner = ScriptedClient(["{broken", "", "[1, 2]", "plain text is fine"])
    client = CachingClient(inner, cache, PARAMS)
    for json_mode in (True, True, True, False):
        client.complete(HELLO, json_mode=json_mode)
    assert cache.stats().entries == 1  # only the text-mode reply


SEGMENT = TopicSegment(user_id="u", session_id="s", topic_id=1, messages=[
    Message(id="a", user_id="u", session_id="s", turn_index=0, role="user", content="I moved to Lyon.",
            time_stamp="2025-01-01T09:00:00Z", speaker="Ann")])
VALID = json.dumps({"facts": [{"text": "Ann moved to Lyon.", "source_ids": ["m1"]}]})
WRONG_REF = json.dumps({"facts": [{"text": "Ann moved to Lyon.", "source_ids": ["m9"]}]})  # JSON, invalid


def test_a_reply_that_fails_its_schema_is_taken_out_where_it_is_parsed() -> None:
    cache = MemoryReplyCache()
    scripted = ScriptedClient([WRONG_REF, VALID])  # invalid, then a valid repair
    LLMExtractor(CachingClient(scripted, cache, PARAMS), {"user"}).extract([SEGMENT])
    assert len(scripted.calls) == 2 and cache.stats().entries == 1  # the repair's reply only
    again = ScriptedClient([VALID])
    [entry] = LLMExtractor(CachingClient(again, cache, PARAMS), {"user"}).extract([SEGMENT])
    assert len(again.calls) == 1 and entry.memory == "Ann moved to Lyon."  # the invalid reply was not replayed
    last = ScriptedClient()
    LLMExtractor(CachingClient(last, cache, PARAMS), {"user"}).extract([SEGMENT])
    assert last.calls == []  # now a hit
    bad_twice = ScriptedClient(respond=lambda _: WRONG_REF)
    with pytest.raises(ExtractionParseError):
        LLMExtractor(CachingClient(bad_twice, MemoryReplyCache(), PARAMS), {"user"}).extract([SEGMENT])


class Unreachable(MemoryReplyCache):
    def get(self, key: str) -> CachedReply | None:
        raise TransientError("cache down")

    def put(self, key: str, reply: CachedReply) -> None:
        raise TransientError("cache down")


def test_an_unreachable_cache_costs_calls_not_results(caplog: pytest.LogCaptureFixture) -> None:
    inner = ScriptedClient(respond=lambda _: "fine")
    client = CachingClient(inner, Unreachable(), PARAMS)
    assert client.complete(HELLO).text == client.complete(HELLO).text == "fine"
    assert len(inner.calls) == 2 and "unreachable" in caplog.text


def _hammer(path: str, worker: int, rounds: int) -> None:
    """One process's share of concurrent puts, gets and deletes on one SQLite cache (keys overlap)."""
    cache = SQLReplyCache(SQLiteDatabase(path), max_entries=50)
    for n in range(rounds):
        key = f"k{(n * 7 + worker) % 80}"
        cache.put(key, reply(key, size=n % 5))
        cache.get(f"k{n % 80}")
        if n % 11 == worker:
            cache.delete(key)
    cache.close()


def test_processes_and_threads_share_one_sqlite_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "kv_cache.db")
    SQLReplyCache(SQLiteDatabase(path), max_entries=50).close()
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_hammer, args=(path, w, 300)) for w in range(2)]
    threads = [threading.Thread(target=_hammer, args=(path, w, 300)) for w in (2, 3)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = SQLReplyCache(SQLiteDatabase(path), max_entries=50)
    stats = cache.stats()
    db = SQLiteDatabase(path)
    with db.connection() as conn:
        row = conn.execute("SELECT COUNT(*) AS n, COALESCE(SUM(size),0) AS b FROM llm_cache")[0]
    db.close()
    assert (stats.entries, stats.bytes) == (row["n"], row["b"]) and 0 < stats.entries <= 50  # totals stay exact
    cache.close()


def test_configuration_where_the_cache_lives(tmp_path: Path) -> None:
    cfg = llm_config(tmp_path, "http://127.0.0.1:9/v1", kv_cache=True, kv_cache_path=str(tmp_path / "c.db"),
                     kv_cache_max_entries=7)
    cache = build_reply_cache(parse_config(cfg))
    assert isinstance(cache, SQLReplyCache) and cache.where.endswith("c.db") and cache.max_entries == 7
    cache.close()
    assert build_reply_cache(parse_config({**cfg, "kv_cache": False})) is None
    assert build_reply_cache(parse_config({**cfg, "memory_manager": {"model_name": "verbatim"}})) is None
    with pytest.raises(ConfigError, match="workers"):
        build_reply_cache(parse_config({**cfg, "kv_cache_url": "redis://127.0.0.1:6379/0"}))
    with pytest.raises(ConfigError, match="kv_cache_url") as caught:
        parse_config({**cfg, "kv_cache_url": "mysql://user:s3cret@host/db"})
    assert "s3cret" not in str(caught.value)
    client = build_llm_client(parse_config(cfg))
    assert isinstance(client, CachingClient) and client.params["model"] == "gpt-4o-mini"
    client.close()


SESSIONS = [
    [{"role": "user", "speaker_name": "Ann", "content": f"On day {d} I went kayaking on the lake with my sister.",
      "time_stamp": f"2025-03-0{d}T10:00:00Z"},
     {"role": "user", "speaker_name": "Ann", "content": f"The lake was cold on day {d} and my sister liked it.",
      "time_stamp": f"2025-03-0{d}T10:01:00Z"}]
    for d in range(1, 5)
]


def _run(memory: LightMemory) -> list[tuple[str, tuple[str, ...]]]:
    """Ingest, extract, then the offline update; what the user's memory holds afterwards."""
    for n, session in enumerate(SESSIONS):
        memory.add_memory(session, user_id="ann", session_id=f"s{n}", force_extract=True)
    memory.construct_update_queue_all_entries()
    memory.offline_update_all_entries(score_threshold=0.0)
    return sorted((e.memory, tuple(e.source_ids)) for e in memory.get_all("ann"))


def test_the_library_runs_again_from_the_cache_for_no_llm_call(tmp_path: Path) -> None:
    """A cold run calls the model; the same run again (new history and store, the same kv_cache_path)
    replays every reply, extraction and offline update alike, and ends in the same memory."""
    with ScriptedLLMServer() as server:
        server.update_actions = "mixed"  # updates, deletes and ignores, repeatably
        results, stats = [], []
        for run in ("cold", "again"):
            folder = tmp_path / run
            cfg = parse_config(llm_config(folder, server.base_url, kv_cache=True, kv_cache_path=str(tmp_path / "kv.db"),
                                          metadata_generate=True, text_summary=True))
            memory = LightMemory(cfg, build_components(cfg, embedder=HashingEmbedder(64)))
            results.append(_run(memory))
            stats.append(memory.get_token_statistics("ann"))
            memory.close()
            if run == "cold":
                cold_requests = len(server.requests)
        assert cold_requests > 4 and len(server.requests) == cold_requests  # the second run sent nothing
    cold, again = stats
    assert results[0] == results[1]
    assert cold["llm_calls"] == cold_requests and cold["llm_cache_hits"] == 0
    assert again["llm_calls"] == 0 and again["llm_cache_hits"] == cold["llm_calls"]
    assert again["llm_cache_saved_tokens"] == cold["llm_prompt_tokens"] + cold["llm_completion_tokens"]
    assert cold["llm_cached_tokens"] > 0  # the provider's prefix cache: the system prompt repeats


def test_the_history_database_holds_the_cache_for_workers_on_several_hosts(postgres_url: str, tmp_path: Path) -> None:
    cfg = parse_config(llm_config(tmp_path, "http://127.0.0.1:9/v1", kv_cache=True, history_db_url=postgres_url))
    first, second = build_reply_cache(cfg), build_reply_cache(cfg)
    assert isinstance(first, SQLReplyCache) and isinstance(second, SQLReplyCache) and "postgresql" in first.where
    first.put("k", reply("shared"))
    assert second.get("k") == reply("shared")
    first.close()
    second.close()


def test_lightmem_cache_stats_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from producers.cli import main
    from workers.settings import get_settings

    path = tmp_path / "kv.db"
    for key, value in {"KV_CACHE": "true", "KV_CACHE_PATH": str(path), "KV_CACHE_MAX_ENTRIES": "50",
                       "MEMORY_MANAGER__MODEL_NAME": "openai", "MEMORY_MANAGER__CONFIGS__API_KEY": "sk-test"}.items():
        monkeypatch.setenv(f"LIGHTMEM_MEMORY__{key}", value)
    get_settings.cache_clear()
    try:
        cache = SQLReplyCache(SQLiteDatabase(str(path)))
        cache.put("k", reply("stored"))
        cache.get("k")
        cache.close()
        assert main(["cache", "stats", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert (stats["entries"], stats["replays"], stats["max_entries"]) == (1, 1, 50) and stats["where"] == str(path)
        assert main(["cache", "stats"]) == 0 and "1 of at most 50" in capsys.readouterr().out
        assert main(["cache", "clear"]) == 0 and "1 replies removed" in capsys.readouterr().out
        monkeypatch.setenv("LIGHTMEM_MEMORY__KV_CACHE", "false")
        get_settings.cache_clear()
        assert main(["cache", "stats"]) == 0  # off: it still shows (and clears) what is there
        out = capsys.readouterr().out
        assert "kv_cache is off" in out and "0 of at most 50" in out
    finally:
        get_settings.cache_clear()


def test_lightmem_stats_shows_provider_cached_tokens_and_replays() -> None:
    from producers.commands.distributed import stats_table

    workers = {"messages_in": 1000.0, "llm_calls": 10.0, "llm_prompt_tokens": 5000.0, "llm_cached_tokens": 3000.0,
               "llm_cache_hits": 4.0}
    rows = dict(stats_table(workers, {}))
    assert rows["LLM calls per 1,000 turns"] == 10 and rows["LLM prompt tokens cached by the provider"] == 3000
    assert rows["LLM replies replayed from the call cache"] == 4
    replays_only = dict(stats_table({"messages_in": 10.0, "llm_cache_hits": 3.0}, {"calls": 99.0}))
    assert replays_only["LLM calls per 1,000 turns"] == 0 and replays_only["LLM replies replayed from the call cache"] == 3
    history = dict(stats_table({"messages_in": 10.0}, {"calls": 2.0, "cached_tokens": 7.0, "cache_hits": 1.0}))
    assert history["LLM prompt tokens cached by the provider"] == 7 and history["LLM replies replayed from the call cache"] == 1
