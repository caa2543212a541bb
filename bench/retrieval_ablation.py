"""Issue 15's ablation and sweeps: the default system with its retrieval steps added one at a time, and
the thresholds around the chosen values, each scored like ``lightmem eval`` (``--systems default``).

    python -m bench.retrieval_ablation [--data ../shared/data/locomo10.json --format locomo]
        [--variants steps,context,rate,plain] [--raw-hybrid] [--results-dir results/eval/ablation]

Every variant is ``configs/default.yaml`` with a few keys changed (``VARIANTS``; the default itself is
step 6, so the sweeps list only the values around it), run on the same data with one shared embedder; one Markdown table per group goes to stdout and ``<results-dir>/ablation.md``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

from lightmem_core.config import parse_config
from producers.datasets import load_locomo, load_longmemeval
from producers.eval.commands import LOCOMO_DEFAULT_CATEGORIES
from producers.eval.harness import EvalRun, evaluate, shared_embedder
from producers.eval.runner import EvalOptions
from workers.settings import DEFAULT_CONFIG

RATE = ("pre_compressor", "configs", "compress_config", "rate")
PROTECT = ("pre_compressor", "configs", "entropy_config", "protect_names_numbers")
NO_PLAIN: dict[tuple[str, ...], Any] = {("index_plain_vector",): False}
BEFORE: dict[tuple[str, ...], Any] = {("index_original",): False, ("index_context_turns",): 0, ("speaker_match",): False,
                                      PROTECT: False, RATE: 0.55, **NO_PLAIN}
# (group, label, changes to configs/default.yaml)
VARIANTS: list[tuple[str, str, dict[tuple[str, ...], Any]]] = [
    ("steps", "0. before: the compressed entry indexed (rate 0.55)", dict(BEFORE)),
    ("steps", "1. + index the original message", {**BEFORE, ("index_original",): True}),
    ("steps", "2. + dense vector with 2 previous turns", {**BEFORE, ("index_original",): True, ("index_context_turns",): 2}),
    ("steps", "3. + speaker names and aliases in queries", {**BEFORE, ("index_original",): True,
                                                            ("index_context_turns",): 2, ("speaker_match",): True}),
    ("steps", "4. + names and numbers protected in compression", {PROTECT: True, RATE: 0.55, **NO_PLAIN}),
    ("steps", "5. rate 0.45", dict(NO_PLAIN)),
    ("steps", "6. + plain vector of the message alone (the default)", {}),
    ("context", "index_context_turns 0", {("index_context_turns",): 0}),
    ("context", "index_context_turns 1", {("index_context_turns",): 1}),
    ("context", "index_context_turns 3", {("index_context_turns",): 3}),
    ("rate", "rate 0.4", {RATE: 0.4}),
    ("rate", "rate 0.5", {RATE: 0.5}),
    ("rate", "rate 0.55", {RATE: 0.55}),
    ("plain", "without the plain vector", dict(NO_PLAIN)),
    ("plain", "with the plain vector (the default)", {}),
]


def variant_config(changes: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")))
    for path, value in changes.items():
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


def header(system: dict[str, Any]) -> str:
    cats = sorted(system["metrics_by_category"])
    return ("| variant | recall@1 | recall@5 | recall@10 | recall@20 | "
            + "".join(f"r@10 cat {c} | " for c in cats) + "stored tokens | returned tokens (top 10) | p50 ms | p95 ms |")


def row(label: str, s: dict[str, Any]) -> str:
    m, c, by = s["metrics"], s["cost"], s["metrics_by_category"]
    cats = " | ".join(f"{100 * by[k]['recall@10']:.1f}" for k in sorted(by))
    return (f"| {label} | {100 * m['recall@1']:.1f} | {100 * m['recall@5']:.1f} | {100 * m['recall@10']:.1f} | "
            f"{100 * m['recall@20']:.1f} | {cats} | {c.get('tokens_stored', 0):,.0f} | "
            f"{c.get('tokens_returned_top10', 0):.1f} | {c['retrieval_p50_ms']:.1f} | {c['retrieval_p95_ms']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/locomo10.json"), help="dataset file")
    parser.add_argument("--format", choices=("locomo", "longmemeval"), default="locomo", help="dataset format")
    parser.add_argument("--variants", default="steps,context,rate", help="groups to run (steps, context, rate)")
    parser.add_argument("--only", default="", help="run only the variants whose label starts with one of these (comma list)")
    parser.add_argument("--raw-hybrid", action="store_true", help="also score raw-hybrid (with the first variant)")
    parser.add_argument("--results-dir", type=Path, default=Path("results/eval/ablation"), help="where results go")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as lightmem eval does (its --torch-threads default)
    groups = args.variants.split(",")
    only = [p for p in args.only.split(",") if p]
    chosen = [v for v in VARIANTS if v[0] in groups and (not only or any(v[1].startswith(p) for p in only))]
    conversations = load_locomo(args.data) if args.format == "locomo" else load_longmemeval(args.data)
    # As lightmem eval scores them: LoCoMo without its adversarial category 5.
    cats = frozenset(LOCOMO_DEFAULT_CATEGORIES) if args.format == "locomo" else None
    embedder = shared_embedder(parse_config(variant_config({})))
    head = ""
    lines: dict[str, list[str]] = {}
    for n, (group, label, changes) in enumerate(chosen):
        systems = ("default", "raw-hybrid") if args.raw_hybrid and n == 0 else ("default",)
        run = EvalRun(dataset=args.format, config=parse_config(variant_config(changes)),
                      results_dir=args.results_dir / f"{group}-{n}", options=EvalOptions(progress=False, categories=cats),
                      systems=systems, data_path=str(args.data), command=f"bench.retrieval_ablation: {label}")
        report = evaluate(conversations, run, embedder=embedder)
        head = head or header(report["systems"][0])
        for system in report["systems"]:
            lines.setdefault(group, []).append(row(label if system["name"] == "default" else system["name"], system))
            print(lines[group][-1], flush=True)
    out = []
    for group, rows in lines.items():
        out += [f"### {group}", "", head, "|" + "---|" * (head.count("|") - 1), *rows, ""]
    text = "\n".join(out)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "ablation.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
