"""Reading the graph: which nodes a set of names points to, and the edges within 1–2 hops of them.

The walk is one recursive query (``WITH RECURSIVE``, the same text on SQLite and PostgreSQL) over live
edges only: retired edges stay in the table as history but are never walked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightmem_core.errors import InvalidInput, NotFound
from lightmem_core.graph.model import normalise_name
from lightmem_core.history import HistoryStore

MAX_HOPS = 2

# reach: the nodes within ``hop`` steps of the seeds; near: each edge touching a node reached in fewer
# than the hops asked for, at its smallest distance (an edge out of a seed is at distance 1).
_NEIGHBOURHOOD = """
WITH RECURSIVE reach(node_id, hop) AS (
    SELECT id, 0 FROM graph_nodes WHERE user_id = ? AND id IN ({seeds})
    UNION
    SELECT CASE WHEN e.subject_id = r.node_id THEN e.object_id ELSE e.subject_id END, r.hop + 1
    FROM reach r JOIN graph_edges e ON (e.subject_id = r.node_id OR e.object_id = r.node_id)
    WHERE r.hop < ? - 1 AND e.retired_at IS NULL AND e.user_id = ?
),
near(edge_id, hop) AS (
    SELECT e.id, MIN(r.hop) + 1 FROM reach r JOIN graph_edges e ON (e.subject_id = r.node_id OR e.object_id = r.node_id)
    WHERE e.retired_at IS NULL AND e.user_id = ? GROUP BY e.id
)
SELECT e.id, near.hop, e.relation, e.observed_ts, e.subject_id, e.object_id, s.label AS subject, o.label AS object
FROM near JOIN graph_edges e ON e.id = near.edge_id
JOIN graph_nodes s ON s.id = e.subject_id JOIN graph_nodes o ON o.id = e.object_id
ORDER BY near.hop, e.observed_ts DESC, e.id LIMIT ?
"""


@dataclass
class Edge:
    """An edge as a caller sees it: the triple by display names, its distance and its provenance."""

    id: str
    subject: str
    relation: str
    object: str
    hop: int
    observed_ts: float
    entry_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    retired_at: float | None = None
    ends: tuple[str, str] = ("", "")  # the subject's and the object's node ids

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "relation": self.relation, "object": self.object,
                "hop": self.hop, "observed_ts": self.observed_ts, "entry_ids": self.entry_ids,
                "message_ids": self.message_ids, "retired_at": self.retired_at}


def _marks(n: int) -> str:
    return ",".join("?" * n)


def nodes_named(history: HistoryStore, user_id: str, names: list[str]) -> dict[str, str]:
    """The live node of each of ``names`` (normalised) that ``user_id``'s graph knows: name → node id."""
    if not names:
        return {}
    with history.connection() as conn:
        rows = conn.execute(
            "SELECT g.name, COALESCE(n.merged_into, n.id) AS id FROM graph_names g JOIN graph_nodes n ON n.id = g.node_id"
            f" WHERE g.user_id = ? AND g.name IN ({_marks(len(names))}) ORDER BY n.created_at DESC, n.id DESC",
            (user_id, *names))
    return {str(r["name"]): str(r["id"]) for r in rows}  # the oldest node wins a name shared before a merge


def neighbourhood(history: HistoryStore, user_id: str, node_ids: list[str], hops: int, max_edges: int = 200,
                  with_messages: bool = False) -> list[Edge]:
    """The live edges within ``hops`` (1 or 2) of ``node_ids``, nearest and newest first, with the entries
    (and, when asked, the messages) they come from."""
    seeds = list(dict.fromkeys(node_ids))
    if not seeds or hops < 1:
        return []
    sql = _NEIGHBOURHOOD.replace("{seeds}", _marks(len(seeds)))
    with history.connection() as conn:
        rows = conn.execute(sql, (user_id, *seeds, min(hops, MAX_HOPS), user_id, user_id, max_edges))
        edges = [Edge(id=r["id"], subject=r["subject"], relation=r["relation"], object=r["object"], hop=int(r["hop"]),
                      observed_ts=float(r["observed_ts"]), ends=(r["subject_id"], r["object_id"])) for r in rows]
        _add_provenance(conn, edges, with_messages)
    return edges


