"""The ``entropy_compress`` compressor: keep the words a causal language model finds most surprising.

Per-token surprisal ``-log2 p(token | previous tokens)`` from a causal LM at a local path, batched
across texts (length-sorted, right-padded). Every text is prefixed with the tokenizer's BOS (or
[CLS]/EOS) token, so its first token is scored too (LightMem drops it). Tokens are grouped into words
by their word-start markers read correctly: ``Ġ``/``▁`` open a word, ``##`` continues one, a token
after whitespace opens one, and punctuation stands alone, so forced punctuation can be kept.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightmem_core.config import DEFAULT_FORCE_TOKENS
from lightmem_core.devices import quiet_loading_bars, resolve_device
from lightmem_core.errors import ModelLoadError
from lightmem_core.sensory.compressors.base import CompressionResult
from lightmem_core.sensory.compressors.batching import batch_token_cap, length_batches
from lightmem_core.sensory.compressors.lingua_scorer import chunk_spans, to_device
from lightmem_core.sensory.compressors.llmlingua2 import results
from lightmem_core.sensory.compressors.selection import Word, check_rate

_OPENERS = ("Ġ", "▁", "Ċ")


class EntropyCompressor:
    """Keeps the ``rate`` share of words with the highest surprisal under a causal LM."""

    def __init__(
        self,
        model_path: str,
        rate: float = 0.6,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        word_level_strategy: Literal["average", "first_token"] = "average",
        force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
        max_text_tokens: int = 16384,
        max_batch_tokens: int | None = None,
    ) -> None:
        if not Path(model_path).exists():
            raise ModelLoadError(f"entropy_compress model path does not exist: {model_path}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.rate = check_rate(rate)
        self.device = resolve_device(device)
        try:
            quiet_loading_bars()
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                model_path, local_files_only=True, dtype=torch.float16 if self.device.startswith("cuda") else torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load a causal language model from {model_path}: {exc}") from exc
        tok = self.tokenizer
        if not getattr(tok, "is_fast", False):
            raise ModelLoadError(f"{model_path}: a fast tokenizer (tokenizer.json) is needed for character offsets")
        if len(tok) > int(model.config.vocab_size):
            raise ModelLoadError(f"{model_path}: the tokenizer has {len(tok)} tokens but the model's vocabulary has "
                                 f"{model.config.vocab_size}: tokenizer and model do not match")
        prefix = next((t for t in (tok.bos_token_id, tok.cls_token_id, tok.eos_token_id) if t is not None), None)
        if prefix is None:
            raise ModelLoadError(f"{model_path}: the tokenizer has no BOS, CLS or EOS token to start a text with")
        self.prefix: int = int(prefix)
        self.model: Any = to_device(model, self.device, model_path)
        positions = int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 1024))
        self.body = min(max_length or positions, positions) - 1
        self.batch_size = batch_size
        self.max_batch_tokens = batch_token_cap(max_batch_tokens, self.device)
        self.strategy = word_level_strategy
        self.force_tokens = tuple(force_tokens)
        self.max_text_tokens = max_text_tokens
        self._lock = threading.Lock()

    def compress(self, texts: list[str], groups: list[str] | None = None) -> list[CompressionResult]:
        """Compress every text to the configured rate in batched forward passes (``groups`` is unused)."""
        return results(texts, self.score(texts), [self.rate] * len(texts), self.force_tokens)

    def score(self, texts: list[str]) -> list[list[Word]]:
        """Words of each text with their surprisal in bits."""
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        # Texts over the limit are passed through unscored (no words).
        ids = [list(x) if len(x) <= self.max_text_tokens else [] for x in enc["input_ids"]]
        offsets = [list(enc["offset_mapping"][i])[: len(x)] for i, x in enumerate(ids)]
        starts = [word_starts(list(self.tokenizer.convert_ids_to_tokens(x)), offsets[i], texts[i]) for i, x in enumerate(ids)]
        surprisal = self._surprisal(ids, [np.cumsum(s).tolist() for s in starts])
        return [group_words(t, offsets[i], starts[i], surprisal[i], self.strategy) for i, t in enumerate(texts)]

    def _surprisal(self, ids: list[list[int]], word_ids: list[list[int]]) -> list[np.ndarray]:
        import torch

        out = [np.zeros(len(x), dtype=np.float32) for x in ids]
        chunks = [(i, a, b) for i, w in enumerate(word_ids) for a, b in chunk_spans(w, self.body)]
        pad = int(self.tokenizer.pad_token_id) if self.tokenizer.pad_token_id is not None else self.prefix
        for members in length_batches([1 + b - a for _, a, b in chunks], self.batch_size, self.max_batch_tokens):
            batch = [chunks[k] for k in members]
            width = 1 + max(b - a for _, a, b in batch)
            inp = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros_like(inp)
            for r, (i, a, b) in enumerate(batch):
                inp[r, : 1 + b - a] = [self.prefix, *ids[i][a:b]]
                mask[r, : 1 + b - a] = 1
            x = torch.from_numpy(inp).to(self.device)
            with self._lock, torch.inference_mode():
                logits = self.model(input_ids=x, attention_mask=torch.from_numpy(mask).to(self.device)).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, x[:, 1:].unsqueeze(-1)).squeeze(-1)
                bits = (-logp / np.log(2.0)).cpu().numpy()
            for r, (i, a, b) in enumerate(batch):
                out[i][a:b] = bits[r, : b - a]
        return out


def word_starts(tokens: list[str], offsets: Sequence[tuple[int, int]], text: str) -> list[int]:
    """1 where a token opens a new word, else 0 (the first token always opens one)."""
    flags = []
    for k, (tok, (s, e)) in enumerate(zip(tokens, offsets, strict=True)):
        piece = text[s:e]
        if k == 0:
            flag = True
        elif tok.startswith("##"):
            flag = False
        elif tok.startswith(_OPENERS) or (s > 0 and text[s - 1].isspace()) or piece[:1].isspace():
            flag = True
        else:
            prev = text[offsets[k - 1][0] : offsets[k - 1][1]].strip()
            flag = _is_punct(piece.strip()) or _is_punct(prev)
        flags.append(1 if flag else 0)
    return flags


def group_words(text: str, offsets: Sequence[tuple[int, int]], starts: list[int], bits: np.ndarray,
                strategy: str) -> list[Word]:
    """Merge tokens into words at the word starts; a word's span is stripped of surrounding whitespace."""
    words: list[Word] = []
    bounds = [k for k, f in enumerate(starts) if f] + [len(starts)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        s, e = offsets[a][0], max(o[1] for o in offsets[a:b])
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            score = float(bits[a]) if strategy == "first_token" else float(bits[a:b].mean())
            words.append(Word(s, e, score))
    return words


def _is_punct(piece: str) -> bool:
    return bool(piece) and not any(c.isalnum() for c in piece)
