"""Device choice for torch models: ``auto`` means cuda when present, else cpu."""

from __future__ import annotations


def resolve_device(requested: str | None) -> str:
    if requested in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(requested)
