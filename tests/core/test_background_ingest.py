"""``LightMemory``'s background ingestion (``lightmem_core/inbox.py``): with a compressor or segmenter,
``add_memory`` keeps the call in the history and returns, and the ingest thread compresses every call
queued meanwhile in one pass.

The reference is the same input through ``background_ingest_sessions: 0`` (each call compressed and
buffered inside ``add_memory``): the entries, their provenance and the stored messages must be identical.
A gate around the compressor holds the ingest thread inside its first pass, so that what queues behind
it is known exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.errors import TransientError
from tests.sensory.conftest import conversation

MakeMemory = Callable[..., LightMemory]
MARKER = "zanzibarite"  # the failing compressor raises on any text that holds it


class Gate:
    """Wraps a memory's compressor: every pass is recorded (its sessions); while ``closed``, a pass waits
    inside the compressor, and a text holding ``MARKER`` raises while ``failing``."""

    def __init__(self, memory: LightMemory, closed: bool = False) -> None:
        compressor = memory.components.compressor
        assert compressor is not None
        self._inner = compressor.compress
        self._open = threading.Event()
        if not closed:
            self._open.set()
        self.entered = threading.Event()
        self.failing = False
        self.error: type[Exception] = RuntimeError
        self.passes: list[int] = []
        self.failed: list[int] = []  # sessions of the passes that raised
        compressor.compress = self  # type: ignore[method-assign]

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def __call__(self, texts: list[str], groups: list[str]) -> Any:
        self.entered.set()
        assert self._open.wait(60), "the test never opened the gate"
        if self.failing and any(MARKER in t for t in texts):
            self.failed.append(len(set(groups)))
            raise self.error("the compressor cannot read this text")
        self.passes.append(len(set(groups)))
        return self._inner(texts, groups)


def _config(tmp_path: Path, name: str, sessions: int) -> dict[str, Any]:
    """Compression (word frequencies: no model to load) and embedding topic segmentation; verbatim extraction."""
    return {"history_db_path": str(tmp_path / f"{name}.db"), "background_ingest_sessions": sessions,
            "embedding_retriever": {"model_name": "qdrant", "configs": {"path": str(tmp_path / f"{name}-q")}},
            "pre_compress": True, "pre_compressor": {"model_name": "entropy_compress", "configs": {
                "entropy_config": {"model_name": "wordfreq"}, "compress_config": {"rate": 0.6}}},
            "topic_segment": True, "topic_segmenter": {"model_name": "embedding"}}


def _sessions(user: str, count: int = 4, marked: int | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """``count`` sessions of 5 turns each from the two-topic conversation, one day apart."""
    turns = conversation()
    out = []
    for k in range(count):
        chunk = turns[5 * k : 5 * k + 5]
        tail = f" {MARKER}" if k == marked else ""
        messages = [{"role": role, "content": text + (tail if role == "user" else ""),
                     "time_stamp": f"2025-02-{k + 1:02d}T10:00:00Z"} for u, a in chunk for role, text in (("user", u), ("assistant", a))]
        out.append((f"{user}-s{k}", messages))
    return out


def _feed(memory: LightMemory, users: list[str], gate: Gate | None = None) -> list[dict[str, Any]]:
    """Every user's sessions, users interleaved; with a closed ``gate``, the first call's pass is inside
    the compressor before the others are added."""
    results = []
    for k in range(4):
        for user in users:
            session_id, messages = _sessions(user)[k]
            results.append(memory.add_memory(messages, user_id=user, session_id=session_id, force_segment=True))
            if gate is not None and len(results) == 1:
                assert gate.entered.wait(30)
    return results


def _stored(memory: LightMemory, user: str) -> dict[str, Any]:
    entries = sorted((e.id, e.memory, e.topic_id, e.session_id, tuple(e.source_ids)) for e in memory.get_all(user))
    messages = [(m["id"], m["compressed"], m["tokens_compressed"]) for m in memory.history.messages(user)]
    return {"entries": entries, "messages": messages}


def test_calls_queue_behind_a_pass_and_store_what_ingestion_in_add_memory_stores(make_memory: MakeMemory,
                                                                                  tmp_path: Path) -> None:
    users = ["ann", "bob"]
    reference = make_memory(**_config(tmp_path, "sync", 0))
    counted = Gate(reference)
    _feed(reference, users)
    for user in users:
        reference.flush(user)
    assert counted.passes == [1] * 8  # one pass a call, inside add_memory

    memory = make_memory(**_config(tmp_path, "background", 32))
    gate = Gate(memory, closed=True)
    results = _feed(memory, users, gate)  # all of them returned while the first pass waits in the gate
    assert [r["calls_queued"] for r in results[:2]] == [1, 1] and results[-1]["calls_queued"] == 4
    assert all(r["added_messages"] == 10 and r["entries_stored"] == 0 for r in results)
    assert memory.history.messages("ann") == []  # nothing compressed yet, but kept in the inbox
    reader: list[Any] = []
    waiting = threading.Thread(target=lambda: reader.append((memory.flush("bob"), memory.get_all("bob"))))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # a read waits for the user's queued calls...
    late = memory.add_memory([{"role": "user", "content": "I also bake bread on Sundays.",
                               "time_stamp": "2025-02-09T10:00:00Z"}], user_id="cyd", session_id="cyd-s0")
    assert late["calls_queued"] == 1  # ...with the lock released: others can still add meanwhile
    gate.open()
    waiting.join(60)
    assert not waiting.is_alive() and len(reader[0][1]) == 20  # every user message of bob's 4 sessions
    for user in users:
        memory.flush(user)
        assert _stored(memory, user) == _stored(reference, user)
    # The first call alone, then the other 7 queued calls (and cyd's) in one pass.
    assert gate.passes == [1, 8]
    memory.flush("cyd")
    assert [m["content"] for m in memory.history.messages("cyd")] == ["I also bake bread on Sundays."]
    assert len(memory.get_all("cyd")) == 1


def test_a_flush_that_does_not_wait_is_applied_in_its_place_behind_the_users_calls(make_memory: MakeMemory,
                                                                                   tmp_path: Path) -> None:
    """``flush(wait=False)`` returns at once; it is kept in the inbox like a call, and the ingest thread
    flushes the user after the calls queued before it and before those queued after it."""
    users = ["ann", "bob"]
    reference = make_memory(**_config(tmp_path, "sync", 0))
    for user in users:  # 4 sessions: the first 3 pass the threshold, the last stays for the flush
        for session_id, messages in _sessions(user):
            reference.add_memory(messages, user_id=user, session_id=session_id, force_segment=True)
        reference.flush(user)
    later_id, later = "ann-later", [{"role": "user", "content": "I also bake bread on Sundays.",
                                     "time_stamp": "2025-02-09T10:00:00Z"}]
    reference.add_memory(later, user_id="ann", session_id=later_id, force_segment=True)  # buffered, not flushed

    memory = make_memory(**_config(tmp_path, "background", 32))
    gate = Gate(memory, closed=True)
    for user in users:
        for session_id, messages in _sessions(user):
            memory.add_memory(messages, user_id=user, session_id=session_id, force_segment=True)
            assert gate.entered.wait(30)
        assert memory.flush(user, wait=False) == 0  # returned while the first pass waits in the gate
    memory.add_memory(later, user_id="ann", session_id=later_id, force_segment=True)
    queued = [payload for _, payload in memory.history.buffer_items("ann", "inbox")]
    assert [p["flush"] for p in queued] == [False] * 4 + [True, False]  # kept in the history, in order
    gate.open()
    memory.wait()
    for user in users:
        assert _stored(memory, user) == _stored(reference, user)
        assert memory.history.buffer_items(user, "inbox") == []
    assert memory.state.info("ann").segments == reference.state.info("ann").segments > 0  # the later session
    assert memory.state.info("bob").segments == 0


def test_calls_without_message_ids_in_one_session_keep_their_turns_apart(make_memory: MakeMemory,
                                                                         tmp_path: Path) -> None:
    """Turn indices (and the ids made of them) count the session's queued messages too."""
    memory = make_memory(**_config(tmp_path, "turns", 32))
    gate = Gate(memory, closed=True)
    first, second = conversation()[:2]
    for k, (user, assistant) in enumerate((first, second)):
        memory.add_memory([{"role": "user", "content": user, "time_stamp": "2025-02-01T10:00:00Z"},
                           {"role": "assistant", "content": assistant, "time_stamp": "2025-02-01T10:00:00Z"}],
                          session_id="s1")
        if k == 0:
            assert gate.entered.wait(30)
    known = {"role": "user", "content": "Is the oven hot enough now?", "time_stamp": "2025-02-01T10:00:00Z", "id": "m-9"}
    assert memory.add_memory([known], session_id="s2")["added_messages"] == 1
    assert memory.add_memory([known], session_id="s2")["skipped_known"] == 1  # queued already: known
    gate.open()
    memory.flush()
    stored = memory.history.messages("default", "s1")
    assert [m["turn_index"] for m in stored] == [0, 1, 2, 3]
    assert [m["content"] for m in stored] == [first[0], first[1], second[0], second[1]]
    assert [m["id"] for m in memory.history.messages("default", "s2")] == ["m-9"]


