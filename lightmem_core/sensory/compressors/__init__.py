"""Compressors: LightMem's pre-compression stage (sensory memory)."""

from lightmem_core.sensory.compressors.base import CompressionResult, Compressor

__all__ = ["CompressionResult", "Compressor"]
