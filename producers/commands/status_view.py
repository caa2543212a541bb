"""``lightmem status`` for people: the overview or one tracked item as aligned lines, times as dates.

No user text: failures show their reason (cut), never the payload or the LLM reply (``--json`` has them).
"""

from __future__ import annotations

import time
from typing import Any

REASON_CHARS = 120


def when(epoch: Any) -> str:
    """An epoch time as a UTC date and time; anything else as it is."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(epoch)


def _cut(text: Any) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= REASON_CHARS else flat[: REASON_CHARS - 1] + "…"


def render_item(tracking_id: str, item: dict[str, Any]) -> str:
    rows = [("tracking id", tracking_id), ("state", item.get("state", "unknown"))]
    for key in ("user_id", "session_id", "turns", "segments", "segments_stored"):
        if key in item:
            rows.append((key.replace("_", " "), str(item[key])))
    for key in ("queued_at", "indexed_at"):
        if key in item:
            rows.append((key.replace("_", " "), when(item[key])))
    if "reason" in item:
        rows.append(("reason", _cut(item["reason"])))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def render_overview(status: dict[str, Any]) -> str:
    lines = ["Queues (messages waiting):"]
    width = max(len(q) for q in status["backlog"])
    lines += [f"  {queue:<{width}}  {count:>7,}" for queue, count in status["backlog"].items()]
    buffered = status["buffered_users"]
    failed_users = status["users_with_failed_batches"]
    rows = [
        ("Buffered", f"{status['buffered_turns']:,} turns of {len(buffered)} user(s)"
         + (f" ({', '.join(buffered[:8])}{', …' if len(buffered) > 8 else ''})" if buffered else "")),
        ("Queued, not buffered", f"{status['in_flight']:,} item(s)"),
        ("Batches in flight", f"{status['batches_in_flight']:,}"),
        ("Failed batches", f"{status['failed_batches']:,}"
         + (f" of {', '.join(failed_users[:8])}: `lightmem retry USER` or `--all`" if failed_users else "")),
        ("Failures", f"{status['failures']:,} in all"),
    ]
    lines.append("")
    lines += [f"{label + ':':<22}{value}" for label, value in rows]
    lines += [f"  {when(f.get('at'))}  {f.get('task')}  user={f.get('user_id')}  {_cut(f.get('reason'))}"
              for f in status["recent_failures"]]
    lines.append(f"{'Dead letters:':<22}{status['dead_letters']:,} in all")
    lines += [f"  {when(d.get('at'))}  {_cut(d.get('reason'))}" for d in status["recent_dead_letters"]]
    return "\n".join(lines)
