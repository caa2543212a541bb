"""The ``lightmem`` command line.

Each command group lives in its own module and registers itself here through a
``register(subparsers)`` function; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from lightmem_core.errors import LightMemError

# Modules that add subcommands; each exposes register(subparsers) and sets a `func` default.
COMMAND_MODULES: tuple[str, ...] = ("producers.commands.local", "producers.eval.commands", "producers.commands.distributed",
                                     "producers.commands.serve", "producers.commands.cache", "producers.commands.graph")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightmem", description="LightMem distributed memory pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG (user text appears in logs)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (LightMemError, ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"lightmem: error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """An error as one line; a settings validation error names each key (dotted, and as its variable)
    and what is wrong with it, never the value given (it may be a secret)."""
    if isinstance(exc, ValidationError):
        problems = []
        for err in exc.errors()[:3]:
            path = [str(p) for p in err["loc"]]
            variable = "LIGHTMEM_" + "__".join(path).upper()
            problems.append(f"{'.'.join(path) or exc.title} ({variable}): {err['msg']}")
        more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        return f"invalid configuration: {'; '.join(problems)}{more}"
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
