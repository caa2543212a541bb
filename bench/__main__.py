"""``make bench``: every benchmark section, printed as Markdown (and saved to results/bench.md).

Sections whose module is absent are skipped with a note; a section that fails prints its error and
the others still run.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path

from bench.common import data_dir

SECTIONS = ("bench.core", "bench.summary_retrieval", "bench.graph", "bench.compression", "bench.llm_cost", "bench.llm_cache", "bench.distributed", "bench.reliability",
            "bench.api", "bench.pipeline", "bench.update")


def main(argv: list[str]) -> int:
    wanted = [s for s in SECTIONS if not argv or s.split(".")[-1] in argv]
    out: list[str] = [f"## Benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
    failed = 0
    for name in wanted:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            out.append(f"_{name}: not present_\n")
            continue
        started = time.perf_counter()
        try:
            run = module.run
            wants_data = "data_path" in inspect.signature(run).parameters
            section = run(data_path=data_dir() / "locomo10.json") if wants_data else run()
        except Exception:  # a failing section must not hide the others' figures
            failed += 1
            section = f"### {name} FAILED\n\n```\n{traceback.format_exc()}```"
        out.append(section)
        out.append(f"\n_{name}: {time.perf_counter() - started:.0f} s_\n")
        print(out[-2], out[-1], sep="\n", flush=True)
    Path("results").mkdir(exist_ok=True)
    Path("results/bench.md").write_text("\n".join(out), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
