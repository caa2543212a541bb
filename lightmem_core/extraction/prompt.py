"""The extraction prompt: topic segments in, standalone facts with their source message ids out.

Messages are shown under short references (``m1``, ``m2``...) that stand for their real ids in this
call only; a reply that cites a reference not shown in the call is invalid, never clamped.
``metadata_generate`` asks for keywords and a category per fact, ``text_summary`` for one summary
per topic, ``graph_mem`` for the entities and relations (each relation citing its messages): all in
the same call, so they cost no extra request. The graph form is its own prompt version.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import ChatMessage
from lightmem_core.llm.replies import load_reply

VERSION = "extraction-2026-11-24"
GRAPH_VERSION = "extraction-graph-2026-12-01"  # the prompt with entities and relations (graph_mem)


class PromptMessage(BaseModel):
    """One message as the model sees it."""

    ref: str
    time: str
    speaker: str
    text: str


class PromptTopic(BaseModel):
    """One topic segment as the model sees it."""

    topic_id: int
    messages: list[PromptMessage]


class PromptImage(BaseModel):
    """An image sent to the model as an ``image_url`` part, after its label (``m3.1``: message m3's first)."""

    label: str
    url: str


class ExtractionInput(BaseModel):
    """Everything the extraction prompt needs."""

    topics: list[PromptTopic]
    with_metadata: bool = False
    with_summary: bool = False
    images: list[PromptImage] = Field(default_factory=list)
    with_graph: bool = False

    @property
    def version(self) -> str:
        return GRAPH_VERSION if self.with_graph else VERSION

    @property
    def refs(self) -> set[str]:
        return {m.ref for t in self.topics for m in t.messages}


class ExtractedFact(BaseModel):
    """One fact of the reply."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)
    source_ids: list[str] = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    category: str | None = None


class TopicSummary(BaseModel):
    """The summary of one topic."""

    model_config = ConfigDict(extra="ignore")

    topic_id: int
    summary: str


class ReplyEntity(BaseModel):
    """An entity the conversation names, with the other names it goes by."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)


class ReplyRelation(BaseModel):
    """One (subject, relation, object) with the references of the messages it comes from."""

    model_config = ConfigDict(extra="ignore")

    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: str = Field(min_length=1)
    source_ids: list[str] = Field(min_length=1)


class ExtractionReply(BaseModel):
    """The whole reply."""

    model_config = ConfigDict(extra="ignore")

    facts: list[ExtractedFact]
    summaries: list[TopicSummary] = Field(default_factory=list)
    entities: list[ReplyEntity] = Field(default_factory=list)
    relations: list[ReplyRelation] = Field(default_factory=list)


_SYSTEM = """You keep the long-term memory of a personal assistant.
Read the conversation below and write down every fact worth remembering later: what people said \
about themselves, others, plans, events, preferences, opinions and relationships.
Rules:
- Each fact stands alone: name the person instead of using pronouns, and turn relative dates \
("yesterday", "next month") into dates using the time stamp of the message.
- Cite in "source_ids" the reference of every message the fact comes from (for example "m3"). \
Use only references that appear in the conversation.
- Leave out greetings, small talk and anything without lasting value. No facts: an empty list.
Reply with a JSON object only, in this form:
{"facts": [{"text": "...", "source_ids": ["m1"]%s}]%s}"""

_GRAPH_FORM = (', "entities": [{"name": "...", "aliases": ["..."]}], "relations": [{"subject": "...", '
               '"relation": "...", "object": "...", "source_ids": ["m1"]}]')
_GRAPH_RULES = """
Also list the people, places, organisations and things the facts name ("entities"), each under its \
full name, with the other names it goes by in the conversation ("aliases"), and the relations between \
them ("relations"): a short lower-case relation such as "sister", "lives in", "works at", from subject \
to object, using the entities' names, each citing the references of its messages in "source_ids"."""


def render(data: ExtractionInput) -> list[ChatMessage]:
    """The chat messages of one extraction call."""
    fact_extra = ', "keywords": ["..."], "category": "..."' if data.with_metadata else ""
    summary_extra = ', "summaries": [{"topic_id": 1, "summary": "..."}]' if data.with_summary else ""
    system = _SYSTEM % (fact_extra, summary_extra + (_GRAPH_FORM if data.with_graph else ""))
    if data.with_metadata:
        system += "\nGive each fact two to five keywords and one short category (such as work, family, hobby, travel)."
    if data.with_summary:
        system += "\nAlso summarise each topic in one or two sentences."
    if data.with_graph:
        system += _GRAPH_RULES
    lines: list[str] = []
    for topic in data.topics:
        lines.append(f"Topic {topic.topic_id}:")
        lines.extend(f"[{m.ref}] {m.time} {m.speaker}: {m.text}" for m in topic.messages)
    return [{"role": "system", "content": system}, {"role": "user", "content": _user_content(lines, data.images)}]


def _user_content(lines: list[str], images: list[PromptImage]) -> str | list[dict[str, Any]]:
    """The conversation as text; with images, content parts: the text, then each image after its label.
    A client for a model that reads no images turns them back into text (``llm/text_only.py``)."""
    text = "\n".join(lines)
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text + "\nThe images shared above follow, each after its "
                                    "label; what an image shows counts as said in its message."}]
    for image in images:
        parts += [{"type": "text", "text": f"Image {image.label}:"},
                  {"type": "image_url", "image_url": {"url": image.url}}]
    return parts


def parse(text: str, data: ExtractionInput) -> ExtractionReply:
    """Validate a reply against the schema and the references actually sent; raises ``ExtractionParseError``."""
    reply = load_reply(text, ExtractionReply)
    cited = {s for f in reply.facts for s in f.source_ids} | {s for r in reply.relations for s in r.source_ids}
    unknown = sorted(cited - data.refs)
    if unknown:
        raise ExtractionParseError(f"reply cites message ids not sent in this call: {unknown}", raw_reply=text)
    stray = sorted({s.topic_id for s in reply.summaries} - {t.topic_id for t in data.topics})
    if stray:
        raise ExtractionParseError(f"reply summarises topics not sent in this call: {stray}", raw_reply=text)
    return reply
