"""The batched update prompt: several stored memories, each with the newer memories that resemble it,
and one decision per memory in one reply (the offline update; the online one asks ``prompt`` per target).

Targets are ``t1``, ``t2``...; each target's newer memories are numbered ``c1``, ``c2``... within it, and
its ``merge_into`` names one of those. Each decision is validated on its own: one missing or unusable
decision does not spoil the others (``BatchReply.problems`` says which and why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import ChatMessage
from lightmem_core.llm.replies import load_reply
from lightmem_core.update.prompt import PromptMemory, UpdateReply, problem_with

VERSION = "update-batch-2026-12-01"


class TargetGroup(BaseModel):
    """One memory to judge (``target.ref`` is ``t1``, ``t2``...) and its newer, similar candidates."""

    target: PromptMemory
    candidates: list[PromptMemory]


class BatchInput(BaseModel):
    """The memories judged in one call."""

    groups: list[TargetGroup]


class TargetDecision(UpdateReply):
    """One decision, naming the target it is for."""

    target: str


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    decisions: list[Any]


@dataclass
class BatchReply:
    """The usable decisions by target ref, and why each other target got none."""

    decisions: dict[str, UpdateReply] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    raw: str = ""


_SYSTEM = """You keep a personal assistant's long-term memory consistent.
You get several stored memories (targets t1, t2, ...), each followed by newer memories that resemble it, \
numbered c1, c2, ... under that target. Decide what happens to each target, on its own:
- "update": its newer memories add detail to it or correct part of it; give its rewritten text in "new_text".
- "delete": one of its newer memories makes it obsolete or repeats it entirely; name that memory in "merge_into".
- "ignore": it stays as it is (the memories are about different things, or both remain true).
Reply with a JSON object only, with one decision for every target: {"decisions": [{"target": "t1", \
"action": "update|delete|ignore", "new_text": "...", "merge_into": "c1", "reason": "one short sentence"}]}"""


def render(data: BatchInput) -> list[ChatMessage]:
    """The chat messages of one batched update call."""
    blocks = []
    for group in data.groups:
        lines = [f"Target [{group.target.ref}] {group.target.time}: {group.target.text}", "Newer memories:"]
        lines.extend(f"[{c.ref}] {c.time}: {c.text}" for c in group.candidates)
        blocks.append("\n".join(lines))
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(blocks)}]


def parse(text: str, data: BatchInput, wanted: set[str] | None = None) -> BatchReply:
    """Validate a reply decision by decision, for the targets in ``wanted`` (default: all shown).

    Raises ``ExtractionParseError`` when the reply is no ``{"decisions": [...]}`` object or holds no
    usable decision at all (then the whole reply is worth one repair); otherwise every wanted target
    gets a decision or a problem.
    """
    envelope = load_reply(text, _Envelope)
    refs = {g.target.ref: {c.ref for c in g.candidates} for g in data.groups}
    wanted = set(refs) if wanted is None else wanted
    reply = BatchReply(raw=text)
    for item in envelope.decisions:
        try:
            decision = TargetDecision.model_validate(item)
        except ValidationError as exc:
            target = item.get("target") if isinstance(item, dict) else None
            if isinstance(target, str) and target in wanted:
                reply.problems.setdefault(target, f"invalid decision: {exc.errors()[0]['msg']}")
            continue
        if decision.target not in wanted:
            continue
        problem = problem_with(decision, refs[decision.target])
        if problem is not None:
            reply.problems.setdefault(decision.target, problem)
        elif decision.target in reply.decisions and reply.decisions[decision.target] != decision:
            reply.problems[decision.target] = "two different decisions"
        else:
            reply.decisions[decision.target] = UpdateReply.model_validate(decision.model_dump(exclude={"target"}))
    for target in wanted:
        if target not in reply.decisions:
            reply.problems.setdefault(target, "no decision given")
        elif target in reply.problems:
            del reply.decisions[target]
    if not reply.decisions:
        raise ExtractionParseError(f"no usable decision: {_summary(reply.problems)}", raw_reply=text)
    return reply


def _summary(problems: dict[str, str]) -> str:
    return "; ".join(f"{ref}: {why}" for ref, why in sorted(problems.items(), key=lambda kv: int(kv[0][1:])))


def problems_text(problems: dict[str, str]) -> str:
    """The repair request's reason: which targets need a decision again, and why."""
    return f"these targets have no usable decision ({_summary(problems)}); give a decision for each of them"
