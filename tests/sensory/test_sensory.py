"""The sensory buffer: capacity, session boundaries, force_segment, persistence across a restart."""

from __future__ import annotations

from typing import Any

import pytest

from lightmem_core.models import Message
from lightmem_core.sensory.buffer import SENSORY, feed
from tests.sensory.conftest import as_messages, conversation


class CutAtHash:
    """A segmenter that opens a topic at every message whose text starts with '#'."""

    def boundaries(self, messages: list[Message]) -> list[int]:
        return [i for i, m in enumerate(messages) if i and m.content.startswith("#")]


def msg(i: int, text: str, session: str = "s1", role: str = "user") -> Message:
    return Message(id=f"{session}-{i}", user_id="u", session_id=session, turn_index=i, role=role, content=text,
                   time_stamp=f"2025-01-10T10:{i:02d}:00Z")


def words(text: str) -> int:
    return len(text.split())


ROLES = {"user"}


def test_buffer_cuts_when_full_and_keeps_the_tail() -> None:
    incoming = [msg(0, "a b c"), msg(1, "d e f"), msg(2, "# g h"), msg(3, "i j k"), msg(4, "l m n")]
    out = feed([], incoming, CutAtHash(), capacity_tokens=10, roles=ROLES, count=words)
    assert [[m.id for m in s] for s in out.segments] == [["s1-0", "s1-1"]]
    assert [m.id for m in out.remaining] == ["s1-2", "s1-3", "s1-4"]


def test_without_any_boundary_a_full_buffer_is_emitted_whole() -> None:
    incoming = [msg(i, "x y z") for i in range(5)]
    out = feed([], incoming, CutAtHash(), capacity_tokens=7, roles=ROLES, count=words)
    assert all(len(s) == 2 for s in out.segments)
    assert sum(len(s) for s in out.segments) + len(out.remaining) == 5


def test_only_used_roles_count_and_alternation_is_not_assumed() -> None:
    incoming = [msg(0, "sys " * 50, role="system"), msg(1, "a b"), msg(2, "c d"), msg(3, "tool " * 40, role="tool"),
                msg(4, "assistant " * 40, role="assistant"), msg(5, "e f")]
    out = feed([], incoming, CutAtHash(), capacity_tokens=10, roles=ROLES, count=words)
    assert out.segments == [] and len(out.remaining) == 6


def test_segments_never_cross_a_session_boundary() -> None:
    buffered = [msg(0, "a b", "s1"), msg(1, "# c d", "s1")]
    incoming = [msg(0, "e f", "s2"), msg(1, "g h", "s2")]
    out = feed(buffered, incoming, CutAtHash(), capacity_tokens=100, roles=ROLES, count=words)
    assert [[m.id for m in s] for s in out.segments] == [["s1-0"], ["s1-1"]]
    assert {m.session_id for m in out.remaining} == {"s2"}


def test_force_flushes_the_tail_without_losing_earlier_segments() -> None:
    incoming = [msg(0, "a b c"), msg(1, "# d e f"), msg(2, "# g h i"), msg(3, "# j k l"), msg(4, "m n")]
    out = feed([], incoming, CutAtHash(), capacity_tokens=7, roles=ROLES, count=words, force=True)
    flat = [m.id for s in out.segments for m in s]
    assert flat == [m.id for m in incoming]  # everything, once, in order
    assert len(out.segments) >= 4 and out.remaining == []


@pytest.mark.usefixtures("history_backend")
def test_lightmemory_keeps_the_sensory_buffer_across_a_restart(make_memory: Any) -> None:
    settings = {"topic_segment": True, "topic_segmenter": {"model_name": "embedding",
                "configs": {"sensory_buffer_tokens": 4000}}, "extract_threshold": 1.0}
    memory = make_memory(**settings)
    turns = conversation()
    for k, (user, assistant) in enumerate(turns[:12]):
        memory.add_memory([{"role": "user", "content": user, "time_stamp": "2025-01-10T10:00:00Z"},
                           {"role": "assistant", "content": assistant, "time_stamp": "2025-01-10T10:00:00Z"}],
                          session_id="s1", user_id="alice")
        assert memory.get_all("alice") == [], k
    assert len(memory.history.buffer_items("alice", SENSORY)) == 24
    memory.close()

    again = make_memory(**settings)  # same history and Qdrant folder: a restart
    for user, assistant in turns[12:]:
        again.add_memory([{"role": "user", "content": user, "time_stamp": "2025-01-10T10:00:00Z"},
                          {"role": "assistant", "content": assistant, "time_stamp": "2025-01-10T10:00:00Z"}],
                         session_id="s1", user_id="alice")
    again.add_memory([], session_id="s1", user_id="alice", force_segment=True, force_extract=True)
    assert again.history.buffer_items("alice", SENSORY) == []
    entries = again.get_all("alice")
    users = [m for m in as_messages(turns) if m.role == "user"]
    assert sorted(e.memory for e in entries) == sorted(m.content for m in users)  # nothing lost
    topic = {e.memory: e.topic_id for e in entries}
    cooking, cars = {topic[m.content] for m in users[:9]}, {topic[m.content] for m in users[11:]}
    assert cooking.isdisjoint(cars)  # the topic change was cut
