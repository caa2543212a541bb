"""LLMLingua-2 scoring on ``transformers``: per-word keep probabilities, batched across many texts.

One ``LinguaScorer`` holds one token classifier. ``score`` gives each text its own context (long
texts are cut at the model's maximum length, at word boundaries) and runs every chunk of every text
in length-sorted batches. ``score_packed`` puts neighbouring texts into shared context windows and
also returns the attention between neighbours, so that compression and topic segmentation share one
forward pass (``precomp_topic_shared``). Word boundaries come from the tokenizer (``word_ids`` and
character offsets), never from the model's folder name.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightmem_core.devices import quiet_loading_bars, resolve_device
from lightmem_core.errors import ConfigError, ModelLoadError
from lightmem_core.sensory.compressors.attention import Window, neighbour_attention
from lightmem_core.sensory.compressors.batching import batch_token_cap, length_batches
from lightmem_core.sensory.compressors.selection import Word

log = logging.getLogger(__name__)
_UNSEEN = object()  # a pair of neighbours no packed pass held


@dataclass(frozen=True)
class Encoded:
    """One text as the tokenizer sees it: token ids, character offsets and word ids."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int]


class LinguaScorer:
    """A BERT-style token classifier whose label 1 means "keep this token" (LLMLingua-2)."""

    def __init__(self, model_path: str, device: str = "auto", batch_size: int = 32, attention: bool = False,
                 max_text_tokens: int = 16384, max_batch_tokens: int | None = None) -> None:
        if not Path(model_path).exists():
            raise ModelLoadError(f"llmlingua-2 model path does not exist: {model_path}")
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.device = resolve_device(device)
        try:
            quiet_loading_bars()
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            model, info = AutoModelForTokenClassification.from_pretrained(
                model_path, local_files_only=True, output_loading_info=True,
                dtype=torch.float16 if self.device.startswith("cuda") else torch.float32,
                attn_implementation="eager" if attention else "sdpa",
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load a token classifier from {model_path}: {exc}") from exc
        _check(model_path, model, info, self.tokenizer)
        self.model: Any = to_device(model, self.device, model_path)
        self.batch_size = batch_size
        self.max_batch_tokens = batch_token_cap(max_batch_tokens, self.device)
        self.attention = attention
        self.max_text_tokens = max_text_tokens
        limit = min(int(getattr(model.config, "max_position_embeddings", 512)), int(self.tokenizer.model_max_length or 512))
        self.body = limit - 2  # room for [CLS] and [SEP]
        self.num_layers = int(model.config.num_hidden_layers)
        self._lock = threading.Lock()
        # (previous text, text) -> the attention text paid to previous in the last packed pass that held
        # both as neighbours of one group; None where a window ended between them (a fresh pass over the
        # same texts would not have it either).
        self._memo: OrderedDict[tuple[str, str], float | None] = OrderedDict()
        self.memo_size = 50_000

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Tokenize without special tokens and without truncation.

        A text longer than ``max_text_tokens`` comes back empty, so it is passed through unscored.
        """
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        out = []
        for i in range(len(texts)):
            words = enc.word_ids(i)
            if len(words) > self.max_text_tokens:
                log.warning("text %d has %d tokens (limit %d): passed through uncompressed", i, len(words), self.max_text_tokens)
                out.append(Encoded([], [], []))
                continue
            out.append(Encoded(list(enc["input_ids"][i]), [tuple(o) for o in enc["offset_mapping"][i]],
                               [w if w is not None else -1 for w in words]))
        return out

    def score(self, texts: list[str]) -> list[list[Word]]:
        """Words of each text with their mean keep probability; each text scored in its own context."""
        encoded = self.encode(texts)
        windows = [Window([(i, a, b)]) for i, e in enumerate(encoded) for a, b in chunk_spans(e.word_ids, self.body)]
        probs, _ = self._run(encoded, windows, layers=None)
        return [to_words(e, p) for e, p in zip(encoded, probs, strict=True)]

    def score_packed(self, texts: list[str], groups: list[str], layers: list[int]) -> tuple[list[list[Word]], list[float | None]]:
        """Like ``score``, with neighbouring texts of one group packed into shared windows.

        Also returns, for each text, the attention it pays to the text before it (LightMem's
        sentence-level attention), or ``None`` where the two did not share a window.
        """
        if not self.attention:
            raise ConfigError("score_packed reads attention: load the LinguaScorer with attention=True")
        encoded = self.encode(texts)
        windows = pack(encoded, groups, self.body)
        probs, neighbour = self._run(encoded, windows, layers=[la for la in layers if la < self.num_layers] or [-1])
        with self._lock:
            for i in range(1, len(texts)):
                if groups[i] == groups[i - 1]:
                    key = (_digest(texts[i - 1]), _digest(texts[i]))
                    self._memo[key] = neighbour[i]
                    self._memo.move_to_end(key)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return [to_words(e, p) for e, p in zip(encoded, probs, strict=True)], neighbour

    def recall(self, texts: list[str]) -> list[float | None] | None:
        """What ``score_packed`` over ``texts`` as one group would return as its attention series, from the
        passes already run: each text's attention to the one before it (``None`` for the first, and where a
        window ended between the two). ``None`` when some neighbours were never scored together."""
        series: list[float | None] = [None]
        with self._lock:
            for previous, text in zip(texts, texts[1:], strict=False):
                value = self._memo.get((_digest(previous), _digest(text)), _UNSEEN)
                if value is _UNSEEN:
                    return None
                series.append(value if isinstance(value, float) else None)
        return series

    def _run(self, encoded: list[Encoded], windows: list[Window], layers: list[int] | None) -> tuple[list[np.ndarray], list[float | None]]:
        import torch


        probs = [np.zeros(len(e.ids), dtype=np.float32) for e in encoded]
        neighbour: list[float | None] = [None] * len(encoded)
        tok = self.tokenizer
        for members in length_batches([w.length for w in windows], self.batch_size, self.max_batch_tokens):
            batch = [windows[k] for k in members]
            width = max(w.length for w in batch)
            ids = np.full((len(batch), width), tok.pad_token_id or 0, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, w in enumerate(batch):
                row = [tok.cls_token_id] + [t for i, a, b in w.pieces for t in encoded[i].ids[a:b]] + [tok.sep_token_id]
                ids[r, : len(row)] = row
                mask[r, : len(row)] = 1
            with self._lock, torch.inference_mode():
                out = self.model(input_ids=torch.from_numpy(ids).to(self.device),
                                 attention_mask=torch.from_numpy(mask).to(self.device),
                                 output_attentions=layers is not None)
                keep = torch.softmax(out.logits.float(), dim=-1)[..., 1].cpu().numpy()
                att = torch.stack([out.attentions[la] for la in layers]).float().mean(dim=(0, 2)).cpu().numpy() if layers else None
            for r, w in enumerate(batch):
                pos = 1
                for i, a, b in w.pieces:
                    probs[i][a:b] = keep[r, pos : pos + b - a]
                    pos += b - a
                if att is not None:
                    for i, value in neighbour_attention(w, att[r, : w.length, : w.length]).items():
                        neighbour[i] = value
        return probs, neighbour


def chunk_spans(word_ids: list[int], body: int) -> list[tuple[int, int]]:
    """Token spans of at most ``body`` tokens, cut between words unless one word is longer than that."""
    spans, start, n = [], 0, len(word_ids)
    while start < n:
        end = min(start + body, n)
        if end < n:
            cut = end
            while cut > start + 1 and word_ids[cut] == word_ids[cut - 1]:
                cut -= 1
            end = cut if cut > start + 1 else end
        spans.append((start, end))
        start = end
    return spans


def pack(encoded: list[Encoded], groups: list[str], body: int) -> list[Window]:
    """Consecutive texts of one group share a window while they fit; longer texts are chunked alone."""
    windows: list[Window] = []
    current: list[tuple[int, int, int]] = []
    used, group = 0, None
    for i, e in enumerate(encoded):
        n = len(e.ids)
        if current and (groups[i] != group or used + n > body):
            windows.append(Window(current))
            current, used = [], 0
        group = groups[i]
        if n > body:
            windows.extend(Window([(i, a, b)]) for a, b in chunk_spans(e.word_ids, body))
            continue
        current.append((i, 0, n))
        used += n
    if current:
        windows.append(Window(current))
    return windows


def to_words(e: Encoded, probs: np.ndarray) -> list[Word]:
    """Aggregate token probabilities per word (mean), with the word's character span.

    Consecutive tokens of one word id form a word; tokens without a word id stand alone. A word whose
    tokens cover no characters is dropped. Vectorised: this runs once per message on the CPU path.
    """
    n = len(e.ids)
    if n == 0:
        return []
    wid = np.asarray(e.word_ids, dtype=np.int64)
    off = np.asarray(e.offsets, dtype=np.int64).reshape(n, 2)
    opens = np.ones(n, dtype=bool)
    opens[1:] = (wid[1:] != wid[:-1]) | (wid[:-1] < 0)
    first = np.flatnonzero(opens)
    covers = off[:, 1] > off[:, 0]
    begin = np.minimum.reduceat(np.where(covers, off[:, 0], np.iinfo(np.int64).max), first)
    end = np.maximum.reduceat(np.where(covers, off[:, 1], -1), first)
    mean = np.add.reduceat(probs[:n].astype(np.float64), first) / np.diff(np.append(first, n))
    kept = np.logical_or.reduceat(covers, first)
    return [Word(int(a), int(b), float(m)) for a, b, m, k in zip(begin, end, mean, kept, strict=True) if k]


def to_device(model: Any, device: str, path: str) -> Any:
    """Move a model to ``device`` in eval mode; an unusable device fails at load with ``ModelLoadError``."""
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError, ValueError) as exc:  # e.g. cuda asked for on a CPU-only torch
        raise ModelLoadError(f"cannot put the model from {path} on device {device!r}: {exc}") from exc


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _check(path: str, model: Any, info: dict[str, Any], tokenizer: Any) -> None:
    missing = sorted(k for k in info.get("missing_keys", ()) if "classifier" in k or "score" in k)
    if missing:
        raise ModelLoadError(f"{path} has no token-classification head (missing {', '.join(missing)}): "
                             "expected an LLMLingua-2 model such as llmlingua-2-bert-base-multilingual-cased-meetingbank")
    if int(model.config.num_labels) != 2:
        raise ModelLoadError(f"{path}: the token classifier has {model.config.num_labels} labels, LLMLingua-2 needs 2 (drop, keep)")
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{path}: a fast tokenizer (tokenizer.json) is needed for word boundaries")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ModelLoadError(f"{path}: the tokenizer has no [CLS]/[SEP] tokens; expected a BERT-style tokenizer")
    vocab = int(model.config.vocab_size)
    if len(tokenizer) > vocab:
        raise ModelLoadError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab}: "
                             "tokenizer and model do not match")
