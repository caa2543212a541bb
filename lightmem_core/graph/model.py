"""A batch's graph facts, how names are normalised, and the stable ids of nodes and edges.

Ids depend only on the user and the normalised names (a node) or the triple (an edge), so a batch
extracted again, or the same conversation ingested again, writes the same rows.
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, Field

from lightmem_core.models import stable_id

_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b")
_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")
_ARTICLES = ("the ", "a ", "an ")
MAX_NAME_WORDS = 6  # longer "names" are descriptions, not entities; the query matcher looks this far


def normalise_name(text: str) -> str:
    """The key an entity is known by: Unicode-folded, lower case, single spaces, no possessive ``'s``,
    no punctuation around words and no leading article ("The Louvre" and "louvre" are one node)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = [_EDGE_PUNCT.sub("", _POSSESSIVE.sub("", w)) for w in folded.split()]
    name = " ".join(w for w in words if w)
    for article in _ARTICLES:
        if name.startswith(article) and len(name) > len(article):
            name = name[len(article):]
    return name


def normalise_relation(text: str) -> str:
    """A relation as one lower-case phrase: ``lives_in`` and ``Lives in`` are the same relation."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().replace("_", " ").split())


def node_id_for(user_id: str, name: str) -> str:
    """The node of ``user_id`` called ``name`` (already normalised): the same on every run and host."""
    return stable_id("graph-node", user_id, name)


def edge_id_for(user_id: str, subject_id: str, relation: str, object_id: str) -> str:
    """The edge of the triple (relation already normalised)."""
    return stable_id("graph-edge", user_id, subject_id, relation, object_id)


class GraphEntity(BaseModel):
    """An entity of a batch: the name it goes by and the other names the model reported for it."""

    name: str
    aliases: list[str] = Field(default_factory=list)


class GraphRelation(BaseModel):
    """One (subject, relation, object) of a batch with its provenance: the real ids of the messages it
    comes from, the entries of the batch built from those messages, and the latest message time."""

    subject: str
    relation: str
    object: str
    source_ids: list[str]
    entry_ids: list[str] = Field(default_factory=list)
    observed_ts: float


class GraphFacts(BaseModel):
    """What one extraction call says about the graph (empty without ``graph_mem``)."""

    entities: list[GraphEntity] = Field(default_factory=list)
    relations: list[GraphRelation] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.entities and not self.relations
