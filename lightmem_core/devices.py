"""Device choice for torch models: ``auto`` means cuda when present, else cpu."""

from __future__ import annotations

import sys


def resolve_device(requested: str | None) -> str:
    if requested in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(requested)


def quiet_loading_bars() -> None:
    """transformers' "Loading weights" bars off unless stderr is a terminal: in a worker they would be
    written into its log file once per model load."""
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
