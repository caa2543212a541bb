"""LightMem's LoCoMo recipe end to end: in one process, through the queues, the offline update, and the
bare model compute the same turns need (issue 13).

The recipe (LightMem's own for LoCoMo): LLMLingua-2 pre-compression at rate 0.6, topic segmentation
sharing that forward pass (``precomp_topic_shared``), user side only, extraction at 512 tokens
(``extract_threshold`` 0.5 of 1024), all-MiniLM-L6-v2 embeddings, then the offline update (top 20,
keep 10, score threshold 0.9). LLMLingua-2's weights cannot be downloaded here: the compressor is the
bundled MiniLM-L6 with a fresh 2-label head (seeded), built from configuration as the tests build it.
Every LLM call goes to the scripted OpenAI-compatible server (``producers.scripted_llm``, its own
process) answering after the given latency; its update answers are a repeatable mix of update,
delete and ignore.

Rows: **one process** (``LightMemory``: each session one ``add_memory`` with ``force_segment``, each
conversation flushed at its end; CPU is this process's); **queues** (fresh Redis, 1 compress, 4
extract × 8 threads, 1 store, 1 update process; sessions enqueued users interleaved, 8 to a compress
task as ``lightmem enqueue`` sends them; CPU is every worker's, Redis's and the producer's, from /proc); the **offline update** of each (one process:
``construct_update_queue_all_entries`` + ``offline_update_all_entries``; queues: ``update_now``);
and the **bare model compute**: one batched compression pass over all turns (its attention kept for
the segmenter), one batched embedding of the turns (the segmenter's fine boundaries) and one of the
stored entries, nothing else, measured twice (after the first one-process run and last; the ratios
use the mean, since this machine's speed drifts by a fifth within a quarter of an hour). Models are
loaded before any clock starts. LLM calls and tokens are
the history's accounting (equal to the server's); peak calls in flight come from the calls' times.

``python -m bench.pipeline [--latency 0 1] [--conversations N] [--only one-process queues bare]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pipeline_runs as runs
from bench.common import data_dir
from producers.datasets import Conversation, load_locomo

LATENCIES = (0.0, 1.0)
PARTS = ("one-process", "queues", "bare")
REFERENCE_WALL_S = {0.0: 599.0, 1.0: 795.0}  # LightMem's reference code on this machine (issue 13)
REFERENCE_UPDATE_S = {0.0: 56.0, 1.0: 65.0}
REFERENCE_CALLS = 281


@dataclass
class Row:
    """One ingestion run and the offline update after it."""

    name: str
    latency_s: float
    wall_s: float
    cpu_s: float
    calls: int
    prompt_tokens: int
    completion_tokens: int
    peak_in_flight: int
    entries: int
    update_wall_s: float
    update_calls: int
    update_peak_in_flight: int
    cpu_parts: dict[str, float] = field(default_factory=dict)


def start_llm() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "producers.scripted_llm", "--update-actions", "mixed"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def set_latency(base_url: str, seconds: float) -> None:
    control = base_url.rsplit("/v1", 1)[0] + "/control"
    request = urllib.request.Request(control, data=json.dumps({"delay_s": seconds}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def llm_accounting(history_db: Path, update: bool) -> dict[str, int]:
    """Calls and tokens of the ingestion (``update=False``) or of the offline update, from the history,
    and the most calls that were in flight at once (each call ends at ``created_at``)."""
    with sqlite3.connect(history_db) as conn:
        rows = conn.execute("SELECT purpose, prompt_tokens, completion_tokens, latency_s, created_at FROM llm_calls "
                            "WHERE outcome <> 'cache_hit'").fetchall()
    mine = [r for r in rows if r[0].startswith("update") == update]
    events = sorted([(end - latency, 1) for _, _, _, latency, end in mine] + [(end, -1) for *_, end in mine])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return {"calls": len(mine), "prompt_tokens": sum(r[1] for r in mine), "completion_tokens": sum(r[2] for r in mine),
            "peak": peak}


def run(data_path: Path, latencies: tuple[float, ...] = LATENCIES, conversations_n: int | None = None,
        parts: tuple[str, ...] = PARTS) -> str:
    conversations = load_locomo(data_path)[:conversations_n]
    rows: list[Row] = []
    bares: list[dict[str, float]] = []
    llm, base_url = start_llm()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            lingua = runs.build_lingua_model(folder / "lingua")
            entry_texts: list[str] = []
            for latency in latencies:
                set_latency(base_url, latency)
                if "one-process" in parts:
                    row, texts = runs.one_process(conversations, folder / f"one-{latency:g}", lingua, base_url)
                    rows.append(_row("one process", latency, row, folder / f"one-{latency:g}" / "history.db"))
                    print(rows[-1], file=sys.stderr, flush=True)  # progress: a whole run takes long
                    entry_texts = entry_texts or texts
                    if "bare" in parts and not bares:  # once early, once last: the machine's speed drifts
                        bares.append(runs.bare_compute(conversations, folder / "bare-0", lingua, entry_texts))
                        print(bares[-1], file=sys.stderr, flush=True)
                if "queues" in parts:
                    row = runs.queues(conversations, folder / f"queues-{latency:g}", lingua, base_url)
                    rows.append(_row("queues", latency, row, folder / f"queues-{latency:g}" / "history.db"))
                    print(rows[-1], file=sys.stderr, flush=True)
            if "bare" in parts:
                bares.append(runs.bare_compute(conversations, folder / "bare", lingua, entry_texts))
                print(bares[-1], file=sys.stderr, flush=True)
    finally:
        llm.terminate()
        llm.wait(10)
    return report(conversations, rows, mean_bare(bares), [b["wall_s"] for b in bares])


def mean_bare(bares: list[dict[str, float]]) -> dict[str, float] | None:
    """The bare compute the ratios use: the mean of its measurements (after the first run and last), so
    that a run's ratio compares it with the machine's speed over the whole benchmark, not only at its end."""
    if not bares:
        return None
    return {k: sum(b[k] for b in bares) / len(bares) for k in bares[0]}


def _row(name: str, latency: float, measured: dict[str, Any], history_db: Path) -> Row:
    ingest = measured.get("llm") or llm_accounting(history_db, update=False)
    update = measured.get("update_llm") or llm_accounting(history_db, update=True)
    return Row(name=name, latency_s=latency, wall_s=measured["wall_s"], cpu_s=measured["cpu_s"],
               calls=ingest["calls"], prompt_tokens=ingest["prompt_tokens"],
               completion_tokens=ingest["completion_tokens"], peak_in_flight=ingest["peak"],
               entries=measured["entries"], update_wall_s=measured["update_wall_s"], update_calls=update["calls"],
               update_peak_in_flight=update["peak"], cpu_parts=measured.get("cpu_parts", {}))


def report(conversations: list[Conversation], rows: list[Row], bare: dict[str, float] | None,
           bare_walls: list[float] | None = None) -> str:
    """The table, the bare compute's parts and the goals; ``bare_walls``: each bare measurement's wall seconds."""
    turns = sum(c.turn_count for c in conversations)
    lines = [
        "### LightMem's LoCoMo recipe end to end (`python -m bench.pipeline`)",
        "",
        f"{len(conversations)} LoCoMo conversations, {turns:,} turns; LLMLingua-2 stand-in (MiniLM-L6, 2-label head) at "
        "rate 0.6, shared topic segmentation, user side, extraction at 512 tokens, all-MiniLM-L6-v2, offline update "
        "at 0.9; scripted LLM server in its own process. Wall and CPU seconds of the ingestion (models loaded "
        "before); LightMem's reference: 795 s at 1 s per call, 599 s at 0 s, 281 calls, update 65 / 56 s. "
        "Calls in flight: the peak from the calls' times in one process; through the queues the mean (their "
        "accounting keeps totals only).",
        "",
        "| run | LLM latency | wall s | CPU s | LLM calls | prompt / completion tokens | tokens per turn "
        "| calls in flight (peak) | × bare wall | × bare CPU | reference / this | offline update |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall_x = f"{r.wall_s / bare['wall_s']:.2f}" if bare else "–"
        cpu_x = f"{r.cpu_s / bare['cpu_s']:.2f}" if bare else "–"
        ref = REFERENCE_WALL_S.get(r.latency_s)
        speed = f"{ref / r.wall_s:.2f}×" if ref and len(conversations) == 10 else "–"
        lines.append(f"| {r.name} | {r.latency_s:g} s | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.calls} | "
                     f"{r.prompt_tokens:,} / {r.completion_tokens:,} | {r.prompt_tokens / turns:.0f} | {r.peak_in_flight} | "
                     f"{wall_x} | {cpu_x} | {speed} | {r.update_wall_s:.1f} s, {r.update_calls} calls "
                     f"(peak {r.update_peak_in_flight} in flight) |")
    if bare:
        walls = bare_walls or []
        name = (f"bare model compute (mean of {len(walls)}: " + ", ".join(f"{w:.1f}" for w in walls) + " s)"
                if len(walls) > 1 else "bare model compute")
        lines.append(f"| {name} | – | {bare['wall_s']:.1f} | {bare['cpu_s']:.1f} | – | – | – | – | 1.00 | 1.00 "
                     "| – | – |")
        lines += ["", f"Bare compute in parts (wall / CPU s): compression + attention {bare['compress_wall_s']:.1f} / "
                      f"{bare['compress_cpu_s']:.1f}, embedding {bare['turns']:,.0f} turns {bare['turn_embed_wall_s']:.1f} / "
                      f"{bare['turn_embed_cpu_s']:.1f}, embedding {bare['entries']:,.0f} entries "
                      f"{bare['entry_embed_wall_s']:.1f} / {bare['entry_embed_cpu_s']:.1f}."]
    for r in rows:
        if r.cpu_parts:
            lines.append(f"- CPU of {r.name} at {r.latency_s:g} s: "
                         + ", ".join(f"{k} {v:.1f} s" for k, v in r.cpu_parts.items()))
    lines += ["", *goals(rows, bare, len(conversations) == 10)]
    return "\n".join(lines) + "\n"


def goals(rows: list[Row], bare: dict[str, float] | None, full: bool) -> list[str]:
    """Issue 13's goals, each met / NOT met (or not checked when its rows were not run)."""
    def find(name: str, latency: float) -> Row | None:
        return next((r for r in rows if r.name == name and r.latency_s == latency), None)

    out = ["Goals (issue 13):"]
    one1, one0, q1 = find("one process", 1.0), find("one process", 0.0), find("queues", 1.0)
    if one1 and full:
        out.append(f"- one process at 1 s: ≥ 3× faster than the reference (≤ 265 s) with ≤ 159 calls: "
                   f"{_met(one1.wall_s <= 265 and one1.calls <= 159)} ({one1.wall_s:.0f} s, "
                   f"{795 / one1.wall_s:.2f}×, {one1.calls} calls)")
    if q1 and bare:
        out.append(f"- queues at 1 s: wall ≤ 1.25× bare compute: {_met(q1.wall_s <= 1.25 * bare['wall_s'])} "
                   f"({q1.wall_s / bare['wall_s']:.2f}×)")
    if one0 and bare:
        rate = bare["wall_s"] / one0.wall_s
        out.append(f"- one process at 0 s: ≥ 80% of the bare compute rate: {_met(rate >= 0.8)} ({rate:.0%})")
    if bare:
        for r in rows:
            ratio = r.cpu_s / bare["cpu_s"]
            out.append(f"- CPU of {r.name} at {r.latency_s:g} s ≤ 1.5× bare: {_met(ratio <= 1.5)} ({ratio:.2f}×)")
    for name in ("one process", "queues"):
        at0, at1 = find(name, 0.0), find(name, 1.0)
        if at0 and full:
            out.append(f"- {name}, offline update at 0 s ≤ 11 s (1/5 of the reference's 56 s): "
                       f"{_met(at0.update_wall_s <= 11)} ({at0.update_wall_s:.1f} s)")
        if at0 and at1:
            bound = at0.update_wall_s + at1.update_calls * 1.0 / max(1, at1.update_peak_in_flight)
            out.append(f"- {name}, offline update at 1 s ≤ at 0 s + calls × 1 s / calls in flight "
                       f"({bound:.1f} s): {_met(at1.update_wall_s <= bound)} ({at1.update_wall_s:.1f} s)")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, nargs="+", default=list(LATENCIES), help="LLM seconds per call")
    parser.add_argument("--conversations", type=int, default=None, help="the first N LoCoMo conversations")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="the runs to make")
    args = parser.parse_args(argv)
    print(run(data_dir() / "locomo10.json", tuple(args.latency), args.conversations, tuple(args.only)))


if __name__ == "__main__":
    main()