def _add_provenance(conn: Any, edges: list[Edge], with_messages: bool) -> None:
    by_id = {e.id: e for e in edges}
    ids = list(by_id)
    tables = [("graph_edge_entries", "entry_id", "entry_ids")]
    if with_messages:
        tables.append(("graph_edge_messages", "message_id", "message_ids"))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for table, column, attr in tables:
            for r in conn.execute(f"SELECT edge_id, {column} AS ref FROM {table} WHERE edge_id IN ({_marks(len(chunk))})"
                                  f" ORDER BY edge_id, {column}", chunk):
                getattr(by_id[r["edge_id"]], attr).append(str(r["ref"]))


def edges_of(history: HistoryStore, user_id: str, node_id: str) -> list[Edge]:
    """Every edge touching ``node_id``, retired ones too (hop 1), newest first, with full provenance."""
    with history.connection() as conn:
        rows = conn.execute(
            "SELECT e.id, e.relation, e.observed_ts, e.retired_at, s.label AS subject, o.label AS object"
            " FROM graph_edges e JOIN graph_nodes s ON s.id = e.subject_id JOIN graph_nodes o ON o.id = e.object_id"
            " WHERE e.user_id = ? AND (e.subject_id = ? OR e.object_id = ?) ORDER BY e.observed_ts DESC, e.id",
            (user_id, node_id, node_id))
        edges = [Edge(id=r["id"], subject=r["subject"], relation=r["relation"], object=r["object"], hop=1,
                      observed_ts=float(r["observed_ts"]), retired_at=r["retired_at"]) for r in rows]
        _add_provenance(conn, edges, with_messages=True)
    return edges


def node_rows(history: HistoryStore, user_id: str) -> list[dict[str, Any]]:
    """Every node of ``user_id`` with its names (merged nodes too, with ``merged_into``)."""
    with history.connection() as conn:
        nodes = conn.execute("SELECT id, name, label, merged_into, created_at FROM graph_nodes WHERE user_id = ?"
                             " ORDER BY name, id", (user_id,))
        names = conn.execute("SELECT node_id, name FROM graph_names WHERE user_id = ? ORDER BY name", (user_id,))
    aliases: dict[str, list[str]] = {}
    for r in names:
        aliases.setdefault(str(r["node_id"]), []).append(str(r["name"]))
    return [{**r, "names": aliases.get(str(r["id"]), [])} for r in nodes]


def describe(history: HistoryStore, user_id: str, entity: str | None = None, hops: int = 1) -> dict[str, Any]:
    """What ``LightMemory.graph`` and ``lightmem graph`` show.

    Without ``entity``: every node of the user with its names, and how many edges are live and retired.
    With one: that entity's node (found by any of its names), every edge touching it (retired ones too,
    with when and by what), and with ``hops=2`` the live edges one step further; each edge with the
    entries and messages it comes from. ``NotFound`` when the user's graph has no such name.
    """
    if entity is None:
        with history.connection() as conn:
            counts = conn.execute("SELECT COALESCE(SUM(CASE WHEN retired_at IS NULL THEN 1 ELSE 0 END), 0) AS live,"
                                  " COUNT(*) AS total FROM graph_edges WHERE user_id = ?", (user_id,))[0]
        live = int(counts["live"])
        return {"user_id": user_id, "nodes": node_rows(history, user_id), "edges_live": live,
                "edges_retired": int(counts["total"]) - live}
    if hops not in (1, 2):
        raise InvalidInput(f"hops: expected 1 or 2, got {hops!r}")
    name = normalise_name(entity)
    node_id = nodes_named(history, user_id, [name]).get(name) if name else None
    if node_id is None:
        raise NotFound(f"no entity named {entity!r} in the graph of user {user_id!r}")
    node = next(r for r in node_rows(history, user_id) if r["id"] == node_id)
    edges = edges_of(history, user_id, node_id)
    if hops == 2:
        seen = {e.id for e in edges}
        edges += [e for e in neighbourhood(history, user_id, [node_id], 2, max_edges=1000, with_messages=True)
                  if e.id not in seen]
    originals = history.messages_by_id(user_id, [m for e in edges for m in e.message_ids])
    shown = [{**e.as_dict(), "messages": [_message_view(originals[m]) for m in e.message_ids if m in originals]}
             for e in edges]
    return {"user_id": user_id, "entity": node, "edges": shown}


def _message_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("id", "session_id", "role", "speaker", "content", "time_stamp")}
