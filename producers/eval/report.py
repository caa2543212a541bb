"""Results as files: ``results.json``, ``results.md`` (Markdown tables) and ``recall_at_k.png``.

The Markdown table puts every system next to the raw-turn dense baseline: recall@k, MRR, stored
tokens (and their share of the baseline's), ingest time and retrieval latency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producers.eval.systems import RAW_DENSE, RAW_HYBRID

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RECALL_PNG = "recall_at_k.png"
RETURNED = "tokens_returned_top10"


def _num(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(report: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_JSON
    path.write_text(json.dumps(_clean(report), indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def markdown(report: dict[str, Any]) -> str:
    """The main table, the per-category recall@10 table and, when judged, answer accuracy."""
    systems: list[dict[str, Any]] = report["systems"]
    ks: list[int] = report["options"]["ks"]
    shown = [k for k in ks if k >= 5] or ks
    base = next((s for s in systems if s["name"] == RAW_DENSE), None)
    base_tokens = base["cost"].get("tokens_stored") if base else None
    hybrid = next((s for s in systems if s["name"] == RAW_HYBRID), None)
    hybrid_returned = hybrid["cost"].get(RETURNED) if hybrid else None
    head = ["system", *[f"recall@{k}" for k in shown], f"hit@{shown[0]}", "MRR", "stored tokens",
            "vs raw-dense", "returned tokens (top 10)", "vs raw-hybrid", "ingest s", "retrieval p50 ms", "p95 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        m, c = s["metrics"], s["cost"]
        tokens = c.get("tokens_stored")
        share = f"{100 * tokens / base_tokens:.0f}%" if tokens is not None and base_tokens else "–"
        returned = c.get(RETURNED)
        returned_share = f"{100 * returned / hybrid_returned:.0f}%" if returned is not None and hybrid_returned else "–"
        cells = [s["name"], *[_num(m.get(f"recall@{k}"), 1, 100) for k in shown], _num(m.get(f"hit@{shown[0]}"), 1, 100),
                 _num(m.get("mrr"), 3), f"{int(tokens):,}" if tokens is not None else "–", share,
                 _num(returned), returned_share,
                 _num(c.get("ingest_s")), _num(c.get("retrieval_p50_ms")), _num(c.get("retrieval_p95_ms"))]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["\n".join(lines)]
    for k in ks:
        out += ["", _category_table(systems, k)]
    if "wall_s" in report:
        inp = report.get("input", {})
        out += ["", f"{inp.get('conversations', '?')} conversations, {inp.get('turns', '?')} turns, "
                    f"{inp.get('questions_selected', '?')} questions; run wall {report['wall_s']:.0f} s, "
                    f"CPU {report.get('cpu_s', math.nan):.0f} s."]
    if report.get("goal"):
        out += ["", _goal_line(report["goal"])]
    answers = report.get("answers")
    if answers:
        out += ["", _answer_table(answers)]
    return "\n".join(out) + "\n"


def _category_table(systems: list[dict[str, Any]], k: int) -> str:
    cats = sorted({c for s in systems for c in s["metrics_by_category"]})
    head = ["system", f"all (n={systems[0]['counts'].get('all', 0)})",
            *[f"cat {c} (n={systems[0]['counts'].get(c, 0)})" for c in cats]]
    lines = [f"recall@{k} per category:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        by = s["metrics_by_category"]
        lines.append("| " + " | ".join([s["name"], _num(s["metrics"].get(f"recall@{k}"), 1, 100),
                                        *[_num(by.get(c, {}).get(f"recall@{k}"), 1, 100) for c in cats]]) + " |")
    return "\n".join(lines)


def _goal_line(goal: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    text = (f"Goal at k={goal['k']}: default recall {goal['default_minus_raw_dense_recall_points']:+.1f} points vs "
            f"raw-dense (≥ -2: {mark(goal['recall_ok'])}); stored tokens {100 * goal['default_stored_token_share']:.0f}% "
            f"of raw-dense (≤ 60%: {mark(goal['tokens_ok'])})")
    if "hybrid_ok" in goal:
        text += f"; raw-hybrid {goal['hybrid_minus_dense_recall_points']:+.1f} points vs dense (≥ 0: {mark(goal['hybrid_ok'])})"
    if "beyond_hybrid_ok" in goal:
        text += (f". Against raw-hybrid: default {goal['default_minus_raw_hybrid_recall_points']:+.1f} points "
                 f"(≥ +5: {mark(goal['beyond_hybrid_ok'])}), worst category "
                 f"{goal['worst_category_minus_raw_hybrid_points']:+.1f} (≥ -1: {mark(goal['categories_ok'])}), "
                 f"returned tokens {100 * goal['default_returned_token_share']:.0f}% of raw-hybrid's "
                 f"(≤ 60%: {mark(goal['returned_tokens_ok'])})")
    return text + "."


def _answer_table(answers: dict[str, Any]) -> str:
    lines = [f"LLM-judged answer accuracy (answer model {answers['answer_model']}, judge {answers['judge_model']}):", "",
             "| system | accuracy | judged | judge failures |", "|---|---|---|---|"]
    for name, a in answers["systems"].items():
        lines.append(f"| {name} | {_num(a.get('accuracy'), 1, 100)} | {a['judged']} | {a['judge_failures']} |")
    return "\n".join(lines)


def write_markdown(report: dict[str, Any], folder: Path) -> Path:
    path = folder / RESULTS_MD
    path.write_text(markdown(report), encoding="utf-8")
    return path


def write_plot(report: dict[str, Any], folder: Path) -> Path:
    """Recall@k curves, one line per system (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ks: Sequence[int] = report["options"]["ks"]
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for s in report["systems"]:
            values = [s["metrics"].get(f"recall@{k}") for k in ks]
            ax.plot(list(ks), [100 * v if v is not None and not math.isnan(v) else math.nan for v in values],
                    marker="o", label=s["name"])
        ax.set_xlabel("k (entries retrieved)")
        ax.set_ylabel("evidence recall@k (%)")
        ax.set_title(f"{report['dataset']}: evidence recall@k")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = folder / RECALL_PNG
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def write_all(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write the JSON, the Markdown and the plot; returns their paths."""
    return [write_json(report, folder), write_markdown(report, folder), write_plot(report, folder)]
