"""Dataset loaders on the real files, their quirks, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightmem_core.errors import InvalidInput
from lightmem_core.ingest import normalize_messages
from producers.datasets import Conversation, Question, load_dataset, load_jsonl, load_locomo, load_longmemeval


def _questions(convs: list[Conversation]) -> dict[str, Question]:
    return {q.question_id: q for c in convs for q in c.questions}


def test_locomo_counts(locomo: list[Conversation]) -> None:
    assert len(locomo) == 10
    assert sum(len(c.sessions) for c in locomo) == 272
    assert sum(c.turn_count for c in locomo) == 5882
    assert sum(len(c.questions) for c in locomo) == 1986
    assert sum(1 for c in locomo for q in c.questions if q.category != "5") == 1540


def test_locomo_one_scope_per_conversation_with_speaker_names(locomo: list[Conversation]) -> None:
    conv = locomo[0]
    assert conv.user_id == "conv-26"
    first = conv.sessions[0]
    assert first.session_id == "conv-26:session_1"
    assert first.messages[0] == {
        "role": "user", "content": "Hey Mel! Good to see you! How have you been?",
        "time_stamp": "2023-05-08T13:56:00+00:00", "speaker_name": "Caroline", "id": "conv-26:D1:1",
    }
    ids = [m["id"] for c in locomo for s in c.sessions for m in s.messages]
    assert len(ids) == len(set(ids))


def test_locomo_messages_are_what_add_memory_accepts(locomo: list[Conversation]) -> None:
    for session in locomo[0].sessions:
        batch = normalize_messages(session.messages, session.user_id, session.session_id, lambda _sid: 0)
        assert [m.id for m in batch.messages] == [m["id"] for m in session.messages]


def test_locomo_image_turns_keep_text_and_caption(locomo: list[Conversation], data_dir: Path) -> None:
    turn = locomo[0].sessions[0].messages[4]
    assert turn["content"].startswith("The transgender stories were so inspiring!")
    assert turn["content"].endswith("[shares a photo: a photo of a dog walking past a wall with a painting of a woman]")
    plain = load_locomo(data_dir / "locomo10.json", include_captions=False)
    assert "shares a photo" not in plain[0].sessions[0].messages[4]["content"]


def test_locomo_quirks(locomo: list[Conversation]) -> None:
    conv26 = locomo[0]
    # conv-26 has date keys for sessions 20–35 without turns: they are not sessions.
    assert len(conv26.sessions) == 19
    qs = _questions(locomo)
    children = next(q for q in qs.values() if q.question == "How many children does Melanie have?")
    assert children.answer == "3"  # a number in the file
    assert all(isinstance(q.answer, str) for q in qs.values())
    without = [q for q in qs.values() if not q.evidence_ids and not q.dangling_evidence]
    assert len(without) == 4
    dangling = sorted(d for q in qs.values() for d in q.dangling_evidence)
    assert dangling == ["D", "conv-42:D10:19", "conv-47:D4:36"]
    adversarial = [q for q in qs.values() if q.category == "5"]
    assert len(adversarial) == 446 and all(q.adversarial_answer for q in adversarial)


def test_locomo_malformed_evidence_ids_are_normalised(locomo: list[Conversation]) -> None:
    every = {m["id"] for c in locomo for s in c.sessions for m in s.messages}
    for q in (q for c in locomo for q in c.questions):
        assert set(q.evidence_ids) <= every
        assert len(q.evidence_session_ids) <= len(q.evidence_ids)
    by_raw = {(q.question_id, tuple(q.evidence_ids)) for c in locomo for q in c.questions}
    assert any(len(ids) == 2 and ids[0].endswith(":D8:6") and ids[1].endswith(":D9:17") for _, ids in by_raw)
    assert any(ids == ("conv-50:D30:5",) for _, ids in by_raw)  # "D30:05"


def test_longmemeval_sample(longmemeval: list[Conversation]) -> None:
    assert len(longmemeval) == 1
    conv = longmemeval[0]
    assert conv.user_id == "e47becba"
    assert len(conv.sessions) == 53 and conv.turn_count == 550
    assert {m["role"] for s in conv.sessions for m in s.messages} == {"user", "assistant"}
    (q,) = conv.questions
    assert q.answer == "Business Administration"
    assert q.category == "single-session-user"
    assert q.evidence_ids == ["e47becba:answer_280352e9:4", "e47becba:answer_280352e9:5"]
    assert q.evidence_session_ids == ["answer_280352e9"]
    assert q.question_time is not None and q.question_time.isoformat() == "2023-05-30T23:40:00+00:00"
    answer_session = next(s for s in conv.sessions if s.session_id == "answer_280352e9")
    assert answer_session.time_stamp.isoformat() == "2023-05-30T17:27:00+00:00"  # "2023/05/30 (Tue) 17:27"


def test_jsonl_sessions_grouped_by_user(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [
        {"user_id": "u1", "session_id": "a", "time_stamp": "2025-01-10T08:00:00Z",
         "turns": [{"role": "user", "content": "I moved to Lyon."}, {"role": "assistant", "content": "Nice!"}]},
        {"user_id": "u2", "session_id": "b", "time_stamp": "2025-01-11", "turns": [{"role": "user", "content": "Hi", "id": "x1"}]},
        {"user_id": "u1", "session_id": "c", "time_stamp": 1736500000, "turns": [{"role": "user", "content": "Again."}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    convs = load_dataset(path, "jsonl")
    assert [c.user_id for c in convs] == ["u1", "u2"]
    assert [s.session_id for s in convs[0].sessions] == ["a", "c"]
    assert convs[0].sessions[0].messages[0]["time_stamp"] == "2025-01-10T08:00:00+00:00"
    assert convs[1].sessions[0].messages[0]["id"] == "x1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "s.jsonl:2: not a JSON object"),
        ('["a"]', "s.jsonl:2: expected a JSON object"),
        ('{"session_id": "s", "time_stamp": "2025-01-10", "turns": []}', "s.jsonl:2.user_id: missing"),
        ('{"user_id": "u", "session_id": "s", "time_stamp": "2025-01-10", "turns": []}', "s.jsonl:2.turns: empty session"),
        ('{"user_id": "u", "session_id": "s", "time_stamp": "soon", "turns": [{"role": "user", "content": "x"}]}',
         "s.jsonl:2.time_stamp"),
        ('{"user_id": "u", "session_id": "s", "time_stamp": "2025-01-10", "turns": [{"role": "bot", "content": "x"}]}',
         "s.jsonl:2: messages[0].role: unknown role"),
    ],
)
def test_jsonl_bad_line_names_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    good = '{"user_id": "u", "session_id": "s0", "time_stamp": "2025-01-10", "turns": [{"role": "user", "content": "ok"}]}'
    path = tmp_path / "s.jsonl"
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=message.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_jsonl(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    for loader in (load_locomo, load_longmemeval, load_jsonl):
        with pytest.raises(FileNotFoundError, match="nope.json"):
            loader(tmp_path / "nope.json")


def test_wrong_format_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not LoCoMo"):
        load_locomo(data_dir / "longmemeval_s_sample.json")
    with pytest.raises(InvalidInput, match="not LongMemEval"):
        load_longmemeval(data_dir / "locomo10.json")
    with pytest.raises(InvalidInput, match="s.jsonl:1: expected a JSON object"):
        path = tmp_path / "s.jsonl"
        path.write_text(json.dumps([{"sample_id": "x"}]), encoding="utf-8")
        load_jsonl(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not a JSON file"):
        load_locomo(text)
    with pytest.raises(InvalidInput, match="format: unknown 'csv'"):
        load_dataset(text, "csv")


def test_locomo_broken_item_is_named_before_anything_is_returned(tmp_path: Path) -> None:
    item = {"sample_id": "c1", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": "1:56 pm on 8 May, 2023",
                                                "session_1": [{"speaker": "A", "dia_id": "D1:1"}]}, "qa": []}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([item]), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"bad.json\[0\] \(c1\).session_1\[0\].text: missing"):
        load_locomo(path)


def test_locomo_conversation_without_turns_loads_empty(tmp_path: Path) -> None:
    item = {"sample_id": "c1", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": "1:56 pm on 8 May, 2023",
                                                "session_1": []},
            "qa": [{"question": "Q?", "answer": "A", "evidence": ["D1:1"], "category": 4}]}
    path = tmp_path / "empty.json"
    path.write_text(json.dumps([item]), encoding="utf-8")
    (conv,) = load_locomo(path)
    assert conv.sessions == [] and conv.turn_count == 0
    assert conv.questions[0].evidence_ids == [] and conv.questions[0].dangling_evidence == ["c1:D1:1"]
