"""Stores: the Protocol; Qdrant Edge (the embedded folder) and the Qdrant server (through qdrant-client)."""

from lightmem_core.stores.base import MemoryStore
from lightmem_core.stores.edge import EdgeStore
from lightmem_core.stores.qdrant import QdrantStore

__all__ = ["EdgeStore", "MemoryStore", "QdrantStore"]
