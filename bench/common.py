"""Helpers shared by the benchmark sections: timing, percentiles, sample texts."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("LIGHTMEM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def locomo_texts(limit: int | None = None) -> list[str]:
    """Turn texts of LoCoMo (real conversational text), in file order."""
    path = data_dir() / "locomo10.json"
    texts: list[str] = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        conv = sample["conversation"]
        n = 1
        while f"session_{n}" in conv or f"session_{n}_date_time" in conv:
            texts.extend(t["text"] for t in conv.get(f"session_{n}", []) if t.get("text"))
            n += 1
    return texts[:limit] if limit else texts


def locomo_questions(limit: int = 200) -> list[str]:
    path = data_dir() / "locomo10.json"
    out: list[str] = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        out.extend(q["question"] for q in sample["qa"])
    return out[:limit]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
