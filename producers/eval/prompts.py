"""Prompts of the evaluation: answer from retrieved memories, then judge the answer (lenient).

The judge follows the LoCoMo evaluations of LightMem and mem0: CORRECT when the generated answer
refers to the same thing as the gold answer, however phrased; dates in another format still count.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from lightmem_core.llm.base import ChatMessage

ANSWER_VERSION = "answer-v1"
JUDGE_VERSION = "judge-v1"
Label = Literal["CORRECT", "WRONG"]
_LABEL = re.compile(r"\b(CORRECT|WRONG)\b")


def render_answer(question: str, memories: list[str], question_time: str | None = None) -> list[ChatMessage]:
    """Chat messages asking for a short answer grounded only in ``memories``."""
    shown = "\n".join(f"- {m}" for m in memories) or "(no memories found)"
    when = f"\nThe question is asked on {question_time}." if question_time else ""
    return [
        {"role": "system", "content": (
            "You answer questions about a user's past conversations using only the memories given. Each memory "
            "starts with the date it was said. Resolve relative dates (\"last year\", \"yesterday\") against that "
            "date. If the memories do not contain the answer, say so. Answer in a short phrase."
        )},
        {"role": "user", "content": f"Memories:\n{shown}\n{when}\nQuestion: {question}\nAnswer:"},
    ]


def render_judge(question: str, gold: str, generated: str) -> list[ChatMessage]:
    """Chat messages asking for ``{"label": "CORRECT" | "WRONG"}``."""
    return [
        {"role": "system", "content": (
            "Label a generated answer CORRECT or WRONG against the gold answer. Be generous: if the generated "
            "answer refers to the same thing, person, event or time as the gold answer, it is CORRECT, even when "
            "it is longer or phrased differently; a date or period in another format is CORRECT. Reply with JSON "
            "only: {\"label\": \"CORRECT\"} or {\"label\": \"WRONG\"}."
        )},
        {"role": "user", "content": f"Question: {question}\nGold answer: {gold}\nGenerated answer: {generated}"},
    ]


def parse_label(reply: str) -> Label | None:
    """The judge's label from its reply (JSON, or a bare word as a fallback); ``None`` when absent."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and str(data.get("label", "")).upper() in ("CORRECT", "WRONG"):
        return "CORRECT" if str(data["label"]).upper() == "CORRECT" else "WRONG"
    found = _LABEL.findall(reply.upper())
    if not found:
        return None
    return "CORRECT" if found[-1] == "CORRECT" else "WRONG"
