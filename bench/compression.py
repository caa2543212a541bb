"""Compression throughput: LLMLingua-2 scoring batched across messages versus one message at a time.

Run: ``make bench`` (all sections) or ``python -m bench.compression [--messages N]``.

The real LLMLingua-2 weights cannot be downloaded here. Throughput does not depend on weight values,
so two stand-ins are timed: the bundled MiniLM (6 layers, 384 wide) with a fresh 2-label head, and a
BERT-base-sized token classifier (12 layers, 768 wide, the size of
``llmlingua-2-bert-base-multilingual-cased-meetingbank`` minus its larger vocabulary) built from a
configuration with random weights. Tokens are cl100k tokens of the input messages (LoCoMo turns).

Three ways to compress the same messages, timed side by side:

* one by one: one ``compress_batch`` call per message (what a caller without batching does);
* one call, batch size 1: every message in one call, but one forward pass per message. Against one
  by one it isolates what batching saves outside the model (tokenizer calls, dispatch);
* one call, batched: the default (32 messages, at most ``max_batch_tokens`` padded tokens per pass).
  Against batch size 1 it isolates what batching gains inside the model.

The section also times long messages (six turns joined) with and without the CPU token cap, and times
the linear layers of the batched call: if everything else were free, one by one time over their time
bounds the speed-up batching can reach on this CPU.
On a CUDA device it sweeps batch sizes 1, 8, 32 and 128 (fp16).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import locomo_texts, timed
from lightmem_core.devices import resolve_device
from lightmem_core.embedders.huggingface import bundled_minilm_path
from lightmem_core.sensory.compressors.batching import CPU_BATCH_TOKENS
from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer
from lightmem_core.sensory.compressors.llmlingua2 import compress_batch
from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor
from lightmem_core.tokens import count_tokens

RATE = 0.6
REPEATS = 3
BATCH = 32
LONG_TURNS = 6  # turns joined into one long message


def build_models(folder: Path) -> dict[str, str]:
    """Save the two stand-in token classifiers under ``folder``; returns name → path."""
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        BertConfig,
        BertForTokenClassification,
    )

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    small = AutoModelForTokenClassification.from_pretrained(bundled_minilm_path(), num_labels=2)
    config = BertConfig(vocab_size=len(tok))  # bert-base: 12 layers × 768
    config.num_labels = 2
    base = BertForTokenClassification(config)
    paths = {}
    for name, model in (("MiniLM-L6 (bundled weights, new head)", small), ("BERT-base size (random weights)", base)):
        path = folder / name.split()[0]
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = str(path)
    return paths


def one_by_one(scorer: LinguaScorer, texts: list[str]) -> Callable[[], object]:
    return lambda: [compress_batch(scorer, [t], [RATE]) for t in texts]


def one_call(scorer: LinguaScorer, texts: list[str], batch_size: int, max_batch_tokens: int | None) -> Callable[[], object]:
    def go() -> object:
        # Set on the scorer for this run only: None here means no cap at all (the constructor's None
        # means the device's default cap).
        scorer.batch_size, scorer.max_batch_tokens = batch_size, max_batch_tokens
        return compress_batch(scorer, texts, [RATE] * len(texts))

    return go


def best_rates(texts: list[str], ways: dict[str, Callable[[], object]]) -> dict[str, float]:
    """cl100k tokens/s of each way, best of ``REPEATS`` runs taken in turn (other processes share the cores)."""
    tokens = sum(map(count_tokens, texts))
    best = dict.fromkeys(ways, 0.0)
    for _ in range(REPEATS):
        for name, way in ways.items():
            best[name] = max(best[name], tokens / timed(way))
    return best


def gemm_gflops(rows: int, width: int) -> float:
    """GFLOPS of ``(rows × width) @ (width × 4·width)``, the feed-forward's first product; best of 3."""
    import torch

    a, b = torch.randn(rows, width), torch.randn(width, 4 * width)
    flops = 2 * rows * width * 4 * width
    reps = max(5, int(1e9 / flops))
    a @ b
    best = min(timed(lambda: [a @ b for _ in range(reps)]) for _ in range(3))
    return flops * reps / best / 1e9


