"""``extraction_mode: event``: LightMem's second, relational extraction call per batch.

LightMem's ``event`` mode extracts every batch twice: the factual call of ``flat`` mode, and a call
with a relational prompt that writes down how the people in the conversation relate to each other
(praise, support, gratitude, questions asked, agreement, reciprocated sharing), each with the message
it comes from. Both kinds become entries; the relational ones carry ``category: "relational"`` so a
caller can tell them apart (``filters={"category": "relational"}``). The cost is one more LLM call per
batch, as in LightMem. The reply has the factual call's form (``facts`` with ``source_ids``) and is
checked the same way: a reference not sent in the call is invalid, never clamped.
"""

from __future__ import annotations

from typing import Protocol

from lightmem_core.extraction import prompt
from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient
from lightmem_core.llm.structured import ask_json
from lightmem_core.models import MemoryEntry, Message, TopicSegment, entry_id_for


class PreparedBatch(Protocol):
    """What this module reads of ``extraction.llm.PreparedBatch`` (llm.py calls this module, so it is
    described here rather than imported: no import circle, not even for the type checker)."""

    @property
    def data(self) -> prompt.ExtractionInput: ...
    @property
    def messages(self) -> dict[str, Message]: ...
    @property
    def segments(self) -> dict[str, TopicSegment]: ...

RELATIONAL = "relational"  # the category of the entries this call writes

_SYSTEM = """You keep the long-term memory of a personal assistant, and another system already writes \
down the facts of the conversation below. Your task: how the people in it relate to each other.
Write down the relational and emotional exchanges: praise and acknowledgement, encouragement and \
support, gratitude, pride, congratulations, interest shown by asking, agreement on values, sharing in \
response to another's sharing.
Rules:
- Not the facts themselves ("Bob mentioned his support group" is a fact, skip it), but the behaviour \
("Alice praised Bob's dedication to his support group").
- Name the people and give enough context to make sense alone; include a date when the exchange is \
about a time-specific event, turning relative dates into dates using the message's time stamp.
- Merge closely related behaviours of one message; when both people express the same view, say \
"both" and cite the message that completes the agreement.
- Cite in "source_ids" the reference of every message the exchange comes from (for example "m3"). \
Use only references that appear in the conversation. Nothing relational: an empty list.
Reply with a JSON object only, in this form:
{"facts": [{"text": "...", "source_ids": ["m1"]}]}"""


def render(data: prompt.ExtractionInput) -> list[ChatMessage]:
    """The relational call: its own fixed instructions first, then the same conversation as the factual call."""
    conversation = prompt.render(data)[1]
    return [{"role": "system", "content": _SYSTEM}, conversation]


def to_entries(reply: prompt.ExtractionReply, batch: PreparedBatch) -> list[MemoryEntry]:
    """Relational entries, built like factual ones (provenance, times, topic) with their own category;
    the category is part of the id, so a relational entry never replaces a factual one of the same text."""
    entries: dict[str, MemoryEntry] = {}
    for fact in reply.facts:
        text = fact.text.strip()
        if not text:
            continue
        refs = list(dict.fromkeys(fact.source_ids))
        sources = [batch.messages[r] for r in refs]
        first = batch.segments[refs[0]]
        ids = [m.id for m in sources]
        entry = MemoryEntry(
            id=entry_id_for(first.user_id, ids, f"{RELATIONAL}: {text}"), user_id=first.user_id, memory=text,
            time_stamp=max(m.time_stamp for m in sources), topic_id=first.topic_id, session_id=first.session_id,
            source_ids=ids, speaker=sources[0].speaker or sources[0].role, category=RELATIONAL,
        )
        entries.setdefault(entry.id, entry)
    return list(entries.values())


def extract_relations(client: LLMClient, batch: PreparedBatch, tag: CallTag) -> list[MemoryEntry]:
    """One relational call (plus at most one repair) over the conversation the factual call saw."""
    plain = batch.data.model_copy(update={"with_metadata": False, "with_summary": False, "with_graph": False})
    reply = ask_json(client, render(plain), lambda text: prompt.parse(text, plain), tag)
    return to_entries(reply, batch)