def test_a_transient_failure_is_raised_to_the_next_call_that_waits_and_tried_again(make_memory: MakeMemory,
                                                                                  tmp_path: Path) -> None:
    """One user's call meets a transient error: that user alone is held, the error is raised once, nothing
    is lost, and once the compressor reads it the calls go through."""
    memory = make_memory(**_config(tmp_path, "failing", 32))
    gate = Gate(memory, closed=True)
    gate.failing, gate.error = True, TransientError
    warm_up, messages = _sessions("ann")[0]
    memory.add_memory(messages, user_id="warm", session_id=warm_up, force_segment=True)
    assert gate.entered.wait(30)
    for user, marked in (("ann", 0), ("bob", None)):  # queued behind the gate: one pass for both
        for session_id, session in _sessions(user, 2, marked):
            memory.add_memory(session, user_id=user, session_id=session_id, force_segment=True)
    gate.open()
    memory.flush("bob")
    assert len(memory.get_all("bob")) == 10  # bob's calls were tried alone and went through
    gate.close()  # the retry that follows the error waits in the gate
    with pytest.raises(TransientError, match="cannot read"):
        memory.flush("ann")
    assert memory.history.messages("ann") == [] and memory.history.counters("ann").get("messages_in", 0) == 0
    assert len(memory.history.buffer_items("ann", "inbox")) == 2  # both calls kept, in order
    assert memory.history.failures("ann") == []
    gate.failing = False
    gate.open()
    memory.flush("ann")
    assert len(memory.get_all("ann")) == 10 and len(memory.history.messages("ann")) == 20
    assert memory.history.buffer_items("ann", "inbox") == []


