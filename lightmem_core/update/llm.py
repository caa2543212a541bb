"""The update decider backed by an LLM: one call per entry, all its newer candidates in that call."""

from __future__ import annotations

from lightmem_core.llm.base import CallTag, LLMClient
from lightmem_core.llm.structured import ask_json
from lightmem_core.models import MemoryEntry
from lightmem_core.update import prompt
from lightmem_core.update.decision import Decision


def _shown(ref: str, entry: MemoryEntry) -> prompt.PromptMemory:
    return prompt.PromptMemory(ref=ref, time=f"{entry.time_stamp:%Y-%m-%d %H:%M} {entry.weekday}", text=entry.memory)


class LLMUpdateDecider:
    """Asks the model whether newer, similar entries update, replace or leave an entry alone.

    Raises ``ExtractionParseError`` when the reply stays invalid after one repair, and
    ``TransientError`` when the endpoint keeps failing.
    """

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    def decide(self, entry: MemoryEntry, candidates: list[MemoryEntry]) -> Decision:
        refs = {f"c{i}": cand for i, cand in enumerate(candidates, start=1)}
        data = prompt.UpdateInput(target=_shown("t", entry), candidates=[_shown(r, c) for r, c in refs.items()])
        tag = CallTag("update", entry.user_id, entry.session_id or None)
        reply = ask_json(self.client, prompt.render(data), lambda text: prompt.parse(text, data), tag)
        merge_into = refs[reply.merge_into].id if reply.merge_into else None
        if reply.action == "delete" and merge_into is None and len(candidates) == 1:
            merge_into = candidates[0].id  # the only newer entry is what replaces it: keep its provenance there
        return Decision(reply.action, new_text=reply.new_text, reason=reply.reason, merge_into=merge_into)
