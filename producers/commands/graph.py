"""``lightmem graph USER [ENTITY]``: a user's graph (``graph_mem``) from the history database.

It reads the history where the configuration puts it (the SQLite file on this host, or PostgreSQL),
as ``lightmem stats`` does, so it needs no worker.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    graph = subparsers.add_parser("graph", help="a user's entities, or one entity's neighbourhood with provenance "
                                                "(graph_mem)")
    graph.add_argument("user", help="the user id the graph belongs to")
    graph.add_argument("entity", nargs="?", help="an entity's name or alias (omit: list the user's entities)")
    graph.add_argument("--hops", type=int, choices=[1, 2], default=1, help="1: the entity's own edges; 2: one step further")
    graph.add_argument("--json", action="store_true", help="machine output")
    graph.set_defaults(func=_graph)


def _graph(args: argparse.Namespace) -> int:
    from lightmem_core.factory import build_history
    from lightmem_core.graph.read import describe
    from workers.settings import get_settings

    config = get_settings().memory_cfg
    if not config.history_db_url and not Path(config.history_db_path).is_file():
        raise FileNotFoundError(f"no history database at {config.history_db_path} (history_db_path) on this host")
    history = build_history(config)
    try:
        view = describe(history, args.user, args.entity, args.hops)
    finally:
        history.close()
    if args.json:
        print(json.dumps(view, default=str))
    elif args.entity is None:
        print(f"graph of {args.user}: {len(view['nodes'])} nodes, {view['edges_live']} live edges, "
              f"{view['edges_retired']} retired")
        for node in view["nodes"]:
            merged = f" (merged into {node['merged_into']})" if node["merged_into"] else ""
            print(f"  {node['label']}{merged}  names: {', '.join(node['names'])}")
    else:
        _print_entity(view)
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _print_entity(view: dict[str, Any]) -> None:
    node = view["entity"]
    print(f"{node['label']}  names: {', '.join(node['names'])}")
    for edge in view["edges"]:
        state = f"retired {_when(edge['retired_at'])}" if edge["retired_at"] else "live"
        print(f"  [{state}, hop {edge['hop']}] {edge['subject']} --{edge['relation']}--> {edge['object']}"
              f"  (seen {_when(edge['observed_ts'])})")
        for message in edge.get("messages", []):
            print(f"      {message['time_stamp']} {message.get('speaker') or message['role']}: {message['content']}")
        if edge["entry_ids"]:
            print(f"      entries: {', '.join(edge['entry_ids'])}")