def linear_layer_time(scorer: LinguaScorer, way: Callable[[], object]) -> tuple[float, float, float]:
    """Run ``way`` once with every linear layer timed: (whole call s, linear layers s, their GFLOPS).

    On a CPU each layer's work is done when it returns, so wall-clock hooks measure it.
    """
    import torch

    spent, flops, started = [0.0], [0.0], [0.0]

    def before(_m: torch.nn.Module, _args: object) -> None:
        started[0] = time.perf_counter()

    def after(m: torch.nn.Linear, args: tuple[torch.Tensor, ...], _out: object) -> None:
        spent[0] += time.perf_counter() - started[0]
        flops[0] += 2.0 * args[0].numel() * m.out_features

    linears = [m for m in scorer.model.modules() if isinstance(m, torch.nn.Linear)]
    hooks = [h for m in linears for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        whole = timed(way)
    finally:
        for h in hooks:
            h.remove()
    return whole, spent[0], flops[0] / spent[0] / 1e9


def joined(texts: list[str], n: int) -> list[str]:
    return [" ".join(texts[i : i + n]) for i in range(0, len(texts) - n + 1, n)]


def run(messages: int = 128) -> str:
    import torch

    texts = locomo_texts(messages)
    tokens = sum(map(count_tokens, texts))
    long_texts = joined(locomo_texts(messages * LONG_TURNS // 4), LONG_TURNS)
    device = resolve_device("auto")
    cap = "none (GPU)" if device.startswith("cuda") else f"{CPU_BATCH_TOKENS:,}"
    lines = [
        "### Compression (`python -m bench.compression`)",
        "",
        f"LLMLingua-2 scoring on {device} ({torch.get_num_threads()} torch threads), {len(texts)} LoCoMo turns "
        f"({tokens:,} cl100k tokens), rate {RATE}; batched = batch size {BATCH}, at most {cap} "
        f"padded tokens per pass; best of {REPEATS} runs taken in turn. Weights are stand-ins (throughput does not "
        "depend on their values).",
        "",
        "| model | one by one tokens/s | one call, batch size 1 | one call, batched | **batched / one by one** "
        "| outside the model (bs 1 / one by one) | inside the model (batched / bs 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    long_rows, ceiling_rows, gpu_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build_models(Path(tmp)).items():
            scorer = LinguaScorer(path, device=device, batch_size=BATCH)
            default_cap = scorer.max_batch_tokens
            compress_batch(scorer, texts[:64], [RATE] * min(64, len(texts)))  # warm-up
            r = best_rates(texts, {"single": one_by_one(scorer, texts), "bs1": one_call(scorer, texts, 1, None),
                                   "batched": one_call(scorer, texts, BATCH, default_cap)})
            lines.append(f"| {name} | {r['single']:,.0f} | {r['bs1']:,.0f} | {r['batched']:,.0f} | "
                         f"**{r['batched'] / r['single']:.1f}×** | {r['bs1'] / r['single']:.2f}× | {r['batched'] / r['bs1']:.2f}× |")
            if not device.startswith("cuda"):
                lr = best_rates(long_texts, {"uncapped": one_call(scorer, long_texts, BATCH, None),
                                             "capped": one_call(scorer, long_texts, BATCH, default_cap)})
                long_rows.append(f"| {name} | {lr['uncapped']:,.0f} | {lr['capped']:,.0f} | {lr['capped'] / lr['uncapped']:.1f}× |")
                whole, linear, speed = min((linear_layer_time(scorer, one_call(scorer, texts, BATCH, default_cap))
                                            for _ in range(REPEATS)), key=lambda t: t[0])
                width = int(scorer.model.config.hidden_size)
                rows = round(statistics.median(len(e.ids) + 2 for e in scorer.encode(texts)))
                one, many = gemm_gflops(rows, width), gemm_gflops(CPU_BATCH_TOKENS, width)
                bound = tokens / r["single"] / linear
                ceiling_rows.append(f"| {name} | {linear / whole:.0%} | {speed:,.0f} | {one:,.0f} / {many:,.0f} | "
                                    f"**{bound:.1f}×** |")
            else:
                gpu_rows += _gpu_sweep(path, texts, name)
    if long_rows:
        lines += ["", f"Long messages ({len(long_texts)} messages of {LONG_TURNS} LoCoMo turns joined, "
                  f"{sum(map(count_tokens, long_texts)):,} cl100k tokens), one call, batch size {BATCH}:", "",
                  "| model | no token cap tokens/s | capped at " f"{CPU_BATCH_TOKENS:,} padded tokens | gain |",
                  "|---|---|---|---|", *long_rows]
    if ceiling_rows:
        lines += ["", "What bounds the speed-up on this CPU: the linear layers of the batched call (timed layer by "
                  "layer), their speed against this CPU's fp32 matrix-product speed at one median message's rows and at "
                  f"{CPU_BATCH_TOKENS:,} rows (GFLOPS), and the speed-up batched / one by one would reach if everything "
                  "but the linear layers took no time in the batched call:", "",
                  "| model | linear layers' share of the batched call | their GFLOPS | matrix product GFLOPS, "
                  "one message / one batch | bound on batched / one by one |",
                  "|---|---|---|---|---|", *ceiling_rows]
    lines += gpu_rows
    wordfreq = WordfreqEntropyCompressor(rate=RATE)
    wf_rate = tokens / timed(lambda: wordfreq.compress(texts))
    lines += ["", f"Model-free `entropy_compress` (wordfreq, the embedded default): {wf_rate:,.0f} tokens/s on CPU.",
              "", f"_{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end of the run, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (other processes share the machine: "
              "absolute figures are noisy, the ratios less so)._"]
    return "\n".join(lines)


def _gpu_sweep(path: str, texts: list[str], name: str) -> list[str]:
    import torch

    rows = ["", f"{name} on {torch.cuda.get_device_name(0)} (fp16), one call:", "", "| batch size | tokens/s |", "|---|---|"]
    scorer = LinguaScorer(path, device="cuda")
    tokens = sum(map(count_tokens, texts))
    for size in (1, 8, 32, 128):
        way = one_call(scorer, texts, size, None)

        def synced(way: Callable[[], object] = way) -> None:
            way()
            torch.cuda.synchronize()  # the results are copied back already; this makes the timing exact

        synced()
        rate = max(tokens / timed(synced) for _ in range(REPEATS))
        rows.append(f"| {size} | {rate:,.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=128, help="LoCoMo turns to compress (default 128)")
    print(run(parser.parse_args().messages))


if __name__ == "__main__":
    main()
