from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lightmem_core.ingest import normalize_messages
from lightmem_core.timeparse import parse_time


def _norm(items, session_id=None):
    return normalize_messages(items, "u1", session_id, lambda sid: 0)


@pytest.mark.parametrize(
    ("items", "pattern"),
    [
        ("just a string", "messages: expected a list"),
        ([{"content": "hi"}], r"messages\[0\]\.role: missing"),
        ([{"role": "user"}], r"messages\[0\]\.content: missing"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], r"messages\[1\]\.role: unknown role 'robot'"),
        ([{"role": "user", "content": "a", "time_stamp": "yesterday-ish"}], r"messages\[0\]\.time_stamp: unparsable"),
        ([{"role": "user", "content": "a"}, 42], r"messages\[1\]: expected a dict"),
        ([{"role": "user", "content": 5}], r"messages\[0\]\.content: expected a string"),
        ([{"role": "user", "content": "a", "colour": "red"}], r"messages\[0\]: unknown field"),
    ],
)
def test_bad_input_names_item_and_field(items, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        _norm(items)


def test_empty_content_is_skipped_and_counted() -> None:
    batch = _norm([{"role": "user", "content": "  \n"}, {"role": "user", "content": "real"}], session_id="s")
    assert [m.content for m in batch.messages] == ["real"]
    assert len(batch.skipped_empty) == 1
    assert batch.messages[0].turn_index == 1  # the skipped turn still holds its place


def test_ids_are_stable_and_turns_numbered_per_session() -> None:
    items = [{"role": "user", "content": "a", "time_stamp": "2025-01-10"}, {"role": "assistant", "content": "b", "time_stamp": "2025-01-10"}]
    first, again = _norm(items), _norm(items)
    assert [m.id for m in first.messages] == [m.id for m in again.messages]
    assert [m.turn_index for m in first.messages] == [0, 1]
    assert first.messages[0].session_id == first.messages[1].session_id


def test_given_ids_and_speaker_are_kept() -> None:
    batch = _norm([{"role": "user", "content": "x", "id": "D1:3", "speaker_name": "Caroline"}])
    assert batch.messages[0].id == "D1:3" and batch.messages[0].speaker == "Caroline"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-10", datetime(2025, 1, 10, tzinfo=UTC)),
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("2023/05/20 (Sat) 02:21", datetime(2023, 5, 20, 2, 21, tzinfo=UTC)),
        ("2025-01-10T08:00:00+02:00", datetime(2025, 1, 10, 6, 0, tzinfo=UTC)),
    ],
)
def test_time_formats_and_naive_is_utc(text, expected) -> None:
    assert parse_time(text) == expected
