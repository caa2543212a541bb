"""The update prompt: one memory and the newer memories that resemble it; the model decides its fate.

All the candidates go into one call (several targets per call). ``update`` rewrites the memory with
what the newer ones add or correct; ``delete`` drops it because a newer one replaces it (optionally
naming that one in ``merge_into``, which then inherits its provenance); ``ignore`` keeps it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import ChatMessage
from lightmem_core.llm.replies import load_reply

VERSION = "update-2026-11-24"


class PromptMemory(BaseModel):
    """A memory as the model sees it."""

    ref: str
    time: str
    text: str


class UpdateInput(BaseModel):
    """The memory to judge and its newer, similar candidates."""

    target: PromptMemory
    candidates: list[PromptMemory]


class UpdateReply(BaseModel):
    """The decision."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["update", "delete", "ignore"]
    new_text: str | None = None
    merge_into: str | None = None
    reason: str = ""


_SYSTEM = """You keep a personal assistant's long-term memory consistent.
You get one stored memory (the target) and newer memories that resemble it. Decide what happens to the target:
- "update": newer memories add detail to it or correct part of it; give its rewritten text in "new_text".
- "delete": a newer memory makes it obsolete or repeats it entirely; name that memory in "merge_into".
- "ignore": it stays as it is (the memories are about different things, or both remain true).
Reply with a JSON object only: {"action": "update|delete|ignore", "new_text": "...", "merge_into": "c1", \
"reason": "one short sentence"}"""


def render(data: UpdateInput) -> list[ChatMessage]:
    """The chat messages of one update call."""
    lines = [f"Target [{data.target.ref}] {data.target.time}: {data.target.text}", "Newer memories:"]
    lines.extend(f"[{c.ref}] {c.time}: {c.text}" for c in data.candidates)
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse(text: str, data: UpdateInput) -> UpdateReply:
    """Validate a reply; an update needs its new text and ``merge_into`` must name a candidate shown."""
    reply = load_reply(text, UpdateReply)
    problem = problem_with(reply, {c.ref for c in data.candidates})
    if problem is not None:
        raise ExtractionParseError(problem, raw_reply=text)
    return reply


def problem_with(reply: UpdateReply, candidate_refs: set[str]) -> str | None:
    """Why a decision cannot be applied, or ``None``: an update needs its text, a merge a candidate shown."""
    if reply.action == "update" and not (reply.new_text and reply.new_text.strip()):
        return "action 'update' needs a non-empty new_text"
    if reply.merge_into is not None and reply.merge_into not in candidate_refs:
        return f"merge_into {reply.merge_into!r} is not one of the newer memories shown"
    return None
