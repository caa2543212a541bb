"""``multimodal_embedder`` ``huggingface``: a CLIP-style model through sentence-transformers.

sentence-transformers (6.x) loads a transformers CLIP folder (``CLIPModel`` weights plus its processor)
as one ``Transformer`` module with a text and an image modality: ``encode`` takes strings through the
text tower and PIL images through the image tower, into one space. Images are indexed through the
image tower; text queries search them through the text tower.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Any

from lightmem_core.devices import quiet_loading_bars, resolve_device
from lightmem_core.errors import ModelLoadError

log = logging.getLogger(__name__)


class CLIPEmbedder:
    """Images and texts into one normalised vector space; one forward pass at a time."""

    def __init__(self, model: str, device: str = "auto", batch_size: int = 16, embedding_dims: int | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        if not Path(model).exists():
            raise ModelLoadError(f"multimodal_embedder model path does not exist: {model}")
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        try:
            quiet_loading_bars()
            self._model = SentenceTransformer(model, device=self.device, local_files_only=True,
                                              model_kwargs=model_kwargs or None)
        except Exception as exc:  # translate whatever the loader raised, keep the cause
            raise ModelLoadError(f"cannot load a CLIP-style model from {model}: {exc}") from exc
        modalities = set(getattr(self._model, "modalities", ()) or ())
        if not {"text", "image"} <= modalities:
            raise ModelLoadError(f"model at {model} does not embed both text and images (it takes {sorted(modalities)})")
        dims = self._model.get_embedding_dimension()
        if dims is None:
            raise ModelLoadError(f"model at {model} does not report its embedding size")
        if embedding_dims is not None and embedding_dims != dims:
            raise ModelLoadError(f"multimodal_embedder.configs.embedding_dims={embedding_dims} but the model at {model} "
                                 f"gives {dims}")
        self._dims = int(dims)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads
        log.info("loaded multimodal embedder %s on %s (%d dims)", model, self.device, self._dims)

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts))

    def embed_images(self, images: list[bytes]) -> list[list[float]]:
        from PIL import Image

        return self._encode([Image.open(io.BytesIO(data)).convert("RGB") for data in images])

    def _encode(self, inputs: list[Any]) -> list[list[float]]:
        if not inputs:
            return []
        with self._lock:
            vectors = self._model.encode(inputs, batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]
