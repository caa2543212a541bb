"""LLM extraction: one call turns a batch of topic segments into facts with provenance.

Each fact's ``source_ids`` are checked against the messages sent in that very call; the entry takes
its time stamp from its latest source message, its topic and session from its first one, and gets a
deterministic id from the user, the sources and the text. Images are shown by their captions in the
text and sent as ``image_url`` parts (a client for a model without vision turns those into text).
Nothing is clamped or guessed: a reply that does not fit raises ``ExtractionParseError`` (after one
repair attempt) so the caller can keep the batch as failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lightmem_core.extraction import prompt, relational
from lightmem_core.graph.model import GraphEntity, GraphFacts, GraphRelation
from lightmem_core.images import model_url
from lightmem_core.llm.base import CallTag, LLMClient
from lightmem_core.llm.structured import ask_json
from lightmem_core.models import MemoryEntry, Message, TopicSegment, entry_id_for
from lightmem_core.timeparse import weekday_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedBatch:
    """The prompt input of one call and what its short references stand for."""

    data: prompt.ExtractionInput
    messages: dict[str, Message]
    segments: dict[str, TopicSegment]

    @property
    def empty(self) -> bool:
        return not self.messages


def prepare(segments: list[TopicSegment], roles: set[str], metadata: bool, summary: bool,
            graph: bool = False) -> PreparedBatch:
    """Number the messages of ``roles`` ``m1``, ``m2``... across the batch and build the prompt input."""
    topics: list[prompt.PromptTopic] = []
    by_ref: dict[str, Message] = {}
    seg_of: dict[str, TopicSegment] = {}
    for segment in segments:
        shown: list[prompt.PromptMessage] = []
        for message in segment.messages:
            if message.role not in roles or not (message.text.strip() or message.images):
                continue
            ref = f"m{len(by_ref) + 1}"
            by_ref[ref], seg_of[ref] = message, segment
            stamp = message.time_stamp
            shown.append(prompt.PromptMessage(ref=ref, time=f"{stamp:%Y-%m-%d %H:%M} {weekday_name(stamp)}",
                                              speaker=message.speaker or message.role, text=shown_text(ref, message)))
        if shown:
            topics.append(prompt.PromptTopic(topic_id=segment.topic_id, messages=shown))
    data = prompt.ExtractionInput(topics=topics, with_metadata=metadata, with_summary=summary, with_graph=graph)
    data.images = prompt_images(by_ref)
    return PreparedBatch(data, by_ref, seg_of)


def shown_text(ref: str, message: Message) -> str:
    """A message's text as the model reads it, each image's caption after it (``[image m3.1: caption]``)."""
    labels = [f"[image {ref}.{k}: {img.caption}]" if img.caption else f"[image {ref}.{k}]"
              for k, img in enumerate(message.images, start=1)]
    return " ".join([message.text.strip(), *labels]).strip()


def prompt_images(by_ref: dict[str, Message]) -> list[prompt.PromptImage]:
    """The images of the messages shown that have bytes or a URL, as the model is sent them; a local file
    that cannot be read any more is left out (its caption is still in the text)."""
    images = []
    for ref, message in by_ref.items():
        for k, image in enumerate(message.images, start=1):
            if image.url is None:
                continue
            try:
                images.append(prompt.PromptImage(label=f"{ref}.{k}", url=model_url(image.url)))
            except OSError as exc:
                log.warning("image %s.%d of a batch of user %s left out: %s", ref, k, message.user_id,
                            type(exc).__name__)
    return images


def to_entries(reply: prompt.ExtractionReply, batch: PreparedBatch) -> list[MemoryEntry]:
    """Memory entries from a validated reply; identical facts from the same sources are kept once."""
    summaries = {s.topic_id: s.summary.strip() for s in reply.summaries if s.summary.strip()}
    entries: dict[str, MemoryEntry] = {}
    for fact in reply.facts:
        refs = list(dict.fromkeys(fact.source_ids))
        sources = [batch.messages[r] for r in refs]
        first = batch.segments[refs[0]]
        text = fact.text.strip()
        if not text:
            continue
        ids = [m.id for m in sources]
        entry = MemoryEntry(
            id=entry_id_for(first.user_id, ids, text), user_id=first.user_id, memory=text,
            time_stamp=max(m.time_stamp for m in sources), topic_id=first.topic_id, session_id=first.session_id,
            source_ids=ids, speaker=sources[0].speaker or sources[0].role,
            keywords=[k.strip() for k in fact.keywords if k.strip()] if batch.data.with_metadata else [],
            category=(fact.category or None) if batch.data.with_metadata else None,
            summary=summaries.get(first.topic_id) if batch.data.with_summary else None,
        )
        entries.setdefault(entry.id, entry)
    return list(entries.values())


def to_graph(reply: prompt.ExtractionReply, batch: PreparedBatch, entries: list[MemoryEntry]) -> GraphFacts:
    """The reply's entities and relations; each relation gets its messages' real ids, the entries of the
    batch made from any of those messages, and the time of its latest message."""
    by_message: dict[str, list[str]] = {}
    for entry in entries:
        for message_id in entry.source_ids:
            by_message.setdefault(message_id, []).append(entry.id)
    relations = []
    for rel in reply.relations:
        sources = [batch.messages[r] for r in dict.fromkeys(rel.source_ids)]
        ids = [m.id for m in sources]
        linked = list(dict.fromkeys(e for i in ids for e in by_message.get(i, [])))
        relations.append(GraphRelation(subject=rel.subject, relation=rel.relation, object=rel.object, source_ids=ids,
                                       entry_ids=linked, observed_ts=max(m.time_stamp.timestamp() for m in sources)))
    entities = [GraphEntity(name=e.name, aliases=e.aliases) for e in reply.entities]
    return GraphFacts(entities=entities, relations=relations)


def extract_with_llm(client: LLMClient, segments: list[TopicSegment], roles: set[str], *,
                     metadata: bool = False, summary: bool = False) -> list[MemoryEntry]:
    """One call (plus at most one repair) for the whole batch; raises ``ExtractionParseError`` or ``TransientError``."""
    return extract_with_graph(client, segments, roles, metadata=metadata, summary=summary)[0]


def extract_with_graph(client: LLMClient, segments: list[TopicSegment], roles: set[str], *, metadata: bool = False,
                       summary: bool = False, graph: bool = False,
                       event: bool = False) -> tuple[list[MemoryEntry], GraphFacts | None]:
    """``extract_with_llm``'s call, giving with ``graph`` the graph facts of the same reply too; with
    ``event`` (``extraction_mode: event``) a second, relational call adds its entries."""
    batch = prepare(segments, roles, metadata, summary, graph)
    if batch.empty:
        return [], GraphFacts() if graph else None
    sessions = {s.session_id for s in segments}
    tag = CallTag("extraction", segments[0].user_id, sessions.pop() if len(sessions) == 1 else None)
    reply = ask_json(client, prompt.render(batch.data), lambda text: prompt.parse(text, batch.data), tag)
    entries = to_entries(reply, batch)
    facts = to_graph(reply, batch, entries) if graph else None
    if event:
        entries += relational.extract_relations(client, batch, tag)
    return entries, facts


class LLMExtractor:
    """The ``Extractor`` backed by an LLM: LightMem's batched extraction with checked provenance."""

    def __init__(self, client: LLMClient, roles: set[str], *, metadata: bool = False, summary: bool = False,
                 graph: bool = False, event: bool = False) -> None:
        self.client = client
        self.roles = roles
        self.metadata = metadata
        self.summary = summary
        self.graph = graph
        self.event = event  # extraction_mode: event: a relational call after the factual one

    def extract(self, segments: list[TopicSegment]) -> list[MemoryEntry]:
        return self.extract_with_graph(segments)[0]

    def extract_with_graph(self, segments: list[TopicSegment]) -> tuple[list[MemoryEntry], GraphFacts | None]:
        """The entries and, with ``graph_mem``, the graph facts of the same call."""
        return extract_with_graph(self.client, segments, self.roles, metadata=self.metadata, summary=self.summary,
                                  graph=self.graph, event=self.event)
