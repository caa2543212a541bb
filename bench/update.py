"""The offline update on all 10 LoCoMo conversations: before (one store search pair and one LLM call per
entry, serially) and after (one matrix product per user, several entries per call, calls in flight at
once), at 0 s and 1 s of scripted LLM latency, side by side in one run.

The conversations are ingested once with the default recipe (entropy pre-compression, all-MiniLM-L6-v2)
and LLM extraction against the scripted OpenAI-compatible server; every run then starts from a copy of
that store and history. A run is LightMem's two calls, ``construct_update_queue_all_entries()`` and
``offline_update_all_entries(0.9)`` (the issue's threshold); the server answers update prompts with a
repeatable mix of update, delete and ignore. "Before" is ``lightmem_core/update/offline.py`` as it was
at ``LEGACY_COMMIT``, loaded from git, driving the same components. Goals (issue 13): after, at 0 s,
≤ 11 s (a fifth of the LightMem reference's 56 s); at 1 s, no slower than the 0 s time plus calls × 1 s
/ calls in flight. ``run(data_path)`` returns Markdown; ``python -m bench.update [locomo10.json]`` prints it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import data_dir
from lightmem_core import LightMemory, parse_config
from producers.datasets import add_conversation, load_locomo
from producers.scripted_llm import ScriptedLLMServer

LEGACY_COMMIT = "46f52c4"  # the last commit whose offline update searched and called per entry
THRESHOLD = 0.9
REFERENCE_S = 56.0  # LightMem's offline update at 0 s on the same work (issue 13)
GOAL_S = REFERENCE_S / 5


@dataclass
class UpdateRun:
    """One offline update from the ingested snapshot."""

    variant: str
    latency_s: float
    queue_s: float
    apply_s: float
    calls: int
    max_in_flight: int
    counts: dict[str, int]

    @property
    def wall_s(self) -> float:
        return self.queue_s + self.apply_s


def legacy_offline() -> ModuleType:
    """``lightmem_core.update.offline`` at ``LEGACY_COMMIT``; ``RuntimeError`` when git cannot give it."""
    root = Path(__file__).resolve().parents[1]
    try:
        text = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:lightmem_core/update/offline.py"], cwd=root,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"cannot read the previous offline update from git ({LEGACY_COMMIT}): {exc}") from exc
    path = Path(tempfile.mkdtemp(prefix="lightmem-legacy-update-")) / "legacy_offline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("legacy_offline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(folder: Path, base_url: str) -> dict[str, Any]:
    return {
        "pre_compress": True,
        "pre_compressor": {"model_name": "entropy_compress", "configs": {
            "entropy_config": {"model_name": "wordfreq", "language": "en"}, "compress_config": {"rate": 0.55}}},
        "messages_use": "user_only",  # LoCoMo's two speakers are both role "user", with speaker_name
        "metadata_generate": False,
        "text_summary": False,
        "memory_manager": {"model_name": "openai", "configs": {"model": "gpt-4o-mini", "api_key": "bench",
                                                               "base_url": base_url}},
        "index_strategy": "hybrid",
        "retrieve_strategy": "hybrid",
        "text_embedder": {"model_name": "huggingface", "configs": {"model_kwargs": {"device": "cpu"}}},
        "embedding_retriever": {"model_name": "qdrant", "configs": {"path": str(folder / "qdrant")}},
        "history_db_path": str(folder / "history.db"),
        "update": "offline",
    }


def ingest(data_path: Path, folder: Path, base_url: str, limit: int | None = None) -> tuple[int, float]:
    """The conversations (all, or the first ``limit``) into ``folder``; returns entries stored and seconds."""
    started = time.perf_counter()
    memory = LightMemory.from_config(_config(folder, base_url))
    try:
        for conv in load_locomo(data_path)[:limit]:
            add_conversation(memory, conv)
        entries = memory.store.count()
    finally:
        memory.close()
    return entries, time.perf_counter() - started


def update_run(snapshot: Path, work: Path, server: ScriptedLLMServer, variant: str, latency_s: float,
               legacy: ModuleType) -> UpdateRun:
    """The offline update from a copy of ``snapshot``, with ``variant`` "before" or "after"."""
    folder = work / f"{variant}-{latency_s:g}s"
    shutil.copytree(snapshot, folder)
    memory = LightMemory.from_config(_config(folder, server.base_url))
    try:
        server.delay_s, server.max_in_flight, sent = latency_s, 0, len(server.requests)
        users = memory.history.users()
        started = time.perf_counter()
        if variant == "before":
            for user in users:
                legacy.build_queue(memory.components, user)
        else:
            memory.construct_update_queue_all_entries()
        queued = time.perf_counter()
        if variant == "before":
            counts: dict[str, int] = {}
            for user in users:
                for action, n in legacy.apply_queue(memory.components, user, THRESHOLD).items():
                    counts[action] = counts.get(action, 0) + n
        else:
            counts = memory.offline_update_all_entries(score_threshold=THRESHOLD)
        done = time.perf_counter()
        return UpdateRun(variant, latency_s, queued - started, done - queued, len(server.requests) - sent,
                         server.max_in_flight, counts)
    finally:
        server.delay_s = 0.0
        memory.close()


def report(runs: list[UpdateRun], entries: int, ingest_s: float, in_flight: int) -> str:
    out = ["### Offline update: before and after batching (LoCoMo, 10 conversations)", "",
           f"{entries:,} entries ingested once ({ingest_s:.0f} s: default recipe, LLM extraction against the scripted "
           f"server); each run starts from a copy. Threshold {THRESHOLD}; update decisions a repeatable mix of "
           f"update, delete and ignore. After: {in_flight} calls in flight at most.", "",
           "| implementation | LLM latency | wall s | queue s | decide + apply s | LLM calls | most calls in flight "
           "| update / delete / ignore / failed |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        c = r.counts
        out.append(f"| {r.variant} | {r.latency_s:g} s | {r.wall_s:.1f} | {r.queue_s:.1f} | {r.apply_s:.1f} | {r.calls} | "
                   f"{r.max_in_flight} | {c.get('update', 0)} / {c.get('delete', 0)} / {c.get('ignore', 0)} / "
                   f"{c.get('failed', 0)} |")
    out.append("")
    after = {r.latency_s: r for r in runs if r.variant == "after"}
    before = {r.latency_s: r for r in runs if r.variant == "before"}
    if 0.0 in after and 0.0 in before:
        zero = after[0.0]
        out.append(f"- At 0 s: {zero.wall_s:.1f} s against {before[0.0].wall_s:.1f} s before "
                   f"({before[0.0].wall_s / max(zero.wall_s, 1e-9):.1f}x), the reference {REFERENCE_S:.0f} s; "
                   f"goal ≤ {GOAL_S:.1f} s: {'met' if zero.wall_s <= GOAL_S else 'NOT met'}.")
        if 1.0 in after:
            one = after[1.0]
            bound = zero.wall_s + one.calls * 1.0 / in_flight
            out.append(f"- At 1 s: {one.wall_s:.1f} s; goal ≤ 0 s time + calls × 1 s / calls in flight = "
                       f"{zero.wall_s:.1f} + {one.calls} × 1 / {in_flight} = {bound:.1f} s: "
                       f"{'met' if one.wall_s <= bound else 'NOT met'}.")
    return "\n".join(out)


def run(data_path: Path | None = None, latencies: tuple[float, ...] = (0.0, 1.0), limit: int | None = None) -> str:
    data_path = data_path or data_dir() / "locomo10.json"
    legacy = legacy_offline()
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp, ScriptedLLMServer() as server:
        server.update_actions = "mixed"
        snapshot, work = Path(tmp) / "snapshot", Path(tmp) / "runs"
        entries, ingest_s = ingest(data_path, snapshot, server.base_url, limit)
        in_flight = parse_config(_config(snapshot, server.base_url)).memory_manager.configs.update_max_in_flight
        runs = [update_run(snapshot, work, server, variant, latency, legacy)
                for latency in latencies for variant in ("before", "after")]
    return report(runs, entries, ingest_s, in_flight)


if __name__ == "__main__":
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
