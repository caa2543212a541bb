"""Storing a batch's graph facts: nodes, names, edges and their provenance, in the caller's transaction.

``store_batch`` calls ``write_facts`` inside the transaction that records the batch's entries, after
the check that the batch was not stored before, so a redelivered batch writes nothing twice. Every
statement is an upsert as well, so writing the same facts again changes nothing.
"""

from __future__ import annotations

import time

from lightmem_core.graph.model import (
    MAX_NAME_WORDS,
    GraphFacts,
    edge_id_for,
    node_id_for,
    normalise_name,
    normalise_relation,
)
from lightmem_core.history.base import Connection

# An edge seen again keeps its first created_at; a newer observation moves observed_ts forward and brings a
# retired edge back (the consolidation then retires whatever it contradicts).
_UPSERT_EDGE = (
    "INSERT INTO graph_edges (id,user_id,subject_id,relation,object_id,observed_ts,created_at) VALUES (?,?,?,?,?,?,?)"
    " ON CONFLICT(id) DO UPDATE SET"
    " retired_at = CASE WHEN excluded.observed_ts > graph_edges.observed_ts THEN NULL ELSE graph_edges.retired_at END,"
    " retired_by = CASE WHEN excluded.observed_ts > graph_edges.observed_ts THEN NULL ELSE graph_edges.retired_by END,"
    " observed_ts = CASE WHEN excluded.observed_ts > graph_edges.observed_ts THEN excluded.observed_ts"
    " ELSE graph_edges.observed_ts END"
)


def resolve_node(conn: Connection, user_id: str, name: str) -> str | None:
    """The live node a normalised name points to (through a merge), or None when the name is new."""
    rows = conn.execute(
        "SELECT COALESCE(n.merged_into, n.id) AS id FROM graph_names g JOIN graph_nodes n ON n.id = g.node_id"
        " WHERE g.user_id=? AND g.name=? ORDER BY n.created_at, n.id LIMIT 1", (user_id, name))
    return str(rows[0]["id"]) if rows else None


class _Nodes:
    """The nodes of one write, each name resolved once."""

    def __init__(self, conn: Connection, user_id: str, now: float) -> None:
        self.conn, self.user_id, self.now = conn, user_id, now
        self.known: dict[str, str] = {}

    def node(self, label: str) -> str | None:
        name = normalise_name(label)
        if not name or len(name.split()) > MAX_NAME_WORDS:
            return None
        if name in self.known:
            return self.known[name]
        node_id = resolve_node(self.conn, self.user_id, name) or node_id_for(self.user_id, name)
        self.conn.execute("INSERT INTO graph_nodes (id,user_id,name,label,created_at) VALUES (?,?,?,?,?)"
                          " ON CONFLICT DO NOTHING", (node_id, self.user_id, name, label.strip(), self.now))
        self.name(name, node_id)
        self.known[name] = node_id
        return node_id

    def name(self, name: str, node_id: str) -> None:
        self.conn.execute("INSERT INTO graph_names VALUES (?,?,?) ON CONFLICT DO NOTHING", (self.user_id, name, node_id))


def write_facts(conn: Connection, user_id: str, facts: GraphFacts) -> int:
    """Upsert the facts' nodes (with their aliases as names), edges and provenance; returns edges written.

    An alias that already names another node is recorded for both: the offline update merges them.
    """
    nodes = _Nodes(conn, user_id, time.time())
    for entity in facts.entities:
        node_id = nodes.node(entity.name)
        if node_id is None:
            continue
        for alias in entity.aliases:
            alias_name = normalise_name(alias)
            if alias_name and len(alias_name.split()) <= MAX_NAME_WORDS:
                nodes.name(alias_name, node_id)
                nodes.known.setdefault(alias_name, node_id)  # this batch's relations may use the alias
    written = 0
    for rel in facts.relations:
        subject, obj, relation = nodes.node(rel.subject), nodes.node(rel.object), normalise_relation(rel.relation)
        if subject is None or obj is None or not relation or subject == obj:
            continue
        edge_id = edge_id_for(user_id, subject, relation, obj)
        conn.execute(_UPSERT_EDGE, (edge_id, user_id, subject, relation, obj, rel.observed_ts, nodes.now))
        conn.executemany("INSERT INTO graph_edge_messages VALUES (?,?,?) ON CONFLICT DO NOTHING",
                         [(user_id, edge_id, m) for m in rel.source_ids])
        conn.executemany("INSERT INTO graph_edge_entries VALUES (?,?,?) ON CONFLICT DO NOTHING",
                         [(user_id, edge_id, e) for e in rel.entry_ids])
        written += 1
    return written