def test_a_call_that_fails_for_good_is_kept_for_retry_failed_and_the_user_goes_on(make_memory: MakeMemory,
                                                                                 tmp_path: Path) -> None:
    """Any other error would come back every time: the call leaves the inbox for the failed calls (a
    failure record without its text), the error is raised once, the user's calls before and after it
    are stored, and ``retry_failed`` takes it back once the compressor reads it."""
    memory = make_memory(**_config(tmp_path, "for-good", 32))
    gate = Gate(memory, closed=True)
    gate.failing = True
    warm_up, messages = _sessions("warm")[0]
    memory.add_memory(messages, user_id="warm", session_id=warm_up, force_segment=True)
    assert gate.entered.wait(30)
    sessions = _sessions("ann", 3, marked=1)
    for session_id, session in sessions:  # one pass: s0 is buffered, s1 fails, s2 waits behind it
        memory.add_memory(session, user_id="ann", session_id=session_id, force_segment=True)
    gate.open()
    with pytest.raises(RuntimeError, match="cannot read"):
        memory.flush("ann")
    assert gate.failed == [3, 1]  # the pass of ann's three calls, then s1 alone
    memory.flush("ann")  # raised once: the user goes on
    assert {m["session_id"] for m in memory.history.messages("ann")} == {"ann-s0", "ann-s2"}
    assert len(memory.get_all("ann")) == 10
    assert memory.history.buffer_items("ann", "inbox") == []
    [failure] = memory.history.failures("ann")
    assert failure["purpose"] == "ingest" and failure["reason"] == "RuntimeError: the compressor cannot read this text"
    assert MARKER not in failure["payload"] and len(json.loads(failure["payload"])["message_ids"]) == 10
    # a new call in the failed call's session takes turns after the failed ones, so its ids stay apart
    extra = memory.add_memory([{"role": "user", "content": "One more thing about the trip.",
                                "time_stamp": "2025-02-02T11:00:00Z"}], user_id="ann", session_id="ann-s1")
    assert extra["added_messages"] == 1
    with pytest.raises(RuntimeError, match="cannot read"):  # the cause is still there: kept again
        memory.retry_failed("ann")
    assert len(memory.history.failures("ann")) == 1 and len(memory.history.buffer_items("ann", "inbox_failed")) == 1
    gate.failing = False
    assert memory.retry_failed("ann")["calls_retried"] == 1
    memory.flush("ann")
    assert memory.history.failures("ann") == [] and memory.history.buffer_items("ann", "inbox_failed") == []
    assert len(memory.history.messages("ann")) == 31 and len(memory.get_all("ann")) == 16


