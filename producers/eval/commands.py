"""``lightmem eval locomo|longmemeval``: retrieval quality and cost of the pipeline against raw-turn baselines.

Examples::

    lightmem eval locomo --data ../shared/data/locomo10.json
    lightmem eval longmemeval --k 1,5,10 --results-dir results/lme
    lightmem eval locomo --limit-conversations 1 --categories 1,4 --config configs/default.yaml

The data path defaults to ``$LIGHTMEM_DATA_DIR/locomo10.json`` (or ``longmemeval_s_sample.json``).
Answer generation and the LLM judge run when an endpoint is given (``--llm-model``, with
``--llm-base-url`` and ``OPENAI_API_KEY``) or when the configuration's ``memory_manager`` uses an LLM.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightmem_core.config import BaseMemoryConfigs
from lightmem_core.errors import ConfigError
from producers.datasets import load_locomo, load_longmemeval
from producers.eval.answering import LLMEndpoint
from producers.eval.harness import EvalRun, evaluate
from producers.eval.runner import EvalOptions
from producers.eval.systems import ALL_SYSTEMS
from workers.settings import DistributedSettings, get_settings, memory_config

log = logging.getLogger(__name__)
DEFAULT_FILES = {"locomo": "locomo10.json", "longmemeval": "longmemeval_s_sample.json"}
LOCOMO_DEFAULT_CATEGORIES = frozenset({"1", "2", "3", "4"})


def register(subparsers: Any) -> None:
    """Add ``eval`` with its two datasets to the ``lightmem`` command line."""
    parser = subparsers.add_parser("eval", help="evaluate retrieval quality and cost on LoCoMo or LongMemEval")
    parser.add_argument("dataset", choices=sorted(DEFAULT_FILES), help="which benchmark")
    parser.add_argument("--data", type=Path, help="dataset file (default: $LIGHTMEM_DATA_DIR/<standard name>)")
    parser.add_argument("--results-dir", type=Path, help="where results go (default: results/eval/<dataset>-<time>)")
    parser.add_argument("--k", default="1,5,10,20", help="cut-offs, comma-separated (default 1,5,10,20)")
    parser.add_argument("--categories", help="question categories to score, comma-separated "
                        "(LoCoMo default 1,2,3,4; LongMemEval default all question types)")
    parser.add_argument("--include-adversarial", action="store_true", help="LoCoMo: also score category 5")
    parser.add_argument("--limit-conversations", type=int, help="only the first N conversations (question instances)")
    parser.add_argument("--config", type=Path, help="YAML configuration of the default pipeline (default: configs/default.yaml)")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"systems to run (default {','.join(ALL_SYSTEMS)})")
    parser.add_argument("--distributed", action="store_true", help="ingest through the queue pipeline")
    parser.add_argument("--llm-model", help="answer model of an OpenAI-compatible endpoint (enables answers + judge)")
    parser.add_argument("--llm-base-url", help="OpenAI-compatible base URL (key from OPENAI_API_KEY)")
    parser.add_argument("--judge-model", help="judge model (default: the answer model)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine spinning threads "
                             "make single-query embedding 10-20x slower)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_command)


def _csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what}: expected a comma-separated list, got {text!r}")
    return items


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in _csv(text, "k"))
    except ValueError as exc:
        raise ConfigError(f"--k: expected positive integers like 1,5,10,20, got {text!r}") from exc
    if any(k < 1 for k in ks):
        raise ConfigError(f"--k: expected positive integers, got {text!r}")
    return ks


def _categories(args: argparse.Namespace) -> frozenset[str] | None:
    if args.categories:
        chosen = set(_csv(args.categories, "categories"))
    elif args.dataset == "locomo":
        chosen = set(LOCOMO_DEFAULT_CATEGORIES)
    else:
        return None
    if args.include_adversarial:
        chosen.add("5")
    return frozenset(chosen)


def llm_endpoint(args: argparse.Namespace, config: BaseMemoryConfigs) -> LLMEndpoint | None:
    """From the flags, else from an LLM-backed ``memory_manager``; ``None``: no answers, no judge."""
    key = os.environ.get("OPENAI_API_KEY")
    if args.llm_model:
        return LLMEndpoint(model=args.llm_model, base_url=args.llm_base_url, api_key=key, judge_model=args.judge_model)
    manager = config.memory_manager
    c = manager.configs
    if manager.model_name != "verbatim" and c.model:
        return LLMEndpoint(model=c.model, base_url=c.base_url, api_key=c.api_key or key, judge_model=args.judge_model,
                           timeout_s=c.timeout_s, max_concurrency=c.max_concurrency)
    return None


def run_command(args: argparse.Namespace) -> int:
    if args.limit_conversations is not None and args.limit_conversations < 1:
        raise ConfigError("--limit-conversations: expected a positive integer")
    # Another file: read anew, so the file and the environment's overrides merge as for the default.
    settings = get_settings() if args.config is None else DistributedSettings(config_file=args.config)
    config = memory_config(settings)
    data = args.data or settings.data_dir / DEFAULT_FILES[args.dataset]
    options = EvalOptions(ks=parse_ks(args.k), categories=_categories(args),
                          limit_conversations=args.limit_conversations, progress=not args.no_progress,
                          distributed_config=str(settings.config_file) if args.distributed else None)
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    results_dir = args.results_dir or Path("results") / "eval" / f"{args.dataset}-{stamp}"
    run = EvalRun(dataset=args.dataset, config=config, results_dir=results_dir, options=options,
                  systems=tuple(_csv(args.systems, "systems")), llm=llm_endpoint(args, config), data_path=str(data),
                  command=_command_line(args, data))
    conversations = load_locomo(data) if args.dataset == "locomo" else load_longmemeval(data)
    _set_torch_threads(args.torch_threads)
    report = evaluate(conversations, run)
    print((results_dir / "results.md").read_text(encoding="utf-8"))
    print(f"results: {results_dir} (wall {report['wall_s']:.0f} s, CPU {report['cpu_s']:.0f} s)")
    return 0


def _command_line(args: argparse.Namespace, data: Path) -> str:
    """The run's options as a command line, for the record."""
    parts = ["lightmem", "eval", args.dataset, "--data", str(data)]
    for name, value in sorted(vars(args).items()):
        if name in ("dataset", "data", "func", "command", "verbose") or value in (None, False):
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def _set_torch_threads(n: int) -> None:
    if n < 1:
        raise ConfigError("--torch-threads: expected a positive integer")
    import torch

    torch.set_num_threads(n)
