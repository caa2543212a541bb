"""Compression throughput on a GPU machine that has only torch, transformers and tiktoken.

The device machines lent to this project start bare (torch, transformers, tiktoken, no qdrant-client,
openai or pydantic-settings) and take at most 64 MiB along, less than the bundled MiniLM weights,
the ``bpe-openai`` files or ``wordfreq``. So this section runs in two steps:

1. here: ``python -m bench.compression_gpu prepare .devbench`` writes what the run needs into a
   folder (``echo /.devbench/ >> .git/info/exclude``): 256 LoCoMo turns, the MiniLM tokenizer and
   configuration (no weights), and the cl100k BPE file as a stand-in ``bpe_openai`` package;
2. there: ``python3 -m bench.compression_gpu run .devbench`` (the device tool, carrying
   ``.devbench``) times ``lightmem_core``'s LinguaScorer through ``compress_batch`` with
   MiniLM-L6-sized and BERT-base-sized token classifiers with random weights (throughput does not
   depend on weight values), fp16, batch sizes 1/8/32/128 and one call per message, best of 3, with
   synchronised timing.

``run`` loads the compressor modules without executing ``lightmem_core/__init__`` (which imports
the whole library); this module imports nothing of the project at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

RATE = 0.6
TEXTS = 256
REPEATS = 3


def prepare(folder: Path) -> None:
    """Write the run's inputs into ``folder`` (on a machine with the project installed)."""
    from importlib import resources

    from bench.common import locomo_texts
    from lightmem_core.embedders.huggingface import bundled_minilm_path

    (folder / "minilm").mkdir(parents=True, exist_ok=True)
    (folder / "bpe_openai" / "data").mkdir(parents=True, exist_ok=True)
    (folder / "texts.json").write_text(json.dumps(locomo_texts(TEXTS)), encoding="utf-8")
    model = Path(bundled_minilm_path())
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model / name, folder / "minilm" / name)
    for init in (folder / "bpe_openai" / "__init__.py", folder / "bpe_openai" / "data" / "__init__.py"):
        init.write_text("", encoding="utf-8")
    cl100k = resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes()
    (folder / "bpe_openai" / "data" / "cl100k_base.tiktoken.gz").write_bytes(cl100k)
    print(f"prepared {folder}: {TEXTS} LoCoMo turns, MiniLM tokenizer and configuration, cl100k file")


def _load_compressor_modules(root: Path, inputs: Path) -> None:
    """Import path for the compressor modules alone: the package without its ``__init__``, and the
    one name they need from ``lightmem_core.config`` (which needs pydantic)."""
    sys.path[:0] = [str(inputs), str(root)]
    package = types.ModuleType("lightmem_core")
    package.__path__ = [str(root / "lightmem_core")]
    sys.modules.setdefault("lightmem_core", package)
    config = types.ModuleType("lightmem_core.config")
    config.DEFAULT_FORCE_TOKENS = ("\n", ".", "!", "?", ",")  # type: ignore[attr-defined]
    sys.modules.setdefault("lightmem_core.config", config)


def run(inputs: Path, device: str = "cuda") -> str:
    _load_compressor_modules(Path(__file__).resolve().parents[1], inputs)
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer
    from lightmem_core.sensory.compressors.llmlingua2 import compress_batch
    from lightmem_core.tokens import count_tokens

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    texts = json.loads((inputs / "texts.json").read_text(encoding="utf-8"))
    tokens = sum(map(count_tokens, texts))
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    lines = [f"{where}, torch {torch.__version__}; {len(texts)} LoCoMo turns, {tokens:,} cl100k tokens; "
             f"rate {RATE}, best of {REPEATS}"]
    tok = AutoTokenizer.from_pretrained(inputs / "minilm")
    torch.manual_seed(0)
    small = BertConfig.from_pretrained(inputs / "minilm")
    base = BertConfig(vocab_size=len(tok))  # bert-base: 12 layers × 768
    folder = Path(tempfile.mkdtemp())
    for name, config in (("MiniLM-L6 size", small), ("BERT-base size", base)):
        config.num_labels = 2
        path = folder / name.split()[0]
        BertForTokenClassification(config).save_pretrained(path)
        tok.save_pretrained(path)
        scorer = LinguaScorer(str(path), device=device)
        lines += ["", f"{name} (random weights) on {device}, tokens/s:", "", "| way | tokens/s |", "|---|---|"]
        for size in (1, 8, 32, 128):
            scorer.batch_size, scorer.max_batch_tokens = size, None
            compress_batch(scorer, texts, [RATE] * len(texts))  # warm-up
            sync()
            best = 0.0
            for _ in range(REPEATS):
                start = time.perf_counter()
                compress_batch(scorer, texts, [RATE] * len(texts))
                sync()
                best = max(best, tokens / (time.perf_counter() - start))
            lines.append(f"| one call, batch size {size} | {best:,.0f} |")
        start = time.perf_counter()
        for text in texts:
            compress_batch(scorer, [text], [RATE])
        sync()
        lines.append(f"| one call per message | {tokens / (time.perf_counter() - start):,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default=os.environ.get("BENCH_DEVICE", "cuda"))
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.folder)
    else:
        print(run(args.folder.resolve(), args.device))


if __name__ == "__main__":
    main()
