"""Embedders: the Protocol, the sentence-transformers and OpenAI backends, and a hashing fake."""

from lightmem_core.embedders.base import Embedder
from lightmem_core.embedders.hashing import HashingEmbedder

__all__ = ["Embedder", "HashingEmbedder"]
