"""Library-mode commands: ``lightmem demo`` and ``lightmem config``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run LightMemory in one process on the embedded default (library demo)")
    demo.set_defaults(func=_demo)
    config = subparsers.add_parser("config", help="print the effective memory configuration (YAML file + environment)")
    config.add_argument("--show-secrets", action="store_true", help="print API keys instead of masking them")
    config.set_defaults(func=_config)


def _demo(args: argparse.Namespace) -> int:
    from producers.demo import main

    return main()


def _config(args: argparse.Namespace) -> int:
    from workers.settings import get_settings, memory_config

    data = memory_config().model_dump(mode="json")
    if not args.show_secrets:
        _mask(data)
    print(f"# from {get_settings().config_file} and LIGHTMEM_MEMORY__* variables")
    print(json.dumps(data, indent=2))
    return 0


def _mask(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "api_key" and value:
                node[key] = "***"
            else:
                _mask(value)
