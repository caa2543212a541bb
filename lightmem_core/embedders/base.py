"""The embedder role: texts in, unit-length dense vectors out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into dense vectors of ``dims`` floats, batched."""

    @property
    def dims(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """A CLIP-style model: images and texts into one space of ``dims`` floats (``multimodal_embedder``)."""

    @property
    def dims(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Texts through the text tower: the query side of an image search."""
        ...

    def embed_images(self, images: list[bytes]) -> list[list[float]]:
        """Encoded images (PNG, JPEG...) through the image tower."""
        ...
