"""Property: any input the fuzzer can build gets either success or a ``ValueError`` naming what is
wrong, from the producer and from ``add_memory``, and a rejected call stores nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lightmem_core import LightMemory, parse_config
from lightmem_core.factory import build_components
from producers.sdk import MemoryProducer
from workers.launch import LocalCluster
from workers.settings import DistributedSettings

pytestmark = pytest.mark.integration
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=8))
stamps = st.one_of(scalars, st.datetimes(timezones=st.sampled_from([None, UTC])),
                   st.sampled_from(["2025-01-10", "1:56 pm on 8 May, 2023", "2023/05/20 (Sat) 02:21", "yesterday"]))
turn = st.one_of(
    scalars,
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "robot", 3]),
                           "content": st.one_of(st.text(max_size=40), scalars)},
                          optional={"time_stamp": stamps, "timestamp": stamps, "id": scalars,
                                    "speaker_name": scalars, "session_id": scalars, "mood": scalars}),
)
turns = st.one_of(scalars, st.lists(turn, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=3))
session = st.one_of(turns, st.fixed_dictionaries({"turns": turns}, optional={"session_id": scalars, "time_stamp": stamps}))
user_ids = st.one_of(scalars, st.sampled_from(["alice", "bob"]))


def _queued(producer: MemoryProducer) -> int:
    return int(producer.state.r.llen(producer.settings.queue("compress")))


def _queued_once_or_rejected(producer: MemoryProducer, call: Callable[[], object]) -> None:
    """``call`` queues exactly one task, or raises ``ValueError`` and queues nothing; anything else fails."""
    before = _queued(producer)
    try:
        call()
    except ValueError:
        assert _queued(producer) == before  # nothing of a rejected call is queued
        return
    assert _queued(producer) == before + 1


@pytest.fixture(scope="module")
def producer(redis_cluster: LocalCluster) -> Iterator[MemoryProducer]:
    """A producer on the real Redis with its own queues, which no worker reads."""
    tag = f"fuzz{time.time_ns()}"
    built = MemoryProducer(DistributedSettings(redis_url=redis_cluster.redis_url, key_prefix=tag,
                                               **{f"queue_{r}": f"{tag}.{r}" for r in ("compress", "extract",
                                                                                        "store", "update")}))
    yield built
    built.close()


@EXAMPLES
@given(user_id=user_ids, one=session, session_id=scalars)
def test_enqueue_session_raises_only_value_error(producer: MemoryProducer, user_id: Any, one: Any,
                                                 session_id: Any) -> None:
    _queued_once_or_rejected(producer, lambda: producer.enqueue_session(user_id, one, session_id))


@EXAMPLES
@given(user_id=user_ids, session_id=scalars, many=turns)
def test_enqueue_turns_raises_only_value_error(producer: MemoryProducer, user_id: Any, session_id: Any,
                                               many: Any) -> None:
    _queued_once_or_rejected(producer, lambda: producer.enqueue_turns(user_id, session_id, many))


@EXAMPLES
@given(sessions=st.one_of(scalars, st.lists(st.one_of(scalars, st.tuples(user_ids, session, scalars)), max_size=3)))
def test_enqueue_sessions_raises_only_value_error(producer: MemoryProducer, sessions: Any) -> None:
    _queued_once_or_rejected(producer, lambda: producer.enqueue_sessions(sessions))


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, minilm_embedder: Any) -> Iterator[LightMemory]:
    folder: Path = tmp_path_factory.mktemp("fuzz-memory")
    config = parse_config({"memory_manager": {"model_name": "verbatim"}, "history_db_path": str(folder / "h.db"),
                           "embedding_retriever": {"model_name": "qdrant", "configs": {"path": str(folder / "q")}}})
    built = LightMemory(config, build_components(config, embedder=minilm_embedder))
    yield built
    built.close()


def _stored(memory: LightMemory) -> tuple[int, int, int]:
    users = memory.history.users()
    return (sum(len(memory.history.messages(u)) for u in users), sum(len(memory.get_all(u)) for u in users),
            sum(len(memory.state.buffered(u)) for u in ["alice", "bob", *users]))


@EXAMPLES
@given(messages=st.one_of(turn, turns), user_id=user_ids, session_id=scalars,
       force=st.booleans())
@example(messages=[{"role": "user", "content": "hi", "time_stamp": 10**20}], user_id="alice", session_id=None,
         force=False)  # epoch seconds past what datetime holds (was an OverflowError)
@example(messages=[{"role": "user", "content": "hi", "time_stamp": float("nan")}], user_id="alice", session_id=None,
         force=False)
def test_add_memory_raises_only_value_error_and_keeps_nothing(memory: LightMemory, messages: Any, user_id: Any,
                                                             session_id: Any, force: bool) -> None:
    before = _stored(memory)
    try:
        memory.add_memory(messages, force_extract=force, user_id=user_id, session_id=session_id)
    except ValueError:
        assert _stored(memory) == before  # nothing of a rejected call is kept