CHILD = """
import json, sys, threading
from lightmem_core import LightMemory
from lightmem_core.errors import TransientError
memory = LightMemory.from_config(json.loads(sys.argv[1]))
memory.components.compressor.compress = lambda texts, groups: threading.Event().wait()  # never returns
for session_id, messages in json.loads(sys.argv[2]):
    print(memory.add_memory(messages, user_id="ann", session_id=session_id, force_segment=True)["calls_queued"],
          flush=True)
threading.Event().wait()
"""


def test_calls_of_a_killed_program_are_ingested_when_the_history_opens_again(
        make_memory: MakeMemory, memory_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    config = memory_config(**_config(tmp_path, "killed", 32))
    sessions = _sessions("ann")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config), json.dumps(sessions)],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parents[2])
    try:
        assert child.stdout is not None
        queued = [int(child.stdout.readline()) for _ in sessions]  # add_memory returned for every session
        assert queued[-1] >= 3
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    reopened = make_memory(**_config(tmp_path, "killed", 32))
    reopened.flush("ann")
    reference = make_memory(**_config(tmp_path, "reference", 32))
    for session_id, messages in sessions:
        reference.add_memory(messages, user_id="ann", session_id=session_id, force_segment=True)
    reference.flush("ann")
    assert _stored(reopened, "ann") == _stored(reference, "ann")
    assert len(reopened.get_all("ann")) == 20


def test_deleting_a_user_drops_the_calls_held_by_an_error(make_memory: MakeMemory, tmp_path: Path) -> None:
    """Forgetting a user neither waits on nor raises the error that holds the user's queued calls, and
    nothing of them comes back once the compressor reads again."""
    memory = make_memory(**_config(tmp_path, "forget", 32))
    gate = Gate(memory)
    gate.failing, gate.error = True, TransientError
    for session_id, session in _sessions("ann", 2, marked=0):
        memory.add_memory(session, user_id="ann", session_id=session_id, force_segment=True)
    for session_id, session in _sessions("bob", 1):
        memory.add_memory(session, user_id="bob", session_id=session_id, force_segment=True)
    memory.flush("bob")
    assert gate.failed and memory.history.buffer_items("ann", "inbox") != []
    memory.delete_all("ann")  # the held TransientError is not raised
    assert memory.history.buffer_items("ann", "inbox") == [] and memory.history.messages("ann") == []
    gate.failing = False
    memory.flush("ann")
    assert memory.get_all("ann") == [] and memory.history.messages("ann") == []
    assert len(memory.get_all("bob")) == 5
