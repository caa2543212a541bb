"""Dataset loaders: LoCoMo, LongMemEval and JSONL sessions, read into one shape.

Every loader reads and checks the whole file first and returns a list of ``Conversation``; a
missing file raises ``FileNotFoundError`` naming the path, a file in the wrong format raises
``InvalidInput`` naming the file, the item and the field. Nothing is returned half-read.

Shape:

- ``Conversation(user_id, sessions, questions)``: one memory scope.
- ``DatasetSession(user_id, session_id, time_stamp, messages)``: ``messages`` are dicts that
  ``LightMemory.add_memory(messages, user_id=..., session_id=...)`` accepts as they are
  (keys ``role``, ``content``, ``time_stamp`` as ISO 8601 text, ``speaker_name`` when known, ``id``).
- ``Question(question_id, question, answer, category, evidence_ids, ...)``: ``evidence_ids`` are
  message ids of the turns that hold the answer, so retrieval is scored through provenance.

Mappings:

- LoCoMo: one user per conversation (``user_id = sample_id``); both speakers are role ``user`` with
  ``speaker_name``; message id ``"{sample_id}:{dia_id}"``; session id ``"{sample_id}:session_N"``;
  session time from ``session_N_date_time``. Image turns keep their text, with the shared image's
  caption appended (``include_captions``). Quirks: sessions with a date and no turns are left out;
  numeric answers become text; evidence ids are normalised (``"D8:6; D9:17"``, ``"D:11:26"``,
  ``"D30:05"``) and those pointing to no turn are kept in ``dangling_evidence``; questions may
  have no evidence. Categories as LightMem and mem0 number them (``LOCOMO_CATEGORIES``).
- LongMemEval: one user per question instance (``user_id = question_id``); roles user/assistant;
  session ids from ``haystack_session_ids``, times from ``haystack_dates``; the ``has_answer``
  turns become ``evidence_ids`` and ``answer_session_ids`` become ``evidence_session_ids``.
- JSONL: one session per line, ``{"user_id", "session_id", "time_stamp", "turns": [message, ...]}``;
  turns are checked as ``add_memory`` checks them. Sessions are grouped by user, in file order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lightmem_core.errors import InvalidInput
from lightmem_core.ingest import normalize_messages
from lightmem_core.timeparse import parse_time

__all__ = [
    "FORMATS",
    "LOCOMO_CATEGORIES",
    "Conversation",
    "DatasetSession",
    "Question",
    "add_conversation",
    "load_dataset",
    "load_jsonl",
    "load_locomo",
    "load_longmemeval",
]

LOCOMO_CATEGORIES: dict[str, str] = {
    "1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop", "5": "adversarial",
}
_SESSION_KEY = re.compile(r"session_(\d+)")
_DIA_ID = re.compile(r"D:?(\d+):(\d+)")


@dataclass
class DatasetSession:
    """One session of one user; ``messages`` go to ``add_memory`` unchanged."""

    user_id: str
    session_id: str
    time_stamp: datetime
    messages: list[dict[str, Any]]


@dataclass
class Question:
    """A benchmark question with the message ids (and session ids) of its evidence."""

    question_id: str
    question: str
    answer: str
    category: str
    evidence_ids: list[str] = field(default_factory=list)
    evidence_session_ids: list[str] = field(default_factory=list)
    dangling_evidence: list[str] = field(default_factory=list)
    adversarial_answer: str | None = None
    question_time: datetime | None = None


@dataclass
class Conversation:
    """One memory scope: its sessions in order and the questions asked about it."""

    user_id: str
    sessions: list[DatasetSession]
    questions: list[Question] = field(default_factory=list)

    @property
    def turn_count(self) -> int:
        return sum(len(s.messages) for s in self.sessions)


# --- shared helpers -------------------------------------------------------------------------------


def _read_json(path: str | Path) -> Any:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file not found: {file}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{file}: not a JSON file ({exc})") from exc


def _need(item: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(item, dict) or key not in item:
        raise InvalidInput(f"{where}.{key}: missing")
    value = item[key]
    if not isinstance(value, kind):
        raise InvalidInput(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _time(value: Any, where: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def _text(value: Any) -> str:
    """Answers are text; LoCoMo has a few numbers (``2022``, ``3``)."""
    return "" if value is None else str(value)


# --- LoCoMo ---------------------------------------------------------------------------------------


def load_locomo(path: str | Path, *, include_captions: bool = True) -> list[Conversation]:
    """Read LoCoMo (``locomo10.json``): one ``Conversation`` per sample, user id = ``sample_id``."""
    data = _read_json(path)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "conversation" not in data[0]:
        raise InvalidInput(f"{path}: not LoCoMo (expected a list of samples with 'sample_id', 'conversation', 'qa')")
    return [_locomo_sample(item, f"{Path(path).name}[{i}]", include_captions) for i, item in enumerate(data)]


def _locomo_sample(item: Any, where: str, include_captions: bool) -> Conversation:
    sample_id = str(_need(item, "sample_id", (str, int), where))
    where = f"{where} ({sample_id})"
    conv = _need(item, "conversation", dict, where)
    sessions: list[DatasetSession] = []
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY.fullmatch(k)))
    for n in numbers:
        turns = _need(conv, f"session_{n}", list, f"{where}.conversation")
        if not turns:
            continue
        stamp = _time(_need(conv, f"session_{n}_date_time", str, f"{where}.conversation"), f"{where}.session_{n}_date_time")
        messages = [_locomo_turn(t, sample_id, stamp, f"{where}.session_{n}[{j}]", include_captions) for j, t in enumerate(turns)]
        sessions.append(DatasetSession(sample_id, f"{sample_id}:session_{n}", stamp, messages))
    session_of = {m["id"]: s.session_id for s in sessions for m in s.messages}
    qa = _need(item, "qa", list, where)
    questions = [_locomo_question(q, sample_id, i, session_of, f"{where}.qa[{i}]") for i, q in enumerate(qa)]
    return Conversation(sample_id, sessions, questions)


def _locomo_turn(turn: Any, sample_id: str, stamp: datetime, where: str, include_captions: bool) -> dict[str, Any]:
    text = _need(turn, "text", str, where)
    caption = turn.get("blip_caption")
    if include_captions and isinstance(caption, str) and caption.strip():
        text = f"{text} [shares a photo: {caption.strip()}]"
    return {
        "role": "user",
        "content": text,
        "time_stamp": stamp.isoformat(),
        "speaker_name": str(_need(turn, "speaker", str, where)),
        "id": f"{sample_id}:{_need(turn, 'dia_id', str, where)}",
    }


def _locomo_question(q: Any, sample_id: str, index: int, session_of: dict[str, str], where: str) -> Question:
    question = _need(q, "question", str, where)
    category = str(_need(q, "category", (int, str), where))
    raw = q.get("evidence") or []
    wanted: list[str] = []
    for text in raw if isinstance(raw, list) else [raw]:
        for s, t in _DIA_ID.findall(str(text)):
            mid = f"{sample_id}:D{int(s)}:{int(t)}"
            if mid not in wanted:
                wanted.append(mid)
    found = [m for m in wanted if m in session_of]
    dangling = [m for m in wanted if m not in session_of]
    dangling += [str(t) for t in (raw if isinstance(raw, list) else [raw]) if not _DIA_ID.search(str(t))]
    adversarial = q.get("adversarial_answer")
    return Question(
        question_id=f"{sample_id}:q{index}", question=question, answer=_text(q.get("answer")), category=category,
        evidence_ids=found, evidence_session_ids=list(dict.fromkeys(session_of[m] for m in found)),
        dangling_evidence=dangling, adversarial_answer=None if adversarial is None else _text(adversarial),
    )


# --- LongMemEval ----------------------------------------------------------------------------------


def load_longmemeval(path: str | Path) -> list[Conversation]:
    """Read LongMemEval (``longmemeval_s*.json``): one ``Conversation`` per question instance."""
    data = _read_json(path)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "haystack_sessions" not in data[0]:
        raise InvalidInput(f"{path}: not LongMemEval (expected a list of questions with 'haystack_sessions')")
    return [_longmemeval_item(item, f"{Path(path).name}[{i}]") for i, item in enumerate(data)]


def _longmemeval_item(item: Any, where: str) -> Conversation:
    qid = str(_need(item, "question_id", (str, int), where))
    where = f"{where} ({qid})"
    haystack = _need(item, "haystack_sessions", list, where)
    sids = _need(item, "haystack_session_ids", list, where)
    dates = _need(item, "haystack_dates", list, where)
    if not len(haystack) == len(sids) == len(dates):
        raise InvalidInput(f"{where}: haystack_sessions, haystack_session_ids and haystack_dates differ in length")
    sessions: list[DatasetSession] = []
    evidence: list[str] = []
    for k, (turns, sid, date) in enumerate(zip(haystack, sids, dates, strict=True)):
        here = f"{where}.haystack_sessions[{k}]"
        if not isinstance(turns, list):
            raise InvalidInput(f"{here}: expected a list of turns, got {type(turns).__name__}")
        stamp = _time(date, f"{where}.haystack_dates[{k}]")
        messages = []
        for j, turn in enumerate(turns):
            role = _need(turn, "role", str, f"{here}[{j}]")
            if role not in ("user", "assistant"):
                raise InvalidInput(f"{here}[{j}].role: expected 'user' or 'assistant', got {role!r}")
            mid = f"{qid}:{sid}:{j}"
            messages.append({"role": role, "content": _need(turn, "content", str, f"{here}[{j}]"),
                             "time_stamp": stamp.isoformat(), "id": mid})
            if turn.get("has_answer"):
                evidence.append(mid)
        if messages:
            sessions.append(DatasetSession(qid, str(sid), stamp, messages))
    answer_sessions = [str(s) for s in item.get("answer_session_ids") or []]
    date = item.get("question_date")
    question = Question(
        question_id=qid, question=_need(item, "question", str, where), answer=_text(item.get("answer")),
        category=str(item.get("question_type") or "unknown"), evidence_ids=evidence,
        evidence_session_ids=answer_sessions, question_time=_time(date, f"{where}.question_date") if date else None,
    )
    return Conversation(qid, sessions, [question])


# --- JSONL ----------------------------------------------------------------------------------------


def load_jsonl(path: str | Path) -> list[Conversation]:
    """Read sessions, one JSON object a line; blank lines are skipped. Returns one conversation per user."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file not found: {file}")
    by_user: dict[str, Conversation] = {}
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                session = _jsonl_session(line, f"{file.name}:{number}")
                by_user.setdefault(session.user_id, Conversation(session.user_id, [])).sessions.append(session)
    return list(by_user.values())


