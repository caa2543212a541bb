"""Stores: the Protocol and the Qdrant backend (embedded folder, in-memory, or server)."""

from lightmem_core.stores.base import MemoryStore
from lightmem_core.stores.qdrant import QdrantStore

__all__ = ["MemoryStore", "QdrantStore"]
