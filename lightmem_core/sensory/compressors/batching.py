"""Length-sorted batches with a cap on padded tokens, shared by the model-based compressors.

Why a token cap: on a CPU the forward pass is fastest while a batch's activations stay in cache. On
this project's 2-core machine MiniLM scores about 5,300 tokens/s in batches of 400 to 800 padded
tokens and about 2,100 tokens/s in batches of 6,000 (32 messages of 190 tokens), so a fixed message
count per batch is 2.5x too slow once messages are long. A GPU wants the largest batches, so it gets
no cap unless one is configured.
"""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_TOKENS = 1024  # measured on MiniLM and BERT-base sizes: `python -m bench compression`
# Under a token cap (a CPU) an item shorter than this share of its batch's width starts a new batch:
# a session's last, short context window padded to a full one cost as much as the full one. On the
# turns of 2 LoCoMo conversations, compressed and embedded session by session (as the library and the
# compress worker do), CPU-s went from 17.6-18.7 to 12.7-13.6 (compression) and 14.0-14.6 to 12.0-12.1
# (turn embedding) at 0.5; 0.7 measured the same.
MIN_FILL = 0.5


def batch_token_cap(configured: int | None, device: str) -> int | None:
    """The padded-token cap per batch: ``configured``, else ``CPU_BATCH_TOKENS`` on CPU and none on GPU."""
    if configured is not None:
        return configured
    return None if device.startswith("cuda") else CPU_BATCH_TOKENS


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices into ``lengths``, longest first, cut into batches.

    A batch holds at most ``batch_size`` items and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (items × its longest length) and no item shorter than ``MIN_FILL``
    of its longest; an item longer than the cap gets a batch of its own.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 or None, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    batches: list[list[int]] = []
    current: list[int] = []
    for k in order:
        # Sorted longest first, so the batch's first item sets its padded width.
        width = lengths[current[0]] if current else lengths[k]
        full = len(current) >= batch_size or (max_tokens is not None and ((len(current) + 1) * width > max_tokens
                                                                           or lengths[k] < MIN_FILL * width))
        if current and full:
            batches.append(current)
            current = []
        current.append(k)
    if current:
        batches.append(current)
    return batches
