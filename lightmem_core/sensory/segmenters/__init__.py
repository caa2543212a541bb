"""Topic segmenters."""

from lightmem_core.sensory.segmenters.base import Segmenter

__all__ = ["Segmenter"]
