"""The offline update's part for the graph: merge duplicate nodes and retire contradicted edges.

Nothing is deleted. A merged node keeps its row with ``merged_into`` set (its names then lead to the
survivor); an edge is retired with ``retired_at`` and ``retired_by`` and stays readable. Every merge and
retirement is also written to ``graph_history``. One transaction per user, under the user's graph lock.
"""

from __future__ import annotations

import time
from typing import Any

from lightmem_core.graph.model import edge_id_for
from lightmem_core.history import HistoryStore
from lightmem_core.history.base import Connection


def consolidate(history: HistoryStore, user_id: str) -> dict[str, int]:
    """Merge the nodes that share a name (the same normalised name or an alias the model reported), then
    retire every live edge that a newer edge with the same subject and relation contradicts."""
    with history.connection() as conn:
        if not conn.execute("SELECT 1 AS found FROM graph_nodes WHERE user_id = ? LIMIT 1", (user_id,)):
            return {"nodes_merged": 0, "edges_retired": 0}  # no graph (graph_mem off): no write transaction
    with history.transaction() as conn:
        history.lock(conn, f"graph:{user_id}")
        now = time.time()
        merged = _merge_duplicates(conn, user_id, now)
        retired = _retire_contradicted(conn, user_id, now)
    return {"nodes_merged": merged, "edges_retired": retired}


def _log(conn: Connection, user_id: str, action: str, item: str, other: str | None, reason: str, now: float) -> None:
    conn.execute("INSERT INTO graph_history (user_id,action,item_id,other_id,reason,created_at) VALUES (?,?,?,?,?,?)",
                 (user_id, action, item, other, reason, now))


def _groups(conn: Connection, user_id: str) -> list[list[dict[str, Any]]]:
    """Live nodes that share a name, as connected groups (a shares a name with b, b with c: one group)."""
    rows = conn.execute(
        "SELECT g.name, n.id, n.created_at FROM graph_names g JOIN graph_nodes n ON n.id = g.node_id"
        " WHERE g.user_id = ? AND n.merged_into IS NULL ORDER BY g.name, n.id", (user_id,))
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    info: dict[str, dict[str, Any]] = {}
    for r in rows:
        node = str(r["id"])
        info.setdefault(node, {"id": node, "created_at": float(r["created_at"]), "names": 0})["names"] += 1
        other = first_of.setdefault(str(r["name"]), node)
        parent[root(node)] = root(other)
    groups: dict[str, list[dict[str, Any]]] = {}
    for node in info:
        groups.setdefault(root(node), []).append(info[node])
    return [g for g in groups.values() if len(g) > 1]


def _merge_duplicates(conn: Connection, user_id: str, now: float) -> int:
    merged = 0
    for group in _groups(conn, user_id):
        # The survivor: the node known by most names (the one the model gave aliases), then the oldest.
        survivor = sorted(group, key=lambda n: (-n["names"], n["created_at"], n["id"]))[0]["id"]
        for loser in (n["id"] for n in group if n["id"] != survivor):
            _merge(conn, user_id, loser, survivor, now)
            merged += 1
    return merged


def _merge(conn: Connection, user_id: str, loser: str, survivor: str, now: float) -> None:
    conn.execute("UPDATE graph_nodes SET merged_into = ? WHERE id = ? OR merged_into = ?", (survivor, loser, loser))
    conn.execute("INSERT INTO graph_names SELECT user_id, name, ? FROM graph_names WHERE node_id = ?"
                 " ON CONFLICT DO NOTHING", (survivor, loser))
    _log(conn, user_id, "merge_node", loser, survivor, "shares a name with the survivor", now)
    edges = conn.execute("SELECT * FROM graph_edges WHERE user_id = ? AND retired_at IS NULL AND"
                         " (subject_id = ? OR object_id = ?)", (user_id, loser, loser))
    for e in edges:
        subject = survivor if e["subject_id"] == loser else e["subject_id"]
        obj = survivor if e["object_id"] == loser else e["object_id"]
        moved = edge_id_for(user_id, subject, e["relation"], obj)
        if subject != obj:
            conn.execute(
                "INSERT INTO graph_edges (id,user_id,subject_id,relation,object_id,observed_ts,created_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET observed_ts = CASE WHEN excluded.observed_ts >"
                " graph_edges.observed_ts THEN excluded.observed_ts ELSE graph_edges.observed_ts END",
                (moved, user_id, subject, e["relation"], obj, e["observed_ts"], now))
            for table, column in (("graph_edge_messages", "message_id"), ("graph_edge_entries", "entry_id")):
                conn.execute(f"INSERT INTO {table} SELECT user_id, ?, {column} FROM {table} WHERE edge_id = ?"
                             " ON CONFLICT DO NOTHING", (moved, e["id"]))
        _retire(conn, user_id, str(e["id"]), moved if subject != obj else None, "its node was merged", now)


def _retire(conn: Connection, user_id: str, edge_id: str, by: str | None, reason: str, now: float) -> None:
    conn.execute("UPDATE graph_edges SET retired_at = ?, retired_by = ? WHERE id = ?", (now, by, edge_id))
    _log(conn, user_id, "retire_edge", edge_id, by, reason, now)


def _retire_contradicted(conn: Connection, user_id: str, now: float) -> int:
    """Of the live edges with one subject and relation, those older than the newest are contradicted by
    it (edges observed at the same time, from the same messages, all stay)."""
    rows = conn.execute("SELECT id, subject_id, relation, object_id, observed_ts FROM graph_edges"
                        " WHERE user_id = ? AND retired_at IS NULL ORDER BY subject_id, relation, observed_ts DESC, id",
                        (user_id,))
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    retired = 0
    for r in rows:
        key = (str(r["subject_id"]), str(r["relation"]))
        latest = newest.setdefault(key, r)
        if float(r["observed_ts"]) < float(latest["observed_ts"]) and r["object_id"] != latest["object_id"]:
            _retire(conn, user_id, str(r["id"]), str(latest["id"]), "a newer edge with the same subject and relation", now)
            retired += 1
    return retired
