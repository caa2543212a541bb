"""The scripted LLM server's answer to the graph part of the extraction prompt (``graph_mem``).

A test double: a few fixed sentence patterns read off each message shown, so that the server answers
with entities and relations derived from the messages alone (it knows no test's answer):
"X's sister is Y", "my sister is Y", "X lives in Z" / "I live in Z" / "moved to Z", "X works at Z",
and "X, also called Y" (an alias). "I" and "my" stand for the message's speaker.
"""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"^\[(m\d+)\] \S+ \S+ \S+ ([^:]+): (.*)$")
_NAME = r"[A-Z][\w-]*(?: [A-Z][\w-]*)?"
_KIN = r"sister|brother|mother|father|friend|wife|husband|partner|boss|daughter|son"
_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(rf"\b(?P<s>{_NAME})['’]s (?P<r>{_KIN}) (?:is (?:called |named )?|named |called )?(?P<o>{_NAME})"), None),
    (re.compile(rf"\b(?P<s>[Mm]y) (?P<r>{_KIN}) (?:is (?:called |named )?|named |called )?(?P<o>{_NAME})"), None),
    (re.compile(rf"\b(?P<s>{_NAME}|I) (?:lives?|moved) (?:in|to) (?P<o>{_NAME})"), "lives in"),
    (re.compile(rf"\b(?P<s>{_NAME}|I) works? (?:at|for) (?P<o>{_NAME})"), "works at"),
)
_ALIAS = re.compile(rf"\b(?P<n>{_NAME}),? (?:also called|known as|who goes by|nicknamed) (?P<a>{_NAME})")


def graph_reply(user: str) -> dict[str, Any]:
    """``{"entities": [...], "relations": [...]}`` for the messages in the prompt's user text."""
    entities: dict[str, list[str]] = {}
    relations: list[dict[str, Any]] = []
    for line in user.splitlines():
        if not (m := _LINE.match(line)):
            continue
        ref, speaker, text = m.group(1), m.group(2).strip(), m.group(3)
        for pattern, relation in _PATTERNS:
            for found in pattern.finditer(text):
                subject = speaker if found["s"] in ("I", "My", "my") else found["s"]
                triple = {"subject": subject, "relation": relation or found["r"], "object": found["o"],
                          "source_ids": [ref]}
                relations.append(triple)
                entities.setdefault(subject, [])
                entities.setdefault(found["o"], [])
        for found in _ALIAS.finditer(text):
            entities.setdefault(found["n"], []).append(found["a"])
    return {"entities": [{"name": n, "aliases": a} for n, a in entities.items()], "relations": relations}