def _jsonl_session(line: str, where: str) -> DatasetSession:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where}: not a JSON object ({exc.msg})") from exc
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(item).__name__}")
    user_id = _need(item, "user_id", str, where)
    session_id = _need(item, "session_id", str, where)
    if not user_id.strip() or not session_id.strip():
        raise InvalidInput(f"{where}: user_id and session_id must be non-empty")
    stamp = _time(_need(item, "time_stamp", (str, int, float), where), f"{where}.time_stamp")
    turns = _need(item, "turns", list, where)
    if not turns:
        raise InvalidInput(f"{where}.turns: empty session")
    messages = [dict(t) if isinstance(t, dict) else t for t in turns]
    for m in messages:
        if isinstance(m, dict) and "time_stamp" not in m and "timestamp" not in m:
            m["time_stamp"] = stamp.isoformat()
    try:
        normalize_messages(messages, user_id, session_id, lambda _sid: 0)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    return DatasetSession(user_id, session_id, stamp, messages)


# --- by name --------------------------------------------------------------------------------------

FORMATS: dict[str, Callable[[str | Path], list[Conversation]]] = {
    "locomo": load_locomo,
    "longmemeval": load_longmemeval,
    "jsonl": load_jsonl,
}


def load_dataset(path: str | Path, fmt: str) -> list[Conversation]:
    """Load ``path`` as ``fmt`` (``locomo``, ``longmemeval`` or ``jsonl``)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format: unknown {fmt!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[fmt](path)


def add_conversation(memory: Any, conversation: Conversation, force_segment: bool = False, wait: bool = True) -> None:
    """Add every session of ``conversation`` to a ``LightMemory`` in order, then flush its user (with
    ``wait=False`` the flush is queued and the caller goes on: ``memory.wait()`` waits for it)."""
    for session in conversation.sessions:
        memory.add_memory(session.messages, force_segment=force_segment, user_id=conversation.user_id,
                          session_id=session.session_id)
    memory.flush(conversation.user_id, wait=wait)
