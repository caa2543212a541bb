"""The history's tables, written once in SQLite's dialect (a backend translates them), and the
upgrades of databases written by older versions. ``create`` runs both, once per open, under a lock,
so processes that open one database at the same time do not race."""

from __future__ import annotations

from lightmem_core.history.base import Connection, Database

# Message ids are scoped per user: two users may send the same explicit id.
MESSAGES = """CREATE TABLE IF NOT EXISTS messages (
    id TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_index INTEGER NOT NULL,
    role TEXT NOT NULL, speaker TEXT, content TEXT NOT NULL, compressed TEXT, time_stamp TEXT NOT NULL,
    tokens_original INTEGER NOT NULL DEFAULT 0, tokens_compressed INTEGER,
    state TEXT NOT NULL DEFAULT 'received', created_at REAL NOT NULL, PRIMARY KEY (user_id, id))"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL, session_id TEXT NOT NULL, time_stamp TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (user_id, session_id));
{messages};
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (user_id, session_id, turn_index);
CREATE TABLE IF NOT EXISTS buffers (
    user_id TEXT NOT NULL, kind TEXT NOT NULL, item_key TEXT NOT NULL, payload TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, item_key));
CREATE TABLE IF NOT EXISTS seen_messages (
    user_id TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (user_id, message_id));
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, session_id TEXT, purpose TEXT NOT NULL, model TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
    outcome TEXT NOT NULL, error TEXT, created_at REAL NOT NULL, cached_tokens INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS failed_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, purpose TEXT NOT NULL, payload TEXT NOT NULL,
    raw_reply TEXT, reason TEXT NOT NULL, created_at REAL NOT NULL, resolved_at REAL);
CREATE TABLE IF NOT EXISTS entry_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id TEXT NOT NULL, user_id TEXT NOT NULL, action TEXT NOT NULL,
    old_text TEXT, new_text TEXT, reason TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entry_history_by_entry ON entry_history (entry_id, id);
CREATE TABLE IF NOT EXISTS update_queue (
    entry_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, candidates TEXT NOT NULL, built_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS speaker_names (
    user_id TEXT NOT NULL, name TEXT NOT NULL, speaker TEXT NOT NULL, PRIMARY KEY (user_id, name, speaker));
""".replace("{messages}", MESSAGES)

# Graph memory (graph_mem, lightmem_core/graph): node and edge ids are derived from the user and the
# normalised names, so they are scoped per user. A name (or alias) may point to several nodes until the
# offline update merges them (merged_into); edges are retired, never deleted (retired_at).
GRAPH = """
CREATE TABLE IF NOT EXISTS graph_nodes (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, label TEXT NOT NULL, merged_into TEXT,
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS graph_nodes_by_user ON graph_nodes (user_id, name);
CREATE TABLE IF NOT EXISTS graph_names (
    user_id TEXT NOT NULL, name TEXT NOT NULL, node_id TEXT NOT NULL, PRIMARY KEY (user_id, name, node_id));
CREATE TABLE IF NOT EXISTS graph_edges (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, subject_id TEXT NOT NULL, relation TEXT NOT NULL,
    object_id TEXT NOT NULL, observed_ts REAL NOT NULL, created_at REAL NOT NULL, retired_at REAL, retired_by TEXT);
CREATE INDEX IF NOT EXISTS graph_edges_by_subject ON graph_edges (subject_id, relation);
CREATE INDEX IF NOT EXISTS graph_edges_by_object ON graph_edges (object_id);
CREATE TABLE IF NOT EXISTS graph_edge_messages (
    user_id TEXT NOT NULL, edge_id TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (edge_id, message_id));
CREATE TABLE IF NOT EXISTS graph_edge_entries (
    user_id TEXT NOT NULL, edge_id TEXT NOT NULL, entry_id TEXT NOT NULL, PRIMARY KEY (edge_id, entry_id));
CREATE TABLE IF NOT EXISTS graph_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, action TEXT NOT NULL, item_id TEXT NOT NULL,
    other_id TEXT, reason TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS graph_history_by_user ON graph_history (user_id, id);
"""
GRAPH_TABLES = ("graph_nodes", "graph_names", "graph_edges", "graph_edge_messages", "graph_edge_entries",
                "graph_history")

TABLES = ("sessions", "messages", "buffers", "counters", "llm_calls", "failed_batches", "entry_history",
          "update_queue", "seen_messages", "speaker_names", *GRAPH_TABLES)


def statements(db: Database, script: str) -> list[str]:
    """``script``'s statements in ``db``'s dialect (no statement of the schema holds a ``;``)."""
    return [s.strip() for s in db.schema(script).split(";") if s.strip()]


def create(db: Database) -> None:
    """Upgrade what an older version wrote, then create what is missing."""
    with db.transaction() as conn:
        db.lock(conn, "lightmem:history:schema")
        scope_message_ids_per_user(db, conn)
        for statement in statements(db, SCHEMA + GRAPH):
            conn.execute(statement)
        count_cached_tokens(db, conn)


def scope_message_ids_per_user(db: Database, conn: Connection) -> None:
    """Databases written before message ids were scoped per user keyed ``messages`` by id alone, so a
    second user's message with the same explicit id was dropped. Re-key such a table once."""
    if db.primary_key(conn, "messages") != ["id"]:
        return  # no table yet, or already keyed by (user_id, id)
    for statement in statements(db, MESSAGES.replace("EXISTS messages", "EXISTS messages_by_user")):
        conn.execute(statement)
    conn.execute("INSERT INTO messages_by_user SELECT * FROM messages")
    conn.execute("DROP TABLE messages")
    conn.execute("ALTER TABLE messages_by_user RENAME TO messages")


def count_cached_tokens(db: Database, conn: Connection) -> None:
    """Databases written before provider-side prompt caching was recorded have no ``cached_tokens``."""
    if "cached_tokens" not in db.columns(conn, "llm_calls"):
        conn.execute("ALTER TABLE llm_calls ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
